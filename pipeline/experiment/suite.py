"""``study``: the methods over a suite of problems, scored by Dolan-More performance profiles."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd

from pipeline import race, report, schema
from pipeline.config import RunConfig, StudyConfig
from pipeline.experiment import records
from pipeline.experiment.comparison import compare_split
from pipeline.experiment.fitting import load_splits, prepare_split, reference_for, run_params, warm_up
from pipeline.null_tracker import NullTracker
from pipeline.optim.base import Listener


@dataclass
class Study:
    runs: pd.DataFrame                 # one row per (problem, method): its costs to each target
    profiles: dict[str, pd.DataFrame]  # "passes-1e-6" -> rho_s(tau), one column per method
    headline: list[str]
    parent_run_id: str | None = None
    links: dict[str, str] = field(default_factory=dict)


def problems(cfg: RunConfig, suite: StudyConfig) -> list[tuple[str, dict, int]]:
    """Every problem of the suite: ``(dataset, hyperparameters, seed)`` for each dataset, each
    point of the grid of hyperparameters (``suite.grid``: name -> values) and each seed."""
    names = list(suite.grid)
    points = [dict(zip(names, values)) for values in itertools.product(*suite.grid.values())]
    for point in points:
        cfg.model.with_values(**point)  # every point a valid model before any fit (one-line error)
    return [(d, p, s) for d in suite.datasets for p in points for s in suite.seeds]


def problem_label(dataset_name: str, point: dict, seed: int) -> str:
    """``synthetic-rank5-reg0.02-seed0``."""
    values = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in point.items())
    return f"{dataset_name}-{values}-seed{seed}"


def _solve_problem(j: int, n: int, problem, cfg: RunConfig, suite: StudyConfig, loaded: dict, tracker, parent_id,
                   progress, note) -> list[dict]:
    """One problem: its reference optimum, every method against it, one run of their costs."""
    dataset, point, seed = problem
    pcfg = replace(cfg, data=replace(cfg.data, dataset=dataset), seed=seed, model=cfg.model.with_values(**point))
    if dataset not in loaded:
        ratings, splits = load_splits(pcfg.data)
        loaded[dataset] = (ratings, splits[0])
    ratings, split = loaded[dataset]
    prep = prepare_split(split, ratings, pcfg, seed)
    if j == 0:
        warm_up(prep.objective)  # the kernels' types do not depend on the rank: once serves all
    t0 = time.perf_counter()
    prep.reference = reference_for(prep, pcfg, suite.reference_passes)
    label = problem_label(ratings.name, point, seed)
    note(f"problem {j + 1}/{n} {label}: {prep.reference.note()} "
         f"({time.perf_counter() - t0:.1f} s)")
    for warning in prep.reference.warnings(float(prep.objective.loss(prep.x0))):
        note(f"warning: {label}: {warning}")
    params = {**run_params(pcfg, prep), "problem": label}
    # Methods are not logged one run each here (hundreds of runs): a run per problem holds every
    # method's costs to target; the per-problem CSV holds everything.
    out = compare_split(prep, pcfg, NullTracker(), None, progress, params)
    rows = [r for r in out.table.to_dict("records") if r["reason"] != "baseline"]
    records.record_problem(tracker, parent_id, label, params, prep.reference, rows)
    return [{"problem": label, "dataset": ratings.name, **point, "seed": seed, "f_star": prep.reference.f_star,
             "f_star_rel_grad_norm": prep.reference.rel_grad_norm, **row} for row in rows]


def profiles_of(runs: pd.DataFrame, optimizers) -> dict[str, pd.DataFrame]:
    """Performance profiles in passes and in seconds for every target, over the methods that ran."""
    out = {}
    applied = [m for m in optimizers if (runs.loc[runs["optimizer"] == m, "reason"] != report.NOT_APPLICABLE).any()]
    for unit in ("passes", "seconds"):
        for key in schema.TARGET_KEYS:
            costs = runs.pivot(index="problem", columns="optimizer", values=f"{unit}_to_{key}")
            out[f"{unit}-{key}"] = race.profile(costs[applied], race.PROFILE_TAUS)
    return out


def study(cfg: RunConfig, suite: StudyConfig, tracker=NullTracker(), progress: Listener | None = None,
          note: Callable[[str], None] | None = None) -> Study:
    """``cfg.optimizers`` on every problem of ``suite`` (datasets x grid x seeds; one split per
    dataset, seeded by ``cfg.data.seed``; stopped by ``suite.rule``), each against its own ``f*``; then Dolan-More
    performance profiles (``pipeline.race``) in data passes and in seconds for every target. With a
    tracker: a parent run (profiles and the per-problem CSV at its artifact root), a child per
    problem holding every method's costs."""
    note = note or (lambda _msg: None)
    cfg = replace(cfg, log_models=False, rule=suite.rule)
    todo = problems(cfg, suite)
    tracker.use_experiment("study")
    params = {"optimizers": ",".join(cfg.optimizers), "datasets": ",".join(suite.datasets),
              **{f"{k}s": ",".join(map(str, v)) for k, v in suite.grid.items()},
              "seeds": ",".join(map(str, suite.seeds)), "gtol": cfg.rule.gtol, "max_passes": cfg.rule.max_passes,
              "max_seconds": cfg.rule.max_seconds, **cfg.model.params(), "problems": len(todo),
              "reference_passes": suite.reference_passes}
    with tracker.run("study", params, tags={"kind": "study"}) as parent_id:
        loaded: dict = {}
        rows = [row for j, problem in enumerate(todo)
                for row in _solve_problem(j, len(todo), problem, cfg, suite, loaded, tracker, parent_id, progress, note)]
        runs = pd.DataFrame(rows)
        profiles = profiles_of(runs, cfg.optimizers)
        out = Study(runs, profiles, report.profile_headline(profiles, len(todo)))
        records.record_study(tracker, parent_id, out, len(todo))
    out.parent_run_id = parent_id
    out.links = tracker.links([])
    return out
