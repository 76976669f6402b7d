"""Wiring: data -> split -> objective -> optimizers -> evaluation -> tracking -> report.

``compare`` is what ``make train`` runs: every optimizer from the same starting point on the
same objective under the same stopping rule, the baselines beside them, one parent run with a
child per method when a tracker is given. Before any clock starts it compiles the kernels
(``warm_up``), measures what each kind of pass costs and computes the reference optimum ``f*``
(``pipeline.race``); every method is then scored by its data passes and seconds to targets of
``(f - f*)/|f*|``. A method that raises fails alone: its run is FAILED, its row says why, the
others run. With k-fold splits or several initialization seeds
each repeat is a child run holding its optimizer runs, and the parent gets the mean and spread. Nothing here
prints; ``progress`` receives each iterate and the CLI decides what to show.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import evaluate, race, report, reproducible, schema
from pipeline.config import DataConfig, RunConfig
from pipeline.data import (DataError, Ratings, Split, cache_folder, filter_min_counts, load_dataset, load_predefined,
                           make_splits, random_split)
from pipeline.objectives import LocalEngine, build_objective, model_spec, offers
from pipeline.objectives.check import check_derivatives
from pipeline.optim import REGISTRY, OptimizeResult, minimize, not_applicable
from pipeline.objectives.base import Objective
from pipeline.optim.base import Listener
from pipeline.null_tracker import NullTracker
from pipeline.recommender import Recommender
from pipeline.search import GridSearch, Pruned


@dataclass
class Prepared:
    ratings: Ratings
    split: Split
    objective: Objective
    x0: np.ndarray
    seed: int = 0
    reference: race.Reference | None = None  # f* of this problem from x0 (set before the race)
    engine: object = None                     # where the objective's sums run (pipeline.objectives.engine)

    @property
    def label(self) -> str:
        """``fold-J``, ``seed-S`` or both, for a repeat of a comparison."""
        parts = ([f"fold-{self.split.fold}"] if self.split.fold is not None else []) + [f"seed-{self.seed}"]
        return "-".join(parts)


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


# -- data ---------------------------------------------------------------------------------------
def load_splits(d: DataConfig, ratings: Ratings | None = None, progress=None) -> tuple[Ratings, list[Split]]:
    """The dataset and its split(s) as ``d`` describes (a predefined split wins over ``method``)."""
    options = d.read
    if d.validation_file and not d.train_file:
        raise DataError("--validation is part of a predefined split: give it with --train and --test")
    if d.train_file or d.test_file:
        if not (d.train_file and d.test_file):
            raise DataError("a predefined split needs both --train and --test")
        split = load_predefined(d.train_file, d.test_file, d.validation_file, options,
                                cache_folder(d.data_dir) if d.cache else None)
        return split.train, [split]
    if ratings is None:
        ratings = load_dataset(d.dataset, options, d.data_dir, progress, cache=d.cache)
    ratings = filter_min_counts(ratings, d.min_user_ratings, d.min_item_ratings)
    splits = make_splits(ratings, d.method, d.fractions, d.seed, last_k=d.last_k, cutoff=d.cutoff, folds=d.folds)
    return ratings, splits


def prepare_split(split: Split, ratings: Ratings, cfg: RunConfig, seed: int | None = None,
                  engine=None) -> Prepared:
    """The objective on ``split``'s training part, its sums where ``engine`` says (default: this
    machine with ``cfg.kernel``), and its seeded starting point."""
    engine = engine or LocalEngine(cfg.kernel)
    objective = build_objective(split.train, cfg.model, engine)
    seed = cfg.seed if seed is None else seed
    x0 = objective.init(np.random.default_rng(seed))
    return Prepared(ratings, split, objective, x0, seed, engine=engine)


def prepare(cfg: RunConfig, ratings: Ratings | None = None) -> Prepared:
    """The first (or only) split, its objective and starting point, all seeded."""
    ratings, splits = load_splits(cfg.data, ratings)
    return prepare_split(splits[0], ratings, cfg)


def run_params(cfg: RunConfig, prepared: Prepared) -> dict:
    """The params every run of a comparison logs (write-once in MLflow)."""
    d = cfg.data
    split = prepared.split
    return {
        "dataset": prepared.ratings.name, "dataset_source": prepared.ratings.source,
        "split": split.method, "split_fractions": ",".join(f"{f:g}" for f in d.fractions),
        "split_seed": d.seed, "seed": prepared.seed, **cfg.model.params(),
        "gtol": cfg.rule.gtol, "max_iter": cfg.rule.max_iter, "max_seconds": cfg.rule.max_seconds,
        "max_passes": cfg.rule.max_passes, "patience": cfg.rule.patience,
        "n_params": prepared.objective.n_params, "n_train": len(split.train),
        "n_val": len(split.validation), "n_test": len(split.test),
        "min_user_ratings": d.min_user_ratings, "min_item_ratings": d.min_item_ratings,
        **prepared.engine.params(), "blas_kernels": reproducible.blas_kernels(),
    }


# -- fitting -------------------------------------------------------------------------------------
def fit(prepared: Prepared, name: str, cfg: RunConfig, listeners: tuple[Listener, ...] = ()) -> tuple[OptimizeResult, dict]:
    """One optimizer from ``prepared.x0``; returns the result and its final metrics."""
    obj, split = prepared.objective, prepared.split
    val = split.validation

    def validate(x: np.ndarray) -> float:
        return evaluate.score(lambda u, i: obj.predict(x, u, i), val, "val", obj)["val_rmse"]

    options = {"step": cfg.gd_step} if name == "gd" and cfg.gd_step is not None else {}
    if offers(obj, "tune_threads"):  # outside the clock: threads where they pay, now
        obj.tune_threads()
    result = minimize(name, obj, prepared.x0, cfg.rule, validate=validate if len(val) else None,
                      listeners=listeners, **options)
    metrics = evaluate.score_split(lambda u, i: obj.predict(result.x, u, i), split, obj)
    if len(split.test):
        rec = Recommender.from_fit(obj, result.x, prepared.ratings, split.train)
        metrics.update(evaluate.ranking_metrics(rec.scores, split.train, split.test))
    metrics.update(schema.final_metrics(result))
    if getattr(obj, "kernel_threads", None):
        metrics["kernel_threads"] = obj.kernel_threads
    if prepared.reference is not None:
        f_star = prepared.reference.f_star
        metrics[schema.GAP] = schema.relative_gap(result.final.loss, f_star)
        metrics.update(race.time_to_target(result, f_star))
    return result, metrics


def warm_up(objective) -> float:
    """Compile (or load) the objective's kernels before any clock starts; the seconds it took."""
    t0 = time.perf_counter()
    if offers(objective, "warm_up"):
        objective.warm_up()
    return time.perf_counter() - t0


