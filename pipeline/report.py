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


# -- the case-study report ----------------------------------------------------------------------
METHOD_NOTES = {
    "gd": "Gradient descent with Armijo backtracking: one loss+gradient per accepted step plus value-only "
          "trials. Linear convergence at a rate set by the condition number, which the spread of rating "
          "counts per user and item makes large here.",
    "gd-momentum": "Nesterov's accelerated gradient with function-value restart: the same cost per step as "
                   "gradient descent, with a rate that depends on the square root of the condition number.",
    "newton-cg": "Truncated Newton (scipy Newton-CG) with our exact Hessian-vector product: conjugate gradients "
                 "on H d = -g, stopped early by a forcing term, and on negative curvature; then a Wolfe line "
                 "search. Superlinear near a minimum; each step costs as many data passes as CG iterations.",
    "newton-cg-gn": "Newton-CG with the Gauss-Newton product (residual curvature dropped): never meets negative "
                    "curvature, converges linearly when residuals are not small.",
    "trust-ncg": "Trust-region Newton with Steihaug CG: follows negative curvature to the region's boundary "
                 "instead of stopping, which matters near the saddle at small factors.",
    "trust-krylov": "Trust-region Newton solving the subproblem nearly exactly on a Krylov space (GLTR): more "
                    "Hessian-vector products per step, fewer steps.",
    "lbfgs": "L-BFGS-B: a quasi-Newton model from the last 10 gradient differences; one loss+gradient per step "
             "most of the time; no Hessian-vector products.",
    "cg": "Nonlinear conjugate gradient (Polak-Ribiere) with a Wolfe line search.",
    "als": "Alternating least squares: exact ridge solves for every user (factors and bias), then every item; "
           "two data passes per sweep; the objective never increases.",
    "sgd": "Per-rating stochastic gradient descent (Surprise's SVD update) with a 1/t step schedule; one data "
           "pass per epoch, cheap per pass, slow to the exact minimum.",
}

DERIVATION = """\
For N training ratings, residuals `e_ui = mu + b_u + c_i + p_u.q_i - r_ui` and weights `w` (rating counts, or 1):

    L = (1/N) [ 1/2 sum e_ui^2 + lam/2 (sum_u w_u |p_u|^2 + sum_i w_i |q_i|^2) + lam_b/2 (sum_u w_u b_u^2 + sum_i w_i c_i^2) ]

Gradient: `dL/dp_u = (1/N)[sum_i e_ui q_i + lam w_u p_u]`, `dL/db_u = (1/N)[sum_i e_ui + lam_b w_u b_u]`, and likewise for items.
Hessian-vector product along `(dP, dQ, db, dc)`: with `de_ui = db_u + dc_i + dp_u.q_i + p_u.dq_i`,
`(Hv)_p_u = (1/N)[sum_i (de_ui q_i + e_ui dq_i) + lam w_u dp_u]` and symmetrically for `q_i`; the `e_ui dq_i`
terms are the residual curvature that Gauss-Newton drops. Every product is two sparse matrix products over the
ratings, O(N k), and the Hessian is never formed (full derivation: docs/derivation.md).
"""


def results_from_logged(children: list[dict]) -> dict[str, OptimizeResult]:
    """Rebuild optimizer histories from logged curves (what the report and its figures need)."""
    from pipeline.optim.base import IterationRecord
    out = {}
    for child in children:
        curves = child["curves"]
        if not curves or not curves.get("train_loss"):
            continue
        steps = [s for s, _ in curves["train_loss"]]
        value = {k: dict(v) for k, v in curves.items()}
        hist = [IterationRecord(s, value["train_loss"][s], value["grad_norm"].get(s, np.nan),
                                value["rel_grad_norm"].get(s, np.nan), value["seconds"].get(s, 0.0),
                                int(value["n_fun"].get(s, 0)), int(value["n_grad"].get(s, 0)),
                                int(value["n_hessp"].get(s, 0)), value.get("val_rmse", {}).get(s, np.nan),
                                int(value.get("data_passes", {}).get(s, 0)))
                for s in steps]
        out[child["name"]] = OptimizeResult(child["name"], np.empty(0), child["tags"].get("stop_reason", "?"),
                                            child["tags"].get("stop_message", ""), hist)
    return out


