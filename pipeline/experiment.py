"""Wiring: data -> split -> objective -> optimizers -> evaluation -> tracking -> report.

``compare`` is what ``make train`` runs: every optimizer from the same starting point on the
same objective under the same stopping rule, the baselines beside them, one parent run with a
child per method when a tracker is given. Nothing here prints; ``progress`` receives each
iterate and the CLI decides what to show.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from pipeline import evaluate, report
from pipeline.config import RunConfig
from pipeline.data import Ratings, Split, load_dataset, random_split
from pipeline.objectives import BiasedMF
from pipeline.objectives.check import check_derivatives
from pipeline.optim import REGISTRY, OptimizeResult, minimize
from pipeline.optim.base import Listener


@dataclass
class Prepared:
    ratings: Ratings
    split: Split
    objective: BiasedMF
    x0: np.ndarray


@dataclass
class Comparison:
    table: pd.DataFrame
    results: dict[str, OptimizeResult]
    metrics: dict[str, dict]
    prepared: Prepared
    parent_run_id: str | None = None
    child_run_ids: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


def prepare(cfg: RunConfig, ratings: Ratings | None = None) -> Prepared:
    """Load (unless given), split and build the objective and starting point, all seeded."""
    ratings = ratings if ratings is not None else load_dataset(cfg.data.dataset)
    split = random_split(ratings, cfg.data.fractions, seed=cfg.data.seed)
    m = cfg.model
    objective = BiasedMF(split.train, rank=m.rank, reg=m.reg, reg_bias=m.reg_bias,
                         weighting=m.weighting, init_scale=m.init_scale)
    x0 = objective.init(np.random.default_rng(cfg.seed))
    return Prepared(ratings, split, objective, x0)


def run_params(cfg: RunConfig, prepared: Prepared) -> dict:
    """The params every run of a comparison logs (write-once in MLflow)."""
    d = cfg.data
    return {
        "dataset": prepared.ratings.name, "dataset_source": prepared.ratings.source,
        "split": "random", "split_fractions": ",".join(f"{f:g}" for f in d.fractions),
        "split_seed": d.seed, "seed": cfg.seed, **asdict(cfg.model),
        "gtol": cfg.rule.gtol, "max_iter": cfg.rule.max_iter, "max_seconds": cfg.rule.max_seconds,
        "n_params": prepared.objective.n_params, "n_train": len(prepared.split.train),
        "n_val": len(prepared.split.validation), "n_test": len(prepared.split.test),
    }


def fit(prepared: Prepared, name: str, cfg: RunConfig, listeners: tuple[Listener, ...] = ()) -> tuple[OptimizeResult, dict]:
    """One optimizer from ``prepared.x0``; returns the result and its final metrics."""
    obj, split = prepared.objective, prepared.split
    val = split.validation

    def validate(x: np.ndarray) -> float:
        pred = evaluate.clip(obj.predict(x, val.users, val.items), val.rating_scale)
        return evaluate.rmse(pred, val.ratings)

    options = {"step": cfg.gd_step} if name == "gd" and cfg.gd_step is not None else {}
    result = minimize(name, obj, prepared.x0, cfg.rule, validate=validate if len(val) else None,
                      listeners=listeners, **options)
    metrics = evaluate.score_split(lambda u, i: obj.predict(result.x, u, i), split)
    last = result.final
    metrics.update({"train_loss": last.loss, "grad_norm": last.grad_norm, "rel_grad_norm": last.rel_grad_norm,
                    "fit_seconds": last.seconds, "iterations": last.iteration, "n_fun": last.n_fun,
                    "n_grad": last.n_grad, "n_hessp": last.n_hessp, "n_monitor_evals": result.n_monitor_evals})
    return result, metrics


def baselines(prepared: Prepared, cfg: RunConfig) -> dict[str, dict]:
    split = prepared.split
    preds = {
        "global-mean": evaluate.global_mean_baseline(split.train),
        "biases-only": evaluate.biases_baseline(split.train, cfg.model.reg_bias, cfg.model.weighting),
    }
    return {name: evaluate.score_split(p, split) for name, p in preds.items()}


def _row(name: str, metrics: dict, reason: str = "baseline") -> dict:
    return {"optimizer": name, "iterations": metrics.get("iterations"), "n_fun": metrics.get("n_fun"),
            "n_grad": metrics.get("n_grad"), "n_hessp": metrics.get("n_hessp"),
            "seconds": metrics.get("fit_seconds"), "train_loss": metrics.get("train_loss"),
            "grad_norm": metrics.get("grad_norm"), "val_rmse": metrics.get("val_rmse"),
            "test_rmse": metrics.get("test_rmse"), "reason": reason,
            "train_rmse": metrics.get("train_rmse"), "val_mae": metrics.get("val_mae"),
            "test_mae": metrics.get("test_mae")}


def compare(cfg: RunConfig, tracker=None, progress: Listener | None = None,
            ratings: Ratings | None = None, on_start: Callable[[Prepared], None] | None = None) -> Comparison:
    """Run ``cfg.optimizers`` (and the baselines) and log them as one parent run with children."""
    unknown = [n for n in cfg.optimizers if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown optimizer(s) {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    prepared = prepare(cfg, ratings)
    if on_start:
        on_start(prepared)
    params = run_params(cfg, prepared)
    results: dict[str, OptimizeResult] = {}
    metrics: dict[str, dict] = {}
    rows: list[dict] = []
    base = baselines(prepared, cfg)
    out = Comparison(pd.DataFrame(), results, metrics, prepared)

    def run_all(parent_id: str | None) -> None:
        for name, m in base.items():
            metrics[name] = m
            rows.append(_row(name, m))
            if tracker:
                with tracker.run(name, {**params, "optimizer": name}, parent_id, {"kind": "baseline"}) as rid:
                    tracker.log_metrics(rid, m)
                    out.child_run_ids[name] = rid
        for name in cfg.optimizers:
            listeners = tuple(l for l in (progress,) if l)
            if tracker:
                with tracker.run(name, {**params, "optimizer": name, "gd_step": cfg.gd_step if name == "gd" else None},
                                 parent_id, {"kind": "optimizer"}) as rid:
                    out.child_run_ids[name] = rid
                    res, m = fit(prepared, name, cfg, listeners + (tracker.curve_listener(rid),))
                    tracker.log_metrics(rid, {k: v for k, v in m.items() if k not in ("train_loss", "grad_norm", "rel_grad_norm", "val_rmse")}, step=res.final.iteration)
                    tracker.set_tags(rid, {"stop_reason": res.reason, "stop_message": res.message})
            else:
                res, m = fit(prepared, name, cfg, listeners)
            results[name], metrics[name] = res, m
            rows.append(_row(name, m, res.reason))
        out.table = report.comparison_table(rows)

    if tracker is None:
        run_all(None)
        return out
    tracker.use_experiment(prepared.ratings.name)
    with tracker.run(f"compare-{'-'.join(cfg.optimizers)}", {**params, "optimizers": ",".join(cfg.optimizers)},
                     tags={"kind": "comparison"}) as parent_id:
        out.parent_run_id = parent_id
        tracker.log_dataset(parent_id, _ratings_frame(prepared.split.train), prepared.ratings.name,
                            prepared.ratings.source, "training")
        run_all(parent_id)
        best = min(cfg.optimizers, key=lambda n: metrics[n]["val_rmse"])
        tracker.log_metrics(parent_id, {"best_val_rmse": metrics[best]["val_rmse"],
                                        "best_test_rmse": metrics[best]["test_rmse"]})
        tracker.set_tags(parent_id, {"best_optimizer": best, **split_tags(prepared.split)})
        with tempfile.TemporaryDirectory() as tmp:
            fig = report.convergence_figure(results, Path(tmp) / "convergence.png",
                                            title=f"{prepared.ratings.name}: rank {cfg.model.rank}, "
                                                  f"reg {cfg.model.reg:g}, gtol {cfg.rule.gtol:g}")
            table = Path(tmp) / "comparison.csv"
            out.table.to_csv(table, index=False)
            tracker.log_artifact(parent_id, fig)
            tracker.log_artifact(parent_id, table)
    out.links = tracker.links(list(out.child_run_ids.values()))
    return out


def split_tags(split: Split) -> dict:
    return {k: str(v) for k, v in split.cold_counts().items()}


def _ratings_frame(r: Ratings) -> pd.DataFrame:
    frame = pd.DataFrame({"user": r.user_ids[r.users], "item": r.item_ids[r.items], "rating": r.ratings})
    if r.timestamps is not None:
        frame["timestamp"] = r.timestamps
    return frame


def check_grad(cfg: RunConfig, n_directions: int = 3, ratings: Ratings | None = None) -> dict[str, float]:
    """Relative errors of the gradient and the Hessian-vector product against central finite
    differences, at the starting point and at a point along the way to a minimum."""
    prepared = prepare(cfg, ratings)
    rng = np.random.default_rng(cfg.seed + 1)
    obj = prepared.objective
    x1 = prepared.x0 + rng.normal(0.0, 0.1, size=obj.n_params)  # away from the small-factor start
    out = {}
    for label, x in (("init", prepared.x0), ("random", x1)):
        for k, v in check_derivatives(obj, x, rng, n_directions).items():
            out[f"{label}_{k}"] = v
    return out