def reference_for(prepared: Prepared, cfg: RunConfig, reference_passes: int = race.REFERENCE_PASSES) -> race.Reference:
    """``f*`` of ``prepared``'s problem, cached under the data folder's cache (unless ``--no-cache``)."""
    tr = prepared.split.train
    key = race.problem_key(tr.users, tr.items, tr.ratings, cfg.model.params(), prepared.x0,
                           prepared.engine.params(), reference_passes)
    cache_file = cache_folder(cfg.data.data_dir) / "reference" / f"{key}.json" if cfg.data.cache else None
    return race.reference_optimum(prepared.objective, prepared.x0, cache_file, reference_passes)


def prepare_race(prepared: list[Prepared], cfg: RunConfig, note: Callable[[str], None] | None = None
                 ) -> tuple[float, dict[str, float]]:
    """Everything outside the clock, once: compile the kernels, measure the pass costs, compute each
    problem's ``f*``. Returns ``(compile_seconds, pass_costs)``; sets ``prepared[j].reference``."""
    note = note or (lambda _msg: None)
    compile_seconds = warm_up(prepared[0].objective)
    threads = getattr(prepared[0].objective, "kernel_threads", None)
    note(f"kernels compiled or loaded in {compile_seconds:.1f} s (once, outside the race)"
         + (f"; {threads} kernel thread{'s' * (threads > 1)}, the faster here (measured)" if threads else ""))
    for prep in prepared:
        t0 = time.perf_counter()
        prep.reference = reference_for(prep, cfg)
        note(f"reference optimum{' (' + prep.label + ')' if len(prepared) > 1 else ''}: "
             f"{prep.reference.note()} in {time.perf_counter() - t0:.1f} s")
    costs = race.pass_costs(prepared[0].objective, prepared[0].x0)
    note(f"one operation costs, in loss+gradients ({1e3 * costs['seconds_loss_grad']:.2f} ms each; median "
         f"[quartiles]): {race.describe_costs(costs)}"
         + ("; a loss alone measured implausibly dear: not reported" if costs.get("implausible_loss") else ""))
    return compile_seconds, costs


def baselines(prepared: Prepared, cfg: RunConfig) -> dict[str, dict]:
    """The model's own baselines (its spec names them), scored like the model."""
    split = prepared.split
    preds = model_spec(cfg.model.model).baselines(split.train, cfg.model.hyper)
    return {name: evaluate.score_split(p, split, prepared.objective) for name, p in preds.items()}


