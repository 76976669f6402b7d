"""``sweep``: tune hyperparameters on validation only, refit the winner, score it once on test."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.config import RunConfig
from pipeline.data import DataError, Ratings, Split, random_split
from pipeline.experiment import records
from pipeline.experiment.fitting import fit, load_splits, prepare_split, run_params, warm_up
from pipeline.null_tracker import NullTracker
from pipeline.optim import REGISTRY
from pipeline.optim.base import Listener
from pipeline.search import Pruned


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


def study_identity(cfg: RunConfig, blind: Split, optimizer: str, searched: set[str]) -> str:
    """12 hex digits of SHA-256 over everything that changes what a trial measures: the ratings it
    is fitted and selected on (so the file, its filters, the split's method, fractions and seed),
    the stopping rule, the model and its hyperparameters outside ``searched``, the optimizer and
    its options, the initialization seed. A study under another identity is another study."""
    h = hashlib.sha256()
    for part in (blind.train, blind.validation):
        for a in (part.users, part.items, part.ratings):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    fixed = {k: v for k, v in cfg.model.params().items() if k not in searched}
    h.update(repr((sorted(fixed.items()), sorted(asdict(cfg.rule).items()), optimizer,
                   sorted(cfg.optimizer_options.get(optimizer, {}).items()), cfg.seed)).encode())
    return h.hexdigest()[:12]


def _trial(j: int, params: dict, cfg: RunConfig, blind: Split, ratings: Ratings, search, optimizer: str,
           tracker, parent_id, progress) -> tuple[dict, float | None]:
    """Trial ``j``: the search's point fitted on the blind split (no test part), a child run; its
    row and validation RMSE (None: pruned)."""
    tcfg = _with_model(cfg, params)
    prep = prepare_split(blind, ratings, tcfg)
    if j == 0:
        warm_up(prep.objective)  # the first trial's clock must not pay for compilation
    number = search.number(j)
    with tracker.run(f"trial-{number}", {**run_params(tcfg, prep), "optimizer": optimizer}, parent_id,
                     {"kind": "trial"}) as rid:
        try:
            res, m = fit(prep, optimizer, tcfg, records.listeners(progress, tracker.curve_listener(rid), search.listener(j)))
            reason, value = res.reason, m["val_rmse"]
            tracker.log_metrics(rid, records.final_metrics(m, drop=("test_",)), step=int(res.final.data_passes))
            row = {"train_rmse": m["train_rmse"], "seconds": m["fit_seconds"], "iterations": m["iterations"]}
        except Pruned as why:
            reason, value, row = "pruned", None, {}
            tracker.set_tags(rid, {"stop_message": str(why)})
        except BaseException:  # Ctrl-C, a signal, an error: the study must not keep it RUNNING
            search.abandon(j)
            raise
        tracker.set_tags(rid, {"stop_reason": reason})
    search.tell(j, value)
    return {"trial": number, **params, "val_rmse": value if value is not None else np.nan, **row, "reason": reason,
            "run_id": rid}, value


def _select(out: Sweep, rows: list[dict], cfg: RunConfig, search) -> pd.Series:
    """The winner by validation RMSE among the finished trials (its values in their own types)."""
    trials_frame = pd.DataFrame(rows)
    if "trial" in trials_frame:
        trials_frame = trials_frame.sort_values("trial", kind="stable").reset_index(drop=True)
    if trials_frame.empty or trials_frame["val_rmse"].isna().all():
        raise DataError("the sweep has no finished trial to select from (all were pruned, or none was left)")
    best_row = trials_frame.loc[trials_frame["val_rmse"].idxmin()]
    # the winner's values in their own types (a pandas row makes every number a float)
    keys = [f.name for f in fields(cfg.model.hyper) if f.name in trials_frame.columns]  # the model's order
    out.trials, out.best = trials_frame, {k: type(getattr(cfg.model.hyper, k))(best_row[k]) for k in keys}
    out.edges = search.edges(out.best)
    return best_row


def sweep(cfg: RunConfig, search, optimizer: str, tracker=NullTracker(), progress: Listener | None = None,
          ratings: Ratings | None = None, on_trial: Callable[[int, int, dict, float | None], None] | None = None,
          val_fraction: float = 0.1, on_note: Callable[[str], None] | None = None) -> Sweep:
    """Tune the hyperparameters ``search`` proposes (``pipeline.search``: a grid, or Optuna's TPE
    over ranges with pruning) by validation RMSE only, then refit the winner on train + validation
    and score it once on test.

    Trials never see the test set: they are fitted and scored on a split whose test part is
    empty, so nothing about test can leak into the selection (tested). A split without a
    validation part (``--train/--test`` files) holds out ``val_fraction`` of its training part,
    seeded by the split seed. A trial the search prunes ends with reason "pruned"; a winner at
    the edge of what was searched is reported in ``Sweep.edges``. A search that keeps a study
    (TPE) opens it under ``study_identity`` and counts, for the winner, the trials an earlier or a
    concurrent run finished; ``on_note`` hears, in words, that a study resumes or that the run
    waits for another's trials. ``on_trial(number, n_trials, params, val_rmse)`` after each trial.
    """
    if optimizer not in REGISTRY:
        raise KeyError(f"unknown optimizer {optimizer!r}; choose from {', '.join(REGISTRY)}")
    ratings, splits = load_splits(cfg.data, ratings)
    split = _with_validation(splits[0], val_fraction, cfg.data.seed)
    blind = Split(split.train, split.validation, split.test.subset(np.array([], dtype=np.int64)), split.seed,
                  split.method, split.fold)
    search.check(lambda params: _with_model(cfg, params))  # every point it will try a valid model, before any fit
    search.begin(study_identity(cfg, blind, optimizer, search.keys))
    note = on_note or (lambda _text: None)
    if search.resumed:
        note(f"resuming study {search.study.study_name}: {search.resumed} of {search.n_trials} trials done before")
    rows = []
    out = Sweep(pd.DataFrame(), {}, {}, split=split)
    tracker.use_experiment(ratings.name)
    with tracker.run(f"sweep-{optimizer}", {"optimizer": optimizer, **search.describe(),
                                            "dataset": ratings.name, "split_seed": cfg.data.seed},
                     tags={"kind": "sweep"}) as parent_id:
        j = 0
        while (params := search.propose(j)) is not None:
            row, value = _trial(j, params, cfg, blind, ratings, search, optimizer, tracker, parent_id, progress)
            rows.append(row)
            if on_trial:
                on_trial(row["trial"], search.n_trials, params, value)
            j += 1
        rows += search.others(lambda n: note(f"waiting for {n} trial{'s' * (n > 1)} another run of this study is fitting"))
        best_row = _select(out, rows, cfg, search)
        out.refit = _refit_plan(split, cfg, out.best, best_row)
        out.test_metrics = _run_refit(*out.refit, ratings, optimizer, tracker, parent_id, progress)
        if isinstance(best_row["run_id"], str):  # an earlier run's winner has none (pandas: None or NaN)
            tracker.set_tags(best_row["run_id"], {"winner": "true"})
        records.record_sweep(tracker, parent_id, out)
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
    merged = split.train.concat(split.validation)
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
        res, m = fit(prep, optimizer, wcfg, records.listeners(progress, tracker.curve_listener(rid)))
        tracker.log_metrics(rid, records.final_metrics(m, drop=("val_",)), step=int(res.final.data_passes))
    return {k: m[k] for k in ("test_rmse", "test_mae", "train_rmse", "fit_seconds", "iterations")}
