"""The names of what a fit measures, in one place: per-iterate curves, final metrics, targets and
the comparison table's columns. The fit writes them, the tracker logs them, the table and the
report read them back: each name is spelled here once.

Curves are logged at every iterate with **step = data passes** so far (the race's budget unit:
the MLflow UI's charts then overlay the methods on the fair axis; passes rise strictly with every
iterate of every method, tested, so the j-th point is iteration j); a final metric
that repeats a curve's last point (:data:`CURVE_ONLY`) is not logged again. ``rel_gap = (f -
f*)/|f*|`` and its ``log10`` (:data:`LOG_GAP`: the UI draws linear axes, and the gap spans ten
orders of magnitude) are curves when the problem's reference optimum ``f*`` is known.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.optim.base import IterationRecord, OptimizeResult

TARGETS = (1e-3, 1e-6, 1e-9)  # targets of (f - f*)/|f*|


def target_label(tau: float) -> str:
    """``1e-3`` for 0.001: the suffix of the to-target columns and metrics."""
    return f"{tau:.0e}".replace("e-0", "e-")


TARGET_KEYS = tuple(target_label(t) for t in TARGETS) + ("val",)  # "val": the validation plateau

# curve name -> the IterationRecord field it follows; the step is the record's data_passes
# (n_fun, n_grad, n_hessp and grad_norm are final metrics only: the step and rel_grad_norm carry
# the same story, and each curve point costs about 0.15 ms to store in SQLite)
CURVES = {"train_loss": "loss", "rel_grad_norm": "rel_grad_norm", "val_rmse": "val_rmse", "seconds": "seconds"}
GAP = "rel_gap"
LOG_GAP = "log10_rel_gap"
BEST_VAL = "best_val_rmse"  # the lowest validation RMSE on a method's curve: its plateau
CURVE_NAMES = (*CURVES, GAP, LOG_GAP)
CURVE_ONLY = ("train_loss", "rel_grad_norm", "val_rmse")

# final metrics from a result's last record (name -> IterationRecord field)
FINAL = {"train_loss": "loss", "grad_norm": "grad_norm", "rel_grad_norm": "rel_grad_norm",
         "fit_seconds": "seconds", "iterations": "iteration", "n_fun": "n_fun", "n_grad": "n_grad",
         "n_hessp": "n_hessp", "data_passes": "data_passes"}

TABLE_COLUMNS = (["optimizer", "reason", "data_passes", "seconds", GAP, "rel_grad_norm"]
                 + [f"{u}_to_{t}" for t in TARGET_KEYS for u in ("passes", "seconds")]
                 + ["val_rmse", BEST_VAL, "test_rmse", "note", "iterations", "n_fun", "n_grad", "n_hessp", "train_loss",
                    "grad_norm", "train_rmse", "val_mae", "test_mae", "message"])


def relative_gap(loss: float, f_star: float) -> float:
    return (loss - f_star) / max(abs(f_star), 1e-300)


def curve_point(record: IterationRecord, f_star: float | None = None) -> dict[str, float]:
    """One iterate's value of every curve."""
    values = {name: getattr(record, field) for name, field in CURVES.items()}
    if f_star is not None:
        values[GAP] = gap = relative_gap(record.loss, f_star)
        values[LOG_GAP] = math.log10(gap) if gap > 0 else math.nan  # below f*: no logarithm, no point
    return values


def final_metrics(result: OptimizeResult) -> dict[str, float]:
    """What a result's last iterate says, under the final metrics' names (plus the monitor's counts)."""
    last = result.final
    vals = [r.val_rmse for r in result.history if np.isfinite(r.val_rmse)]
    return {**{name: getattr(last, field) for name, field in FINAL.items()},
            BEST_VAL: float(min(vals)) if vals else float("nan"),
            "n_monitor_evals": result.n_monitor_evals, "n_negative_curvature": result.n_negative_curvature}


def history_from_curves(curves: dict[str, list[tuple[int, float]]]) -> list[IterationRecord]:
    """The iterates back from logged curves, keyed by their step (data passes, strictly rising, so
    the j-th point is iteration j); fields with no curve: NaN or 0."""
    value = {k: dict(v) for k, v in curves.items()}
    get = lambda key, step, default: value.get(key, {}).get(step, default)
    return [IterationRecord(j, loss, np.nan, get("rel_grad_norm", step, np.nan),
                            get("seconds", step, 0.0), 0, 0, 0, get("val_rmse", step, np.nan), int(step))
            for j, (step, loss) in enumerate(sorted(value.get("train_loss", {}).items()))]