def _end_note(prepared: Prepared, result: OptimizeResult) -> str:
    return race.end_note(result, prepared.reference.f_star if prepared.reference else None)




class MethodFailed(Exception):
    """An optimizer raised: the message is one line naming the error."""


def _fit_or_fail(prepared: Prepared, name: str, cfg: RunConfig, listeners, on_failure=None):
    """``fit``, with any error of the method turned into :class:`MethodFailed` (one line); Ctrl-C
    and other interrupts pass through."""
    try:
        return fit(prepared, name, cfg, listeners)
    except Exception as exc:  # noqa: BLE001 - a method's failure must not stop the comparison
        first = (str(exc).strip().splitlines() or [""])[0]
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if on_failure:
            on_failure(why)
        raise MethodFailed(why) from exc


def _compare_split(prepared: Prepared, cfg: RunConfig, tracker, parent_id: str | None,
                   progress: Listener | None, params: dict) -> Comparison:
    """Baselines and every optimizer on one split, as children of ``parent_id``."""
    out = Comparison(pd.DataFrame(), {}, {}, prepared)
    rows: list[dict] = []
    for name, m in baselines(prepared, cfg).items():
        out.metrics[name] = m
        rows.append(report.table_row(name, m))
        with tracker.run(name, {**params, "optimizer": name}, parent_id, {"kind": "baseline"}) as rid:
            tracker.log_metrics(rid, m)
            _keep(out.child_run_ids, name, rid)
    f_star = prepared.reference.f_star if prepared.reference else None
    for name in cfg.optimizers:
        if (why := not_applicable(name, prepared.objective, cfg.model.model)):  # run, rank, plot nothing
            out.inapplicable[name] = why
            rows.append(report.table_row(name, {}, report.NOT_APPLICABLE, message=why))
            continue
        run_params_ = {**params, "optimizer": name, "gd_step": cfg.gd_step if name == "gd" else None}
        try:
            with tracker.run(name, run_params_, parent_id, {"kind": "optimizer"}) as rid:
                _keep(out.child_run_ids, name, rid)
                listeners = tuple(l for l in (progress, tracker.curve_listener(rid, f_star)) if l)
                res, m = _fit_or_fail(prepared, name, cfg, listeners,
                                      lambda why: tracker.set_tags(rid, {"stop_reason": "failed", "stop_message": why}))
                tracker.log_metrics(rid, {k: v for k, v in m.items() if k not in schema.CURVE_ONLY}, step=res.final.iteration)
                note = _end_note(prepared, res)
                tracker.set_tags(rid, {"stop_reason": res.reason, "stop_message": res.message,
                                       **({"end_note": note} if note else {})})
                if cfg.log_models and tracker.records:
                    _keep(out.model_uris, name, tracker.log_model(
                        rid, Recommender.from_fit(prepared.objective, res.x, prepared.ratings, prepared.split.train),
                        f"{cfg.model.model}-{name}", step=res.final.iteration))
        except MethodFailed as exc:
            out.failures[name] = str(exc)
            rows.append(report.table_row(name, {}, "failed", message=str(exc)))
            continue
        out.results[name], out.metrics[name] = res, m
        rows.append(report.table_row(name, m, res.reason, note, res.message))
    out.table = report.comparison_table(rows)
    return out


def _keep(found: dict, name: str, value) -> None:
    """Record a run id or model URI (none when nothing is tracked)."""
    if value is not None:
        found[name] = value


def _log_split_artifacts(tracker, run_id: str, out: Comparison, cfg: RunConfig, title: str,
                         repeats: list[Comparison] | None = None) -> None:
    if not tracker.records:  # figures and tables made only to be logged
        return
    parts = repeats or [out]
    f_stars = [r.prepared.reference.f_star if r.prepared.reference else None for r in parts]
    with tempfile.TemporaryDirectory() as tmp:
        for path in report.figures([r.results for r in parts], Path(tmp), title, f_stars):
            tracker.log_artifact(run_id, path)
        out.table.to_csv(Path(tmp) / "comparison.csv", index=False)
        (Path(tmp) / "comparison.md").write_text(report.markdown_table(out.table))
        tracker.log_artifact(run_id, Path(tmp) / "comparison.csv")
        tracker.log_artifact(run_id, Path(tmp) / "comparison.md")


