"""``compare``: what ``make train`` runs.

Every optimizer from the same starting point on the same objective under the same stopping rule,
the baselines beside them, one parent run with a child per method when a tracker is given. Before
any clock starts the kernels are compiled, the pass costs measured and the reference optimum
``f*`` computed (``fitting.prepare_race``); every method is then scored by its data passes and
seconds to targets of ``(f - f*)/|f*|``. A method that raises fails alone: its run is FAILED, its
row says why, the others run. With k-fold splits or several initialization seeds each repeat is a
child run holding its optimizer runs, and the parent gets the mean and spread. Nothing here
prints; ``progress`` receives each iterate and the CLI decides what to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import report
from pipeline.config import RunConfig
from pipeline.data import Ratings
from pipeline.experiment import records
from pipeline.experiment.fitting import (MethodFailed, Prepared, baselines, end_note, fit_or_fail, load_splits,
                                         prepare_race, prepare_split, run_params)
from pipeline.null_tracker import NullTracker
from pipeline.objectives import model_spec
from pipeline.optim import REGISTRY, OptimizeResult, not_applicable
from pipeline.optim.base import Listener
from pipeline.race import TO_TARGET


@dataclass
class Comparison:
    table: pd.DataFrame
    results: dict[str, OptimizeResult]
    metrics: dict[str, dict]
    prepared: Prepared
    parent_run_id: str | None = None
    child_run_ids: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    folds: list["Comparison"] = field(default_factory=list)
    model_uris: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)   # method -> one-line reason it failed
    inapplicable: dict[str, str] = field(default_factory=dict)  # method -> "not applicable: ..." (not run)
    compile_seconds: float = 0.0                              # kernel compilation, outside the race
    pass_costs: dict[str, float] = field(default_factory=dict)

    def best(self) -> str | None:
        """The method that ran with the lowest validation RMSE (the mean over repeats): model
        selection is by validation, never test. None when no method ran."""
        key = "val_rmse_mean" if self.folds else "val_rmse"
        ran = [n for n in self.results if n in self.metrics and key in self.metrics[n]]
        return min(ran, key=lambda n: self.metrics[n][key]) if ran else None


def _race_method(out: Comparison, name: str, cfg: RunConfig, tracker, parent_id, progress, params: dict) -> dict:
    """One optimizer of the race as a child run; its table row."""
    prepared = out.prepared
    f_star = prepared.reference.f_star if prepared.reference else None
    options = {f"{name}_{k}".replace("-", "_"): v for k, v in cfg.optimizer_options.get(name, {}).items()}
    try:
        with tracker.run(name, {**params, "optimizer": name, **options}, parent_id, {"kind": "optimizer"}) as rid:
            records.keep(out.child_run_ids, name, rid)
            res, m = fit_or_fail(prepared, name, cfg, records.listeners(progress, tracker.curve_listener(rid, f_star)),
                                 lambda why: tracker.set_tags(rid, {"stop_reason": "failed", "stop_message": why}))
            note = end_note(prepared, res)
            records.record_fit(tracker, rid, res, m, note)
            if cfg.log_models and tracker.records:
                records.keep(out.model_uris, name, records.record_model(tracker, rid, prepared, res,
                                                                        f"{cfg.model.model}-{name}"))
    except MethodFailed as exc:
        out.failures[name] = str(exc)
        return report.table_row(name, {}, "failed", message=str(exc))
    out.results[name], out.metrics[name] = res, m
    return report.table_row(name, m, res.reason, note, res.message)


def compare_split(prepared: Prepared, cfg: RunConfig, tracker, parent_id: str | None,
                  progress: Listener | None, params: dict) -> Comparison:
    """Baselines and every optimizer on one split, as children of ``parent_id``."""
    out = Comparison(pd.DataFrame(), {}, {}, prepared)
    rows: list[dict] = []
    for name, m in baselines(prepared, cfg).items():
        out.metrics[name] = m
        rows.append(report.table_row(name, m))
        records.keep(out.child_run_ids, name, records.record_baseline(tracker, name, params, parent_id, m))
    for name in cfg.optimizers:
        if (why := not_applicable(name, prepared.objective, cfg.model.model)):  # run, rank, plot nothing
            out.inapplicable[name] = why
            rows.append(report.table_row(name, {}, report.NOT_APPLICABLE, message=why))
            continue
        rows.append(_race_method(out, name, cfg, tracker, parent_id, progress, params))
    out.table = report.comparison_table(rows)
    return out


def _single(prepared: list[Prepared], cfg, tracker, parent_id, progress, title: str) -> Comparison:
    out = compare_split(prepared[0], cfg, tracker, parent_id, progress, run_params(cfg, prepared[0]))
    records.record_split(tracker, parent_id, out, title)
    tracker.log_metrics(parent_id, records.race_metrics(out))
    return out


def _repeats(prepared: list[Prepared], cfg, tracker, parent_id, progress, title: str) -> Comparison:
    """Each fold or seed a child run holding its methods; the mean and spread over them."""
    repeats = []
    for prep in prepared:
        params = {**run_params(cfg, prep), "fold": prep.split.fold}
        with tracker.run(prep.label, params, parent_id, {"kind": "repeat"}) as rep_id:
            rep = compare_split(prep, cfg, tracker, rep_id, progress, params)
            records.record_split(tracker, rep_id, rep, f"{title}, {prep.label}")
            tracker.log_metrics(rep_id, records.race_metrics(rep))
            rep.parent_run_id = rep_id
        repeats.append(rep)
    out = Comparison(fold_table(repeats), repeats[0].results, aggregate_metrics(repeats), prepared[0],
                     folds=repeats, failures={k: v for r in repeats for k, v in r.failures.items()},
                     inapplicable={k: v for r in repeats for k, v in r.inapplicable.items()})
    records.record_split(tracker, parent_id, out, f"{title}, {len(repeats)} repeats", repeats=repeats)
    return out


def compare(cfg: RunConfig, tracker=NullTracker(), progress: Listener | None = None,
            ratings: Ratings | None = None, on_start: Callable[[Prepared], None] | None = None,
            download_progress=None, engine=None, note: Callable[[str], None] | None = None) -> Comparison:
    """Run ``cfg.optimizers`` (and the baselines) and log them as one parent run with children.

    Several folds (k-fold) or several initialization seeds (``cfg.seeds``) make *repeats*: each
    repeat is a child run holding its optimizer runs; the parent gets the mean and spread.
    ``engine`` says where the sums run (default: this machine, ``cfg.kernel``).
    """
    unknown = [n for n in cfg.optimizers if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    ratings, splits = load_splits(cfg.data, ratings, download_progress)
    seeds = cfg.seeds or (cfg.seed,)
    prepared = [prepare_split(s, ratings, cfg, seed, engine) for s in splits for seed in seeds]
    if on_start:
        on_start(prepared[0])
    compile_seconds, costs = prepare_race(prepared, cfg, note)
    spec = model_spec(cfg.model.model)
    title = f"{ratings.name}: {cfg.model.model}, {spec.describe(cfg.model.hyper)}, gtol {cfg.rule.gtol:g}"
    repeated = len(prepared) > 1
    tracker.use_experiment(ratings.name)
    parent_params = {**run_params(cfg, prepared[0]), "optimizers": ",".join(cfg.optimizers),
                     "folds": len(splits) if len(splits) > 1 else None,
                     "seeds": ",".join(map(str, seeds)) if len(seeds) > 1 else None}
    with tracker.run(f"compare-{'-'.join(cfg.optimizers)}", parent_params, tags={"kind": "comparison"}) as parent_id:
        train = prepared[0].split.train
        tracker.log_dataset(parent_id, train.to_frame(), ratings.name, ratings.source, "training")
        out = (_repeats if repeated else _single)(prepared, cfg, tracker, parent_id, progress, title)
        out.parent_run_id, out.compile_seconds, out.pass_costs = parent_id, compile_seconds, costs
        records.record_comparison(tracker, parent_id, out, repeated)
        records.record_report(tracker, parent_id)
    first = (out.folds or [out])[0]
    out.links = tracker.links([rid for f in (out.folds or [out]) for rid in f.child_run_ids.values()],
                              race_ids=[first.child_run_ids[name] for name in first.results if name in first.child_run_ids])
    return out


def aggregate_metrics(folds: list[Comparison]) -> dict:
    """Mean and standard deviation over repeats (folds, seeds) of every metric, per method."""
    out: dict = {"_flat": {}}
    names = list(dict.fromkeys(n for f in folds for n in f.metrics))
    for name in names:
        per = pd.DataFrame([f.metrics[name] for f in folds if name in f.metrics])
        out[name] = {}
        for col in per.columns:
            # a target missed in any repeat has no mean: "not reached" must not average away
            out[name][f"{col}_mean"] = float(per[col].mean(skipna=not col.startswith(TO_TARGET)))
            out[name][f"{col}_std"] = float(per[col].std(ddof=1))
        for col in ("val_rmse", "test_rmse", "test_mae", "fit_seconds"):
            if col in per:
                out["_flat"][f"{name}_{col}_mean"] = float(per[col].mean())
                out["_flat"][f"{name}_{col}_std"] = float(per[col].std(ddof=1))
    return out


def fold_table(folds: list[Comparison]) -> pd.DataFrame:
    """Mean over repeats of each numeric column; ``test_rmse_std`` the spread; reasons joined."""
    tables = pd.concat([f.table.assign(repeat=j) for j, f in enumerate(folds)])
    text = ("optimizer", "reason", "repeat", "note", "message")
    numeric = [c for c in tables.columns if c not in text]
    grouped = tables.groupby("optimizer", sort=False)
    mean = grouped[numeric].mean(numeric_only=True)
    for col in numeric:  # a target missed in any repeat has no mean
        if col.startswith(TO_TARGET):
            mean[col] = grouped[col].agg(lambda v: v.mean() if v.notna().all() else np.nan)
    mean["test_rmse_std"] = grouped["test_rmse"].std(ddof=1)
    for col in ("reason", "note"):
        if col in tables:
            mean[col] = grouped[col].agg(lambda r: ",".join(sorted(set(v for v in r if isinstance(v, str) and v))))
    return report.comparison_table(mean.reset_index().to_dict("records"))