def findings(table: pd.DataFrame, results: dict[str, OptimizeResult], gtol: float) -> list[str]:
    """Plain statements read off the numbers (no adjectives the data does not support)."""
    lines = []
    opt = table[table["reason"] != "baseline"]
    conv = opt[opt["reason"] == "converged"]
    if len(conv):
        fastest = conv.loc[conv["seconds"].idxmin()]
        cheapest = conv.loc[conv["data_passes"].idxmin()] if "data_passes" in conv and conv["data_passes"].notna().any() else fastest
        lines.append(f"{len(conv)} of {len(opt)} methods reached the shared tolerance ||g||/||g0|| <= {gtol:g}: "
                     f"{', '.join(conv['optimizer'])}. Fastest in wall time: {fastest['optimizer']} "
                     f"({fastest['seconds']:.1f} s); fewest data passes: {cheapest['optimizer']} "
                     f"({cheapest['data_passes']:.0f}).")
    else:
        lines.append(f"No method reached the shared tolerance ||g||/||g0|| <= {gtol:g} within its budget.")
    rest = opt[opt["reason"] != "converged"]
    for _, row in rest.iterrows():
        res = results.get(row["optimizer"])
        rel = res.final.rel_grad_norm if res else float("nan")
        lines.append(f"{row['optimizer']} stopped on {row['reason']} at relative gradient norm {rel:.1e} "
                     f"after {row['seconds']:.1f} s.")
    best_loss = opt["train_loss"].min()
    close = opt[opt["train_loss"] - best_loss <= 1e-6 * abs(best_loss)]
    lines.append(f"Final objectives within 1e-6 (relative) of the best ({best_loss:.8f}): {', '.join(close['optimizer'])}.")
    vr = opt["val_rmse"]
    lines.append(f"Validation RMSE spans {vr.min():.4f} to {vr.max():.4f} across methods; test RMSE "
                 f"{opt['test_rmse'].min():.4f} to {opt['test_rmse'].max():.4f}. Baselines: " +
                 ", ".join(f"{r['optimizer']} {r['test_rmse']:.4f}" for _, r in table[table['reason'] == 'baseline'].iterrows())
                 + ".")
    ncg = results.get("newton-cg")
    if ncg is not None:
        lines.append("Newton-CG's last three relative gradient norms: "
                     + ", ".join(f"{r.rel_grad_norm:.1e}" for r in ncg.history[-3:]) + ".")
    return lines


def write_report(logged: dict, folder: str | Path) -> Path:
    """``report.md`` and its figures in ``folder`` from a logged comparison (see tracking.load_comparison)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parent = logged["parent"]
    results = results_from_logged(logged["children"])
    rows = []
    for child in logged["children"]:
        m = child["metrics"]
        rows.append({"optimizer": child["name"], "iterations": m.get("iterations"), "n_fun": m.get("n_fun"),
                     "n_grad": m.get("n_grad"), "n_hessp": m.get("n_hessp"), "data_passes": m.get("data_passes"),
                     "seconds": m.get("fit_seconds"), "train_loss": m.get("train_loss"),
                     "grad_norm": m.get("grad_norm"), "val_rmse": m.get("val_rmse"), "test_rmse": m.get("test_rmse"),
                     "reason": child["tags"].get("stop_reason", "baseline")})
    table = comparison_table(rows)
    p = parent["params"]
    title = f"{parent['experiment']}: rank {p.get('rank')}, reg {p.get('reg')}, gtol {p.get('gtol')}"
    figs = figures([results], folder, title) if results else []
    gtol = float(p.get("gtol", "nan"))
    neg = {c["name"]: c["metrics"].get("n_negative_curvature") for c in logged["children"]
           if c["metrics"].get("n_negative_curvature")}
    text = [f"# Case study: optimizers on biased matrix factorization ({parent['experiment']})", "",
            f"MLflow run `{parent['run_id']}`; dataset `{p.get('dataset')}` ({p.get('n_train')} training, "
            f"{p.get('n_val')} validation, {p.get('n_test')} test ratings; split {p.get('split')}, seed {p.get('split_seed')}); "
            f"rank {p.get('rank')}, reg {p.get('reg')}, reg_bias {p.get('reg_bias')}, weighting {p.get('weighting')}; "
            f"every method from the same starting point (seed {p.get('seed')}) under the same stopping rule "
            f"(relative gradient norm {p.get('gtol')}, at most {p.get('max_iter')} iterations or {p.get('max_seconds')} s).",
            "", "## The objective and its derivatives", "", DERIVATION, "## The methods", ""]
    for name in results:
        text.append(f"- **{name}**: {METHOD_NOTES.get(name, '')}")
    text += ["", "## Results", "", markdown_table(table), ""]
    for f in figs:
        text += [f"![{f.stem}]({f.name})", ""]
    text += ["## What the numbers say", ""] + [f"- {line}" for line in findings(table, results, gtol)]
    if neg:
        text.append("- Negative curvature met by the inner solvers (Hessian-vector products with v.Hv < 0): "
                    + ", ".join(f"{k} {int(v)}" for k, v in neg.items())
                    + ". scipy's Newton-CG then stops CG and takes the direction built so far (steepest descent "
                      "if it is the first CG step); trust-ncg follows it to the trust-region boundary.")
    text += ["", "Seconds are optimizer wall time on the machine that ran it (monitoring excluded); data passes "
             "count every loss, gradient or Hessian-vector product as one pass over the ratings "
             "(docs/optimizers.md), and do not depend on the machine.", ""]
    path = folder / "report.md"
    path.write_text("\n".join(text))
    return path