def compare(cfg: RunConfig, tracker=NullTracker(), progress: Listener | None = None,
            ratings: Ratings | None = None, on_start: Callable[[Prepared], None] | None = None,
            download_progress=None, engine=None, note: Callable[[str], None] | None = None) -> Comparison:
    """Run ``cfg.optimizers`` (and the baselines) and log them as one parent run with children.

    Several folds (k-fold) or several initialization seeds (``cfg.seeds``) make *repeats*: each
    repeat is a child run holding its optimizer runs; the parent gets the mean and spread.
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
    title = f"{ratings.name}: {cfg.model.model}, {model_spec(cfg.model.model).describe(cfg.model.hyper)}, gtol {cfg.rule.gtol:g}"
    repeated = len(prepared) > 1

    def race_metrics(prep: Prepared, out: Comparison) -> dict:
        flat = {"f_star": prep.reference.f_star, "f_star_rel_grad_norm": prep.reference.rel_grad_norm}
        for name, m in out.metrics.items():
            if name in out.results:
                flat.update({f"{name}_{k}": v for k, v in m.items()
                             if k.startswith(_TO_TARGET) or k == schema.GAP})
        return flat

    def run_all(parent_id: str | None) -> Comparison:
        if not repeated:
            out = _compare_split(prepared[0], cfg, tracker, parent_id, progress, run_params(cfg, prepared[0]))
            _log_split_artifacts(tracker, parent_id, out, cfg, title)
            tracker.log_metrics(parent_id, race_metrics(prepared[0], out))
            return out
        repeats = []
        for prep in prepared:
            params = {**run_params(cfg, prep), "fold": prep.split.fold}
            with tracker.run(prep.label, params, parent_id, {"kind": "repeat"}) as rep_id:
                rep = _compare_split(prep, cfg, tracker, rep_id, progress, params)
                _log_split_artifacts(tracker, rep_id, rep, cfg, f"{title}, {prep.label}")
                tracker.log_metrics(rep_id, race_metrics(prep, rep))
                rep.parent_run_id = rep_id
            repeats.append(rep)
        out = Comparison(fold_table(repeats), repeats[0].results, aggregate_metrics(repeats), prepared[0],
                         folds=repeats, failures={k: v for r in repeats for k, v in r.failures.items()},
                         inapplicable={k: v for r in repeats for k, v in r.inapplicable.items()})
        _log_split_artifacts(tracker, parent_id, out, cfg, f"{title}, {len(repeats)} repeats", repeats=repeats)
        return out

    def finish(out: Comparison) -> Comparison:
        out.compile_seconds, out.pass_costs = compile_seconds, costs
        return out

    tracker.use_experiment(ratings.name)
    parent_params = {**run_params(cfg, prepared[0]), "optimizers": ",".join(cfg.optimizers),
                     "folds": len(splits) if len(splits) > 1 else None,
                     "seeds": ",".join(map(str, seeds)) if len(seeds) > 1 else None}
    with tracker.run(f"compare-{'-'.join(cfg.optimizers)}", parent_params, tags={"kind": "comparison"}) as parent_id:
        tracker.log_dataset(parent_id, _ratings_frame(prepared[0].split.train), ratings.name, ratings.source, "training")
        out = finish(run_all(parent_id))
        out.parent_run_id = parent_id
        tracker.log_metrics(parent_id, {"compile_seconds": compile_seconds, **costs})
        ran = [n for n in cfg.optimizers if n in out.metrics]
        if repeated:
            tracker.log_metrics(parent_id, out.metrics["_flat"])
            if ran:
                best = min(ran, key=lambda n: out.metrics[n]["val_rmse_mean"])
                tracker.set_tags(parent_id, {"best_optimizer": best})
        else:
            if ran:
                best = min(ran, key=lambda n: out.metrics[n]["val_rmse"])
                tracker.log_metrics(parent_id, {"best_val_rmse": out.metrics[best]["val_rmse"],
                                                "best_test_rmse": out.metrics[best]["test_rmse"]})
                tracker.set_tags(parent_id, {"best_optimizer": best})
            tracker.set_tags(parent_id, {**split_tags(prepared[0].split),
                                         "reference_optimum": prepared[0].reference.note()})
    child_ids = [rid for f in (out.folds or [out]) for rid in f.child_run_ids.values()]
    out.links = tracker.links(child_ids)
    return out


_TO_TARGET = ("passes_to_", "seconds_to_")


def aggregate_metrics(folds: list[Comparison]) -> dict:
    """Mean and standard deviation over repeats (folds, seeds) of every metric, per method."""
    out: dict = {"_flat": {}}
    names = list(dict.fromkeys(n for f in folds for n in f.metrics))
    for name in names:
        per = pd.DataFrame([f.metrics[name] for f in folds if name in f.metrics])
        out[name] = {}
        for col in per.columns:
            # a target missed in any repeat has no mean: "not reached" must not average away
            out[name][f"{col}_mean"] = float(per[col].mean(skipna=not col.startswith(_TO_TARGET)))
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
        if col.startswith(_TO_TARGET):
            mean[col] = grouped[col].agg(lambda v: v.mean() if v.notna().all() else np.nan)
    mean["test_rmse_std"] = grouped["test_rmse"].std(ddof=1)
    for col in ("reason", "note"):
        if col in tables:
            mean[col] = grouped[col].agg(lambda r: ",".join(sorted(set(v for v in r if isinstance(v, str) and v))))
    return report.comparison_table(mean.reset_index().to_dict("records"))


def split_tags(split: Split) -> dict:
    return {k: str(v) for k, v in split.cold_counts().items()}


def _ratings_frame(r: Ratings) -> pd.DataFrame:
    frame = pd.DataFrame({"user": r.user_ids[r.users], "item": r.item_ids[r.items], "rating": r.ratings})
    if r.timestamps is not None:
        frame["timestamp"] = r.timestamps
    return frame


def check_grad(cfg: RunConfig, n_directions: int = 3, ratings: Ratings | None = None) -> dict[str, float]:
    """Relative errors of the gradient and the Hessian-vector product against central finite
    differences, at the starting point and at a random point."""
    prepared = prepare(cfg, ratings)
    rng = np.random.default_rng(cfg.seed + 1)
    obj = prepared.objective
    x1 = prepared.x0 + rng.normal(0.0, 0.1, size=obj.n_params)  # away from the small-factor start
    out = {}
    for label, x in (("init", prepared.x0), ("random", x1)):
        for k, v in check_derivatives(obj, x, rng, n_directions).items():
            out[f"{label}_{k}"] = v
    return out


def describe(cfg: RunConfig, progress=None) -> dict:
    """Shape, density, rating histogram, count quantiles, and what each split part would hold."""
    ratings, splits = load_splits(cfg.data, progress=progress)
    d = ratings.describe()
    values, counts = np.unique(ratings.ratings, return_counts=True)
    d["histogram"] = {f"{v:g}": int(c) for v, c in zip(values, counts)}
    q = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    per_user = np.bincount(ratings.users, minlength=ratings.n_users)
    per_item = np.bincount(ratings.items, minlength=ratings.n_items)
    d["per_user_quantiles"] = dict(zip(map(str, q), np.quantile(per_user, q).tolist()))
    d["per_item_quantiles"] = dict(zip(map(str, q), np.quantile(per_item, q).tolist()))
    d["has_timestamps"] = ratings.timestamps is not None
    d["splits"] = [{"method": s.method, "fold": s.fold, "train": len(s.train), "validation": len(s.validation),
                    "test": len(s.test), **s.cold_counts()} for s in splits]
    return d


# -- the study: a suite of problems, performance profiles -----------------------------------------
@dataclass
class Study:
    runs: pd.DataFrame                 # one row per (problem, method): its costs to each target
    profiles: dict[str, pd.DataFrame]  # "passes-1e-6" -> rho_s(tau), one column per method
    headline: list[str]
    parent_run_id: str | None = None
    links: dict[str, str] = field(default_factory=dict)


PROFILE_TAUS = np.logspace(0, 3, 121)  # 1 to 1000 times the best method's cost


def study(cfg: RunConfig, datasets: list[str], ranks: list[int], regs: list[float], seeds: list[int],
          tracker=NullTracker(), progress: Listener | None = None, note: Callable[[str], None] | None = None,
          reference_passes: int = race.REFERENCE_PASSES) -> Study:
    """``cfg.optimizers`` on every problem of the suite ``datasets x ranks x regs x seeds`` (one
    split per dataset, seeded by ``cfg.data.seed``), each against its own ``f*``; then Dolan-More
    performance profiles (``pipeline.race``) in data passes and in seconds for every target. With a
    tracker: a parent run (profiles and the per-problem CSV at its artifact root), a child per
    problem holding a run per method."""
    note = note or (lambda _msg: None)
    rows: list[dict] = []
    suite = [(d, k, lam, s) for d in datasets for k in ranks for lam in regs for s in seeds]
    cfg = replace(cfg, log_models=False)

    def run_suite(parent_id):
        loaded: dict[str, tuple] = {}
        for j, (dataset, rank, reg, seed) in enumerate(suite):
            pcfg = replace(cfg, data=replace(cfg.data, dataset=dataset), seed=seed,
                           model=cfg.model.with_values(rank=rank, reg=reg))
            if dataset not in loaded:
                ratings, splits = load_splits(pcfg.data)
                loaded[dataset] = (ratings, splits[0])
            ratings, split = loaded[dataset]
            prep = prepare_split(split, ratings, pcfg, seed)
            if j == 0:
                warm_up(prep.objective)  # the kernels' types do not depend on the rank: once serves all
            t0 = time.perf_counter()
            prep.reference = reference_for(prep, pcfg, reference_passes)
            label = f"{ratings.name}-k{rank}-reg{reg:g}-seed{seed}"
            note(f"problem {j + 1}/{len(suite)} {label}: {prep.reference.note()} ({time.perf_counter() - t0:.1f} s)")
            params = {**run_params(pcfg, prep), "problem": label}
            # Methods are not logged one run each here (hundreds of runs): a run per problem holds
            # every method's costs to target; the per-problem CSV holds everything.
            out = _compare_split(prep, pcfg, NullTracker(), None, progress, params)
            problem_rows = [r for r in out.table.to_dict("records") if r["reason"] != "baseline"]
            with tracker.run(label, params, parent_id, {"kind": "problem"}) as pid:
                tracker.log_metrics(pid, {"f_star": prep.reference.f_star,
                                          "f_star_rel_grad_norm": prep.reference.rel_grad_norm,
                                          **{f"{r['optimizer']}_{k}": r[k] for r in problem_rows for k in r
                                             if k.startswith(_TO_TARGET) or k in (schema.GAP, "data_passes")}})
                tracker.set_tags(pid, {f"{r['optimizer']}_stop": r["reason"] for r in problem_rows})
            for row in problem_rows:
                rows.append({"problem": label, "dataset": ratings.name, "rank": rank, "reg": reg, "seed": seed,
                             "f_star": prep.reference.f_star, "f_star_rel_grad_norm": prep.reference.rel_grad_norm,
                             **row})
        runs = pd.DataFrame(rows)
        profiles = {}
        for unit in ("passes", "seconds"):
            for key in schema.TARGET_KEYS:
                costs = runs.pivot(index="problem", columns="optimizer", values=f"{unit}_to_{key}")
                applied = [m for m in cfg.optimizers
                           if (runs.loc[runs["optimizer"] == m, "reason"] != report.NOT_APPLICABLE).any()]
                profiles[f"{unit}-{key}"] = race.profile(costs[applied], PROFILE_TAUS)
        return Study(runs, profiles, profile_headline(profiles, len(suite)))

    tracker.use_experiment("study")
    params = {"optimizers": ",".join(cfg.optimizers), "datasets": ",".join(datasets),
              "ranks": ",".join(map(str, ranks)), "regs": ",".join(map(str, regs)), "seeds": ",".join(map(str, seeds)),
              "gtol": cfg.rule.gtol, "max_passes": cfg.rule.max_passes, "max_seconds": cfg.rule.max_seconds,
              **cfg.model.params(), "problems": len(suite), "reference_passes": reference_passes}
    with tracker.run("study", params, tags={"kind": "study"}) as parent_id:
        out = run_suite(parent_id)
        with tempfile.TemporaryDirectory() as tmp:
            for path in (report.profile_figures(out.profiles, Path(tmp), len(suite)) if tracker.records else []):
                tracker.log_artifact(parent_id, path)
            out.runs.to_csv(Path(tmp) / "study.csv", index=False)
            tracker.log_artifact(parent_id, Path(tmp) / "study.csv")
            (Path(tmp) / "headline.md").write_text("\n".join(f"- {line}" for line in out.headline) + "\n")
            tracker.log_artifact(parent_id, Path(tmp) / "headline.md")
        flat = {}
        for name, prof in out.profiles.items():
            for method in prof.columns:
                flat[f"{method}_rho1_{name}"] = float(prof[method].iloc[0])
                flat[f"{method}_solved_{name}"] = float(prof[method].iloc[-1])
        tracker.log_metrics(parent_id, flat)
    out.parent_run_id = parent_id
    out.links = tracker.links([])
    return out


def profile_headline(profiles: dict[str, pd.DataFrame], n_problems: int) -> list[str]:
    """For each unit and target: which methods are fastest most often (rho at tau = 1) and which
    get there most often at all (rho at the largest tau), read off the profiles."""
    lines = []
    for name, prof in profiles.items():
        unit, key = name.split("-", 1)
        what = "within 1e-4 of its own best validation RMSE" if key == "val" else f"(f - f*)/|f*| <= {key}"
        first, last = prof.iloc[0], prof.iloc[-1]
        if last.max() == 0:
            lines.append(f"{what}, in {unit}: no method reached it on any of the {n_problems} problems.")
            continue
        top = first[first == first.max()].index.tolist()
        most = last[last == last.max()].index.tolist()
        lines.append(f"{what}, in {unit}: fastest on the most problems: {', '.join(top)} "
                     f"({first.max():.0%} of {n_problems}); reached it on the most problems: {', '.join(most)} "
                     f"({last.max():.0%}, within {PROFILE_TAUS[-1]:.0f}x the best cost).")
    return lines


# -- tuning --------------------------------------------------------------------------------------


@dataclass
class Sweep:
    trials: pd.DataFrame          # one row per trial: its hyperparameters, val_rmse, fit seconds, reason
    best: dict                    # the winning hyperparameters
    test_metrics: dict            # the refit winner on train + validation, scored once on test
    edges: list[str] = field(default_factory=list)  # winners on the edge of their grid, in words
    parent_run_id: str | None = None
    links: dict[str, str] = field(default_factory=dict)
    split: Split | None = None    # what the trials were fitted (train) and selected (validation) on; test
    refit: tuple[Split, RunConfig] | None = None  # the winner's refit: train + validation, and its config and rule


def _with_model(cfg: RunConfig, params: dict) -> RunConfig:
    return replace(cfg, model=cfg.model.with_values(**params))


def sweep(cfg: RunConfig, search, optimizer: str, tracker=NullTracker(), progress: Listener | None = None,
          ratings: Ratings | None = None, on_trial: Callable[[int, int, dict, float | None], None] | None = None,
          val_fraction: float = 0.1) -> Sweep:
    """Tune the hyperparameters ``search`` proposes (``pipeline.search``: a grid, or Optuna's TPE
    over ranges with pruning) by validation RMSE only, then refit the winner on train + validation
    and score it once on test.

    Trials never see the test set: they are fitted and scored on a split whose test part is
    empty, so nothing about test can leak into the selection (tested). A split without a
    validation part (``--train/--test`` files) holds out ``val_fraction`` of its training part,
    seeded by the split seed. A trial the search prunes ends with reason "pruned"; a winner at
    the edge of what was searched is reported in ``Sweep.edges``.
    """
    if optimizer not in REGISTRY:
        raise KeyError(f"unknown optimizer {optimizer!r}; choose from {', '.join(REGISTRY)}")
    ratings, splits = load_splits(cfg.data, ratings)
    split = _with_validation(splits[0], val_fraction, cfg.data.seed)
    blind = Split(split.train, split.validation, split.test.subset(np.array([], dtype=np.int64)), split.seed,
                  split.method, split.fold)
    if isinstance(search, GridSearch):  # every grid point a valid model before any fit (one line, not a failed trial)
        for params in search.points:
            _with_model(cfg, params)
    rows = list(search.previous())  # trials an interrupted run of the same study finished
    out = Sweep(pd.DataFrame(), {}, {}, split=split)

    def run_trials(parent_id):
        j = 0
        while (params := search.propose(j)) is not None:
            tcfg = _with_model(cfg, params)
            prep = prepare_split(blind, ratings, tcfg)
            if j == 0:
                warm_up(prep.objective)  # the first trial's clock must not pay for compilation
            with tracker.run(f"trial-{j}", {**run_params(tcfg, prep), "optimizer": optimizer}, parent_id,
                             {"kind": "trial"}) as rid:
                watch = search.listener(j)
                listeners = tuple(l for l in (progress, tracker.curve_listener(rid), watch) if l)
                try:
                    res, m = fit(prep, optimizer, tcfg, listeners)
                    reason, value = res.reason, m["val_rmse"]
                    tracker.log_metrics(rid, {k: v for k, v in m.items() if not k.startswith("test_")
                                              and k not in schema.CURVE_ONLY}, step=res.final.iteration)
                    row = {"train_rmse": m["train_rmse"], "seconds": m["fit_seconds"], "iterations": m["iterations"]}
                except Pruned as why:
                    reason, value, row = "pruned", None, {}
                    tracker.set_tags(rid, {"stop_message": str(why)})
                except BaseException:  # Ctrl-C, a signal, an error: the study must not keep it RUNNING
                    search.abandon(j)
                    raise
                tracker.set_tags(rid, {"stop_reason": reason})
            search.tell(j, value)
            rows.append({**params, "val_rmse": value if value is not None else np.nan, **row, "reason": reason,
                         "run_id": rid})
            if on_trial:
                on_trial(j, search.n_trials, params, value)
            j += 1
        trials_frame = pd.DataFrame(rows)
        if trials_frame.empty or trials_frame["val_rmse"].isna().all():
            raise DataError("the sweep has no finished trial to select from (all were pruned, or none was left)")
        best_row = trials_frame.loc[trials_frame["val_rmse"].idxmin()]
        # the winner's values in their own types (a pandas row makes every number a float)
        keys = [k for k in trials_frame.columns if hasattr(cfg.model.hyper, k)]
        out.trials, out.best = trials_frame, {k: type(getattr(cfg.model.hyper, k))(best_row[k]) for k in keys}
        out.edges = search.edges(out.best)
        out.refit = _refit_plan(split, cfg, out.best, best_row)
        out.test_metrics = _run_refit(*out.refit, ratings, optimizer, tracker, parent_id, progress)
        if isinstance(best_row["run_id"], str):  # an earlier run's winner has none (pandas: None or NaN)
            tracker.set_tags(best_row["run_id"], {"winner": "true"})
        return out

    tracker.use_experiment(ratings.name)
    with tracker.run(f"sweep-{optimizer}", {"optimizer": optimizer, **search.describe(),
                                            "dataset": ratings.name, "split_seed": cfg.data.seed},
                     tags={"kind": "sweep"}) as parent_id:
        run_trials(parent_id)
        tracker.log_metrics(parent_id, {"best_val_rmse": float(out.trials["val_rmse"].min()), **out.test_metrics})
        tracker.set_tags(parent_id, {f"best_{k}": v for k, v in out.best.items()})
        if out.edges:
            tracker.set_tags(parent_id, {"winner_on_edge": "; ".join(out.edges)})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trials.csv"
            out.trials.drop(columns=["run_id"]).to_csv(path, index=False)
            tracker.log_artifact(parent_id, path)
    out.parent_run_id = parent_id
    out.links = tracker.links([r for r in out.trials["run_id"] if isinstance(r, str)])
    return out


def _with_validation(split: Split, val_fraction: float, seed: int) -> Split:
    """``split``, or, when it has no validation part (a predefined train/test pair), the same with
    ``val_fraction`` of its training part held out (seeded) to select on."""
    if len(split.validation):
        return split
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    held = random_split(split.train, (1 - val_fraction, val_fraction, 0.0), seed)
    if len(held.validation) == 0:
        raise DataError("a sweep selects by validation RMSE: the training part is too small to hold out any")
    return Split(held.train, held.validation, split.test, split.seed, f"{split.method}+holdout", split.fold)


def _refit_plan(split: Split, cfg: RunConfig, best: dict, best_row) -> tuple[Split, RunConfig]:
    """What the winner's refit is: its split (train + validation; no validation set, so early
    stopping carries over as the winner's iteration count; scored once on test) and its config."""
    merged = _concat(split.train, split.validation)
    refit_split = Split(merged, split.validation.subset(np.array([], dtype=np.int64)), split.test, split.seed,
                        split.method, split.fold)
    refit_rule = replace(cfg.rule, patience=None)
    if best_row["reason"] == "early_stopped":
        refit_rule = replace(refit_rule, max_iter=int(best_row["iterations"]))
    return refit_split, replace(_with_model(cfg, best), rule=refit_rule)


