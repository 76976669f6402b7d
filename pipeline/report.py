"""Figures and tables from optimizer results (no tracking, no printing)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.optim.base import OptimizeResult

TABLE_COLUMNS = ["optimizer", "iterations", "n_fun", "n_grad", "n_hessp", "seconds", "train_loss",
                 "grad_norm", "val_rmse", "test_rmse", "reason"]


def convergence_figure(results: dict[str, OptimizeResult], path: str | Path, title: str = "") -> Path:
    """Objective gap and gradient norm against wall seconds and against iterations.

    The gap is ``f - f_best + 1e-16`` on a log scale, ``f_best`` the lowest objective any method
    reached, so methods are compared on the one objective they share.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    f_best = min(min(r.loss for r in res.history) for res in results.values())
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for name, res in results.items():
        it = np.array([r.iteration for r in res.history])
        sec = np.array([r.seconds for r in res.history])
        gap = np.array([r.loss - f_best for r in res.history]) + 1e-16
        gn = np.array([r.grad_norm for r in res.history])
        for ax, xs, ys in ((axes[0, 0], sec, gap), (axes[0, 1], it, gap), (axes[1, 0], sec, gn), (axes[1, 1], it, gn)):
            ax.plot(xs, ys, label=f"{name} ({res.reason})", lw=1.6)
    for ax in axes.ravel():
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("objective - best objective")
    axes[1, 0].set_ylabel("gradient norm ||g||")
    axes[1, 0].set_xlabel("wall seconds")
    axes[1, 1].set_xlabel("iteration")
    axes[0, 1].legend(loc="upper right", fontsize=9)
    fig.suptitle(title or "convergence", fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def comparison_table(rows: list[dict]) -> pd.DataFrame:
    """One row per method (optimizers and baselines), the columns in :data:`TABLE_COLUMNS`."""
    frame = pd.DataFrame(rows)
    for col in TABLE_COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    return frame[TABLE_COLUMNS + [c for c in frame.columns if c not in TABLE_COLUMNS]]


def format_table(frame: pd.DataFrame) -> str:
    """A fixed-width text table for the terminal (the columns in :data:`TABLE_COLUMNS`)."""
    def fmt(col: str, v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if col in ("iterations", "n_fun", "n_grad", "n_hessp"):
            return f"{int(v)}"
        if col == "seconds":
            return f"{v:.2f}"
        if col == "train_loss":
            return f"{v:.8f}"
        if col == "grad_norm":
            return f"{v:.2e}"
        if col.endswith("rmse"):
            return f"{v:.4f}"
        return str(v)
    cols = TABLE_COLUMNS
    cells = [[fmt(c, row[c]) for c in cols] for _, row in frame[cols].iterrows()]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if j else v.ljust(w) for j, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])
