"""Fitting one method on one prepared problem, and what every race needs before its clock starts.

``load_splits`` and ``prepare_split`` make a problem (split, objective with its sums where the
engine says, seeded starting point); ``prepare_race`` compiles the kernels, measures the pass
costs and computes each problem's reference optimum ``f*`` (``pipeline.race``); ``fit`` runs one
optimizer and scores it. Nothing here talks to a tracker: the commands (``compare``, ``study``,
``sweep``) record what these return (``pipeline.experiment.records``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pipeline import curvature, evaluate, race, reproducible, schema
from pipeline.config import DataConfig, RunConfig
from pipeline.data import DataError, Ratings, Split, cache_folder, filter_min_counts, load_dataset, load_predefined, make_splits
from pipeline.objectives import LocalEngine, build_objective, model_spec, offers
from pipeline.objectives.base import Objective
from pipeline.objectives.check import check_derivatives
from pipeline.optim import OptimizeResult, StoppingRule, minimize
from pipeline.optim.base import Listener
from pipeline.recommender import Recommender


@dataclass
class Prepared:
    ratings: Ratings
    split: Split
    objective: Objective
    x0: np.ndarray
    seed: int = 0
    reference: race.Reference | None = None  # f* of this problem from x0 (set before the race)
    engine: object = None                     # where the objective's sums run (pipeline.objectives.engine)
    optimum: np.ndarray | None = None         # the point f* was reached at (its curvature is measured)
    curvature: dict = field(default_factory=dict)  # "start", "optimum", "preconditioned" -> curvature.Curvature
    spectra: dict = field(default_factory=dict)    # the same labels -> curvature.Spectrum (eigenvalue densities)

    @property
    def label(self) -> str:
        """``fold-J``, ``seed-S`` or both, for a repeat of a comparison."""
        parts = ([f"fold-{self.split.fold}"] if self.split.fold is not None else []) + [f"seed-{self.seed}"]
        return "-".join(parts)


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


def fit(prepared: Prepared, name: str, cfg: RunConfig, listeners: tuple[Listener, ...] = ()) -> tuple[OptimizeResult, dict]:
    """One optimizer from ``prepared.x0``; returns the result and its final metrics."""
    obj, split = prepared.objective, prepared.split
    val = split.validation

    def validate(x: np.ndarray) -> float:
        return evaluate.score(lambda u, i: obj.predict(x, u, i), val, "val", obj)["val_rmse"]

    options = cfg.optimizer_options.get(name, {})  # the method's own options (gd's fixed step ...)
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
    ref, prepared.optimum = race.reference_and_point(prepared.objective, prepared.x0, cache_file, reference_passes)
    return ref


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
        for warning in prep.reference.warnings(float(prep.objective.loss(prep.x0))):
            note(f"warning: {warning}")
    measure_curvature(prepared[0], note)
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


STATIONARY = StoppingRule().gtol  # |g|/|g0| at or below this (the default gtol): a stationary point, for its kind


def measure_curvature(prep: Prepared, note: Callable[[str], None]) -> None:
    """The Hessian's extreme eigenvalues and eigenvalue density at the start and at the reference
    optimum, and the preconditioned Hessian's (``C^T H C``, what newton-pcg's CG meets) at the
    optimum, into ``prep.curvature`` and ``prep.spectra``; outside the race's clock and budget,
    their passes said. A figure that cannot be measured is said and left out."""
    g0 = None  # |g(x0)|: the start's measurement computes it
    points = [("start", prep.x0), ("optimum", prep.optimum)]
    if prep.optimum is not None and offers(prep.objective, "precondition_factor"):
        points.append(("preconditioned", prep.optimum))
    for label, x in points:
        if x is None:
            continue
        t0 = time.perf_counter()
        tol = curvature.START_TOL if label == "start" else curvature.TOL
        try:
            if label == "preconditioned":
                c, spectrum = curvature.preconditioned(prep.objective, x, tol=tol)
            else:
                c, spectrum = curvature.measure_with_density(prep.objective, x, tol=tol)
        except curvature.NotMeasured as exc:
            note(f"curvature {_WHERE[label]}: not measured ({exc})")
            continue
        prep.curvature[label], prep.spectra[label] = c, spectrum
        if g0 is None:
            g0 = c.grad_norm if label == "start" else float(np.linalg.norm(prep.objective.loss_grad(prep.x0)[1]))
        kind = "" if label == "preconditioned" else f"{c.describe(STATIONARY * g0)}; "
        note(f"curvature {_WHERE[label]}: lambda_min {c.lambda_min:.3e}, lambda_max {c.lambda_max:.3e}"
             + (f", condition number {c.condition:.3g}" if c.lambda_min > 0 else "")
             + f" ({kind}{c.passes} passes with its eigenvalue density, "
             f"{time.perf_counter() - t0:.1f} s, outside the race)")


_WHERE = {"start": "at the start", "optimum": "at the reference optimum",
          "preconditioned": "at the reference optimum, of the preconditioned Hessian M^-1 H"}


def end_note(prepared: Prepared, result: OptimizeResult) -> str:
    """The table's note for ``result``; where it converged above f*, the kind of point it ended
    at, measured (``pipeline.curvature``)."""
    note = race.end_note(result, prepared.reference.f_star if prepared.reference else None)
    if race.ABOVE_F_STAR in note and prepared.curvature:
        g0 = result.history[0].grad_norm  # the fit's own gradient at x0
        try:
            scale = prepared.curvature.get("optimum", prepared.curvature.get("start"))
            kind = curvature.measure(prepared.objective, result.x, lambda_max=scale.lambda_max).describe(STATIONARY * g0)
        except curvature.NotMeasured:
            return note
        note = note.replace(race.ABOVE_F_STAR, f"{race.ABOVE_F_STAR}: {kind}")
    return note


class MethodFailed(Exception):
    """An optimizer raised: the message is one line naming the error."""


def fit_or_fail(prepared: Prepared, name: str, cfg: RunConfig, listeners, on_failure=None):
    """``fit``, with any error of the method turned into :class:`MethodFailed` (one line); Ctrl-C
    and other interrupts pass through."""
    try:
        return fit(prepared, name, cfg, listeners)
    except Exception as exc:  # noqa: BLE001 - a method's failure must not stop the comparison
        first = (str(exc).strip().splitlines() or [""])[0]
        why = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        if isinstance(exc, MemoryError):
            why = "out of memory (MemoryError): a smaller --rank or dataset"
        if on_failure:
            on_failure(why)
        raise MethodFailed(why) from exc


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