def _run_refit(refit_split: Split, wcfg: RunConfig, ratings: Ratings, optimizer: str, tracker, parent_id,
               progress) -> dict:
    """Fit the refit ``_refit_plan`` made (a child run ``refit-winner``); its test metrics."""
    prep = prepare_split(refit_split, ratings, wcfg)
    with tracker.run("refit-winner", {**run_params(wcfg, prep), "optimizer": optimizer}, parent_id,
                     {"kind": "refit"}) as rid:
        res, m = fit(prep, optimizer, wcfg, tuple(l for l in (progress, tracker.curve_listener(rid)) if l))
        tracker.log_metrics(rid, {k: v for k, v in m.items() if k not in schema.CURVE_ONLY and not k.startswith("val_")},
                            step=res.final.iteration)
    return {k: m[k] for k in ("test_rmse", "test_mae", "train_rmse", "fit_seconds", "iterations")}


def _concat(a: Ratings, b: Ratings) -> Ratings:
    """Two subsets of one dataset as one (same vocabularies)."""
    cat = lambda x, y: None if x is None or y is None else np.concatenate([x, y])
    return Ratings(users=np.concatenate([a.users, b.users]), items=np.concatenate([a.items, b.items]),
                   ratings=np.concatenate([a.ratings, b.ratings]), user_ids=a.user_ids, item_ids=a.item_ids,
                   rating_scale=a.rating_scale, timestamps=cat(a.timestamps, b.timestamps), name=a.name,
                   source=a.source, extra=a.extra)
