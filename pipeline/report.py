"""Figures and tables from optimizer results (no tracking, no printing)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.optim.base import OptimizeResult

TABLE_COLUMNS = ["optimizer", "iterations", "n_fun", "n_grad", "n_hessp", "data_passes", "seconds", "train_loss",
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


def _series(res: OptimizeResult, key: str) -> np.ndarray:
    return np.array([getattr(r, key) for r in res.history], dtype=float)


def figures(repeats: list[dict[str, OptimizeResult]], folder: str | Path, title: str = "") -> list[Path]:
    """The figures a comparison logs at its artifact root (the compare page shows top-level files).

    ``convergence.png``: objective gap and gradient norm against seconds and iterations (first repeat);
    ``convergence_passes.png``: gap and gradient norm against data passes, one line per method,
    median over repeats with a min-max band when there are several (seeds or folds);
    ``val_rmse.png``: validation RMSE against seconds, likewise.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    out = [convergence_figure(repeats[0], folder / "convergence.png", title)]
    f_best = min(min(r.loss for r in res.history) for rep in repeats for res in rep.values())
    names = list(repeats[0])
    colors = {n: plt.get_cmap("tab10")(j % 10) for j, n in enumerate(names)}

    def band(ax, name, xkey, ykey, transform=lambda y: y):
        xs_all = [_series(rep[name], xkey) for rep in repeats if name in rep]
        ys_all = [transform(_series(rep[name], ykey)) for rep in repeats if name in rep]
        if len(xs_all) == 1:
            ax.plot(xs_all[0], ys_all[0], color=colors[name], label=name, lw=1.6)
            return
        grid = np.linspace(0, min(x[-1] for x in xs_all), 200)
        ys = np.array([np.interp(grid, x, y) for x, y in zip(xs_all, ys_all)])
        ax.plot(grid, np.median(ys, axis=0), color=colors[name], label=f"{name} (median of {len(ys)})", lw=1.6)
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=colors[name], alpha=0.2)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for name in names:
        band(axes[0], name, "data_passes", "loss", lambda y: y - f_best + 1e-16)
        band(axes[1], name, "data_passes", "grad_norm")
    for ax, label in zip(axes, ("objective - best objective", "gradient norm")):
        ax.set_yscale("log")
        ax.set_xlabel("data passes (loss, gradient or Hessian-vector product = 1)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle((title or "convergence") + ": cost in data passes")
    fig.savefig(folder / "convergence_passes.png", dpi=110)
    plt.close(fig)
    out.append(folder / "convergence_passes.png")

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for name in names:
        if np.isfinite(_series(repeats[0][name], "val_rmse")).any():
            band(ax, name, "seconds", "val_rmse")
    ax.set_xlabel("wall seconds")
    ax.set_ylabel("validation RMSE")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle((title or "") + ": validation RMSE")
    fig.savefig(folder / "val_rmse.png", dpi=110)
    plt.close(fig)
    out.append(folder / "val_rmse.png")
    return out


def markdown_table(frame: pd.DataFrame) -> str:
    """The comparison table as GitHub Markdown (same columns and number formats as the terminal)."""
    lines = format_table(frame).splitlines()
    header, rows = lines[0], lines[2:]
    split = lambda line: line.split()
    cols = split(header)
    md = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    md += ["| " + " | ".join(split(r)) + " |" for r in rows]
    return "\n".join(md) + "\n"


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
        if col in ("iterations", "n_fun", "n_grad", "n_hessp", "data_passes"):
            return f"{v:.0f}"
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
