"""Figures and tables from optimizer results (no tracking, no printing)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import race
from pipeline.optim import REGISTRY
from pipeline.optim.base import OptimizeResult
from pipeline.schema import BEST_VAL, GAP, TABLE_COLUMNS, TARGET_KEYS, TARGETS, history_from_curves



NOT_APPLICABLE = "not applicable"  # the reason of a method the model cannot run (run, ranked, plotted: never)
NOT_RUN = ("baseline", "failed", NOT_APPLICABLE)  # rows that are not a method's run


def table_row(name: str, metrics: dict, reason: str = "baseline", note: str = "", message: str = "") -> dict:
    """One row of the comparison table from a method's final metrics (see :data:`TABLE_COLUMNS`)."""
    row = {c: metrics.get(c) for c in TABLE_COLUMNS}
    row.update({"optimizer": name, "reason": reason, "note": note, "message": message,
                "seconds": metrics.get("fit_seconds")})
    return row


def _gap_label(f_star: float | None) -> str:
    return "(f - f*)/|f*|" if f_star is not None else "(f - f_best)/|f_best|  (no f* logged)"


def _gap(res: OptimizeResult, f_ref: float) -> np.ndarray:
    return (np.array([r.loss for r in res.history]) - f_ref) / max(abs(f_ref), 1e-300)


def _reference(results: list[dict[str, OptimizeResult]], f_star: float | None) -> float:
    if f_star is not None:
        return f_star
    return min(min(r.loss for r in res.history) for rep in results for res in rep.values())


def convergence_figure(results: dict[str, OptimizeResult], path: str | Path, title: str = "",
                       f_star: float | None = None) -> Path:
    """Relative suboptimality ``(f - f*)/|f*|`` and relative gradient norm against wall seconds
    and against data passes, log scale. ``f*`` is the problem's reference optimum
    (``pipeline.race``); points at or below it are not drawn (a method ending below ``f*`` says so
    in its legend entry)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    f_ref = _reference([results], f_star)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for name, res in results.items():
        sec = _series(res, "seconds")
        passes = _series(res, "data_passes")
        gap = _gap(res, f_ref)
        below = " ends below f*" if gap[-1] < -1e-9 else ""
        gap = np.where(gap > 0, gap, np.nan)
        rel = _series(res, "rel_grad_norm")
        for ax, xs, ys in ((axes[0, 0], sec, gap), (axes[0, 1], passes, gap), (axes[1, 0], sec, rel),
                           (axes[1, 1], passes, rel)):
            ax.plot(xs, ys, label=f"{name} ({res.reason}{below})", lw=1.6)
    for ax in axes.ravel():
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    for t in TARGETS:
        for ax in axes[0]:
            ax.axhline(t, color="grey", lw=0.6, ls=":")
    axes[0, 0].set_ylabel(_gap_label(f_star))
    axes[1, 0].set_ylabel("||g|| / ||g0||")
    axes[1, 0].set_xlabel("wall seconds (compilation and monitoring excluded)")
    axes[1, 1].set_xlabel("data passes")
    axes[0, 1].legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "convergence", fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(res: OptimizeResult, key: str) -> np.ndarray:
    return np.array([getattr(r, key) for r in res.history], dtype=float)


def figures(repeats: list[dict[str, OptimizeResult]], folder: str | Path, title: str = "",
            f_stars: list[float] | None = None) -> list[Path]:
    """The figures a comparison logs at its artifact root (the compare page shows top-level files).

    ``convergence.png``: ``(f - f*)/|f*|`` and ``||g||/||g0||`` against seconds and data passes
    (first repeat); ``convergence_passes.png``: the same against data passes, one line per method,
    median over repeats (each against its own ``f*``) with a min-max band when there are several;
    ``val_rmse.png``: validation RMSE against data passes on a log axis (the plateau comes within
    tens of passes, the budget runs to thousands), likewise.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    f_stars = f_stars or [None] * len(repeats)
    out = [convergence_figure(repeats[0], folder / "convergence.png", title, f_stars[0])]
    f_refs = [_reference([rep], fs) for rep, fs in zip(repeats, f_stars)]
    names = list(dict.fromkeys(n for rep in repeats for n in rep))
    colors = {n: plt.get_cmap("tab10")(j % 10) for j, n in enumerate(names)}

    def band(ax, name, xkey, ykey, transform=lambda y, _f: y):
        xs_all = [_series(rep[name], xkey) for rep in repeats if name in rep]
        ys_all = [transform(_series(rep[name], ykey), f) for rep, f in zip(repeats, f_refs) if name in rep]
        if len(xs_all) == 1:
            ax.plot(xs_all[0], ys_all[0], color=colors[name], label=name, lw=1.6)
            return
        grid = np.linspace(0, min(x[-1] for x in xs_all), 200)
        ys = np.array([np.interp(grid, x, y) for x, y in zip(xs_all, ys_all)])
        ax.plot(grid, np.median(ys, axis=0), color=colors[name], label=f"{name} (median of {len(ys)})", lw=1.6)
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=colors[name], alpha=0.2)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for name in names:
        band(axes[0], name, "data_passes", "loss", lambda y, f: np.where(y > f, (y - f) / max(abs(f), 1e-300), np.nan))
        band(axes[1], name, "data_passes", "rel_grad_norm")
    for ax, label in zip(axes, (_gap_label(f_stars[0]), "||g|| / ||g0||")):
        ax.set_yscale("log")
        ax.set_xlabel("data passes (loss+gradient, Hessian-vector product, half ALS sweep, SGD epoch = 1)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle((title or "convergence") + ": cost in data passes")
    fig.savefig(folder / "convergence_passes.png", dpi=110)
    plt.close(fig)
    out.append(folder / "convergence_passes.png")

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for name in names:
        if name in repeats[0] and np.isfinite(_series(repeats[0][name], "val_rmse")).any():
            band(ax, name, "data_passes", "val_rmse")
    ax.set_xscale("symlog", linthresh=1.0)  # pass 0 (the start) on the axis, then decades
    ax.set_xlabel("data passes (log scale past 1)")
    ax.set_ylabel("validation RMSE")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle((title or "") + ": validation RMSE")
    fig.savefig(folder / "val_rmse.png", dpi=110)
    plt.close(fig)
    out.append(folder / "val_rmse.png")
    return out


# -- the Hessian's eigenvalue densities ------------------------------------------------------------
SPECTRUM_LABELS = {"start": "H at the start x0", "optimum": "H at the reference optimum",
                   "preconditioned": "M^-1 H at the reference optimum (newton-pcg's CG)"}


def spectrum_figure(frame: pd.DataFrame, path: str | Path) -> Path:
    """``spectrum.png``: the cumulative share of eigenvalues (stochastic Lanczos quadrature, on the
    complement of the symmetry) below each value; left the start on a linear axis (its negative
    part visible), right the optimum's H and M^-1 H against eigenvalue / lambda_max on a log axis
    (how many decades each spans: what sets gradient descent's and CG's rates)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for label, part in frame.groupby("point", sort=False):
        order = np.argsort(part["eigenvalue"].to_numpy())
        nodes = part["eigenvalue"].to_numpy()[order]
        share = np.cumsum(part["weight"].to_numpy()[order])
        name = SPECTRUM_LABELS.get(label, label)
        if label == "start":
            axes[0].step(nodes, share, where="post", label=name, lw=1.6)
        else:
            top = nodes.max()
            keep = nodes > 0
            axes[1].step(nodes[keep] / top, share[keep], where="post", label=name, lw=1.6)
    axes[0].axvline(0.0, color="grey", lw=0.8, ls=":")
    axes[0].set_xlabel("eigenvalue")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("eigenvalue / largest eigenvalue")
    for ax in axes:
        ax.set_ylabel("share of eigenvalues at or below")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("The Hessian's eigenvalues (stochastic Lanczos quadrature, rotation symmetry deflated)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def profile_figures(profiles: dict[str, pd.DataFrame], folder: str | Path, n_problems: int) -> list[Path]:
    """``performance_profile_passes.png`` and ``performance_profile_seconds.png``: for each target a
    panel of Dolan-More profiles, rho_s(tau) = share of problems that method s solves within tau
    times the best method's cost (tau on a log axis; rho(1): how often s is the fastest)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for unit in ("passes", "seconds"):
        keys = [k for k in TARGET_KEYS if f"{unit}-{k}" in profiles]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4.2), sharey=True, constrained_layout=True)
        for ax, key in zip(np.atleast_1d(axes), keys):
            prof = profiles[f"{unit}-{key}"]
            for j, method in enumerate(prof.columns):
                ax.step(prof.index, prof[method], where="post", label=method, lw=1.5,
                        color=plt.get_cmap("tab10")(j % 10), ls=("-", "--", ":")[j // 10 % 3])
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"tau (cost / best cost, {unit})")
            ax.set_title("validation plateau" if key == "val" else f"(f - f*)/|f*| <= {key}")
            ax.grid(True, which="both", alpha=0.3)
        np.atleast_1d(axes)[0].set_ylabel(f"share of the {n_problems} problems solved")
        np.atleast_1d(axes)[-1].legend(fontsize=7, loc="lower right")
        fig.suptitle(f"Performance profiles in {'data passes' if unit == 'passes' else 'seconds'}")
        path = folder / f"performance_profile_{unit}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _to_target(row, key: str) -> str:
    passes, sec = row.get(f"passes_to_{key}"), row.get(f"seconds_to_{key}")
    if _missing(passes):
        return "-" if row.get("reason") in NOT_RUN else "not reached"
    return f"{passes:.0f} ({sec:.2f}s)"


def _num(fmt: str):
    return lambda row, col: "-" if _missing(row.get(col)) else format(row.get(col), fmt)


# What the terminal and Markdown tables show: (header, column, formatter).
SHOWN = [("optimizer", "optimizer", lambda r, c: str(r[c])),
         ("stop", "reason", lambda r, c: str(r[c])),
         ("passes", "data_passes", _num(".0f")),
         ("seconds", "seconds", _num(".2f")),
         ("(f-f*)/|f*|", GAP, _num(".1e")),
         ("|g|/|g0|", "rel_grad_norm", _num(".1e"))] + \
        [(f"to {k}" if k != "val" else "to val plateau", k, lambda r, c: _to_target(r, c)) for k in TARGET_KEYS] + \
        [("best val", BEST_VAL, _num(".4f")), ("val_rmse", "val_rmse", _num(".4f")),
         ("test_rmse", "test_rmse", _num(".4f")), ("iters", "iterations", _num(".0f")),
         ("note", "note", lambda r, c: "" if _missing(r.get(c)) else str(r.get(c)))]


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = frame.to_dict("records")
    headers = [h for h, _, _ in SHOWN]
    return headers, [[fmt(row, col) for _, col, fmt in SHOWN] for row in rows]


def markdown_table(frame: pd.DataFrame) -> str:
    """The comparison table as GitHub Markdown (same columns and number formats as the terminal)."""
    return _markdown_rows(*_cells(frame))


def _markdown_rows(headers: list[str], cells: list[list[str]]) -> str:
    esc = lambda text: str(text).replace("|", "\\|")  # noqa: E731 - |g|/|g0| inside a cell must not end it
    md = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    md += ["| " + " | ".join(map(esc, r)) + " |" for r in cells]
    return "\n".join(md) + "\n"


def comparison_table(rows: list[dict]) -> pd.DataFrame:
    """One row per method (optimizers and baselines), the columns in :data:`TABLE_COLUMNS`."""
    frame = pd.DataFrame(rows)
    for col in TABLE_COLUMNS:
        if col not in frame:
            frame[col] = np.nan
    return frame[TABLE_COLUMNS + [c for c in frame.columns if c not in TABLE_COLUMNS]]


def format_table(frame: pd.DataFrame) -> str:
    """A fixed-width text table for the terminal. "to 1e-6" is the data passes (and seconds) a
    method took to reach ``(f - f*)/|f*| <= 1e-6``; "to val plateau", to come within 1e-4 of its
    own best validation RMSE."""
    headers, cells = _cells(frame)
    widths = [max(len(h), *(len(r[j]) for r in cells)) if cells else len(h) for j, h in enumerate(headers)]
    line = lambda vals: "  ".join(v.rjust(w) if 0 < j < len(vals) - 1 else v.ljust(w)
                                  for j, (v, w) in enumerate(zip(vals, widths))).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


# -- the case-study report ----------------------------------------------------------------------

def results_from_logged(children: list[dict]) -> dict[str, OptimizeResult]:
    """Rebuild optimizer histories from logged curves (what the report and its figures need)."""
    return {child["name"]: OptimizeResult(child["name"], np.empty(0), child["tags"].get("stop_reason", "?"),
                                          child["tags"].get("stop_message", ""), history_from_curves(child["curves"]))
            for child in children if child["curves"] and child["curves"].get("train_loss")}


def _names(items: list[tuple[str, float]], unit: str, fmt: str) -> str:
    return ", ".join(f"{n} ({format(v, fmt)}{unit})" for n, v in items)


def _ran(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of methods that ran (not baselines, failures or methods that do not apply)."""
    return table[~table["reason"].isin(NOT_RUN)]


def _ending(row) -> str:
    """Why a method stopped, from its row (its own message quoted: its words, not ours)."""
    rel = "" if _missing(row.get("rel_grad_norm")) else f", ||g||/||g0|| = {row['rel_grad_norm']:.1e}"
    reason = row["reason"]
    if reason == "converged":
        return f"converged{rel}"
    if reason == "max_passes":
        return f"its budget of data passes spent{rel}"
    if reason == "max_seconds":
        return f"its time budget spent (machine-dependent){rel}"
    if reason == "max_iter":
        return f"its iteration cap reached{rel}"
    if reason == "early_stopped":
        return "early stop: validation RMSE stopped improving"
    if reason == "diverged":
        return "diverged: the objective or its gradient is not finite"
    msg = str(row.get("message") or "").removeprefix("the method stopped on its own: ")
    return f"the method stopped on its own{rel}" + (f' ("{msg}")' if msg else "")


def findings(table: pd.DataFrame) -> list[str]:
    """Statements generated from the table's figures, true whatever the outcome, citing only
    numbers that are in the table: who reached each target and at what cost (ranked by data passes
    and by seconds to the target, never by final wall time, and only methods that ran), each
    method's plateau (its best validation RMSE), where each method stopped and why, which converged
    above f* or ended below it, which failed and which did not apply."""
    ran = _ran(table)
    return (_target_lines(ran) + _stop_lines(ran) + _f_star_lines(ran) + _not_run_lines(table)
            + _rmse_lines(table, ran))


def _target_lines(ran: pd.DataFrame) -> list[str]:
    """Per target: who reached it, ranked by passes and by seconds to it; who did not."""
    lines: list[str] = []
    if not len(ran):
        return lines
    for key in TARGET_KEYS:
        what = ("within 1e-4 of its own best validation RMSE" if key == "val"
                else f"(f - f*)/|f*| <= {key}")
        pcol, scol = f"passes_to_{key}", f"seconds_to_{key}"
        reached = ran[ran[pcol].notna()] if pcol in ran else ran.iloc[0:0]
        missed = [n for n in ran["optimizer"] if n not in set(reached["optimizer"])]
        if not len(reached):
            lines.append(f"No method {'came' if key == 'val' else 'reached'} {what} within its budget.")
            continue
        by_pass = sorted(zip(reached["optimizer"], reached[pcol]), key=lambda t: (t[1], t[0]))
        by_sec = sorted(zip(reached["optimizer"], reached[scol]), key=lambda t: (t[1], t[0]))
        text = f"To {what}: by data passes {_names(by_pass, ' passes', '.0f')}; by seconds {_names(by_sec, ' s', '.2f')}."
        if key == "val" and reached[BEST_VAL].notna().sum() > 1:  # each its own plateau: say where they are
            text += _plateaus(reached)
        if missed:
            text += f" Not reached: {', '.join(missed)}."
        lines.append(text)
    return lines


def _plateaus(reached: pd.DataFrame) -> str:
    best = sorted(((n, v) for n, v in zip(reached["optimizer"], reached[BEST_VAL]) if not _missing(v)),
                  key=lambda t: (t[1], t[0]))
    if best[0][1] == best[-1][1]:
        return f" Every plateau is at validation RMSE {best[0][1]:.4f}."
    return " The plateaus differ: best validation RMSE " + ", ".join(f"{n} {v:.4f}" for n, v in best) + "."


def _stop_lines(ran: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in ran.iterrows():
        iters = "" if _missing(row.get("iterations")) else f" in {row['iterations']:.0f} iterations"
        lines.append(f"{row['optimizer']} stopped after {row['data_passes']:.0f} data passes{iters} "
                     f"({row['seconds']:.2f} s): {_ending(row)}.")
    return lines


def _f_star_lines(ran: pd.DataFrame) -> list[str]:
    """Which methods converged above f* (non-convexity) and which ended below it."""
    lines = []
    notes = ran["note"].fillna("") if "note" in ran else pd.Series("", index=ran.index)
    above = ran[notes.str.contains(race.ABOVE_F_STAR, regex=False)]
    if len(above):
        kinds = {r.optimizer: _measured_kind(r.note) for r in above.itertuples()}
        pieces = [f"{r.optimizer} ((f - f*)/|f*| = {r.rel_gap:.1e}{'; ' + kinds[r.optimizer] if kinds[r.optimizer] else ''})"
                  for r in above.itertuples()]
        each = "each " if len(above) > 1 else ""
        if all(kinds.values()):
            tail = (f"met the gradient tolerance above f*, at {'stationary points' if len(above) > 1 else 'a stationary point'} "
                    "other than the reference's, of the kind the Hessian's smallest eigenvalue there says (on the "
                    "complement of the factors' rotation symmetry).")
        elif any(kinds.values()):
            tail = ("met the gradient tolerance above f*, near a stationary point other than the reference's; where no "
                    "kind is given, whether a local minimum or a saddle, only the curvature there can tell.")
        else:
            tail = ("met the gradient tolerance above f*, near a stationary point other than the reference's; whether "
                    "a local minimum or a saddle, only the curvature there can tell.")
        lines.append("The problem is non-convex: " + ", ".join(pieces) + f" {each}{tail}")
    below = ran[notes.str.contains(race.BELOW_F_STAR, regex=False)]
    if len(below):
        lines.append(", ".join(f"{r.optimizer} ((f - f*)/|f*| = {r.rel_gap:.1e})" for r in below.itertuples())
                     + " ended below f*, at a lower point than the reference solvers found.")
    return lines


def _measured_kind(note: str) -> str:
    """The kind of end point a note names after "converged above f*: " ("a local minimum,
    lambda_min 1.9e-07"), or "" where none was measured."""
    after = str(note).split(race.ABOVE_F_STAR, 1)[1] if race.ABOVE_F_STAR in str(note) else ""
    return after[2:].split(";")[0].strip() if after.startswith(": ") else ""


def _not_run_lines(table: pd.DataFrame) -> list[str]:
    lines = [f"{row['optimizer']} failed: {row.get('message') or 'an error'}."
             for _, row in table[table["reason"] == "failed"].iterrows()]
    return lines + [f"{row['optimizer']} was not run: {row.get('message') or NOT_APPLICABLE}."
                    for _, row in table[table["reason"] == NOT_APPLICABLE].iterrows()]


def _rmse_lines(table: pd.DataFrame, ran: pd.DataFrame) -> list[str]:
    """The spread of final validation and test RMSE over the methods that ran, and the baselines'."""
    scored = ran[ran["val_rmse"].notna()] if len(ran) else ran
    if not len(scored):
        return []
    vr, tr = scored["val_rmse"], scored["test_rmse"]
    if len(scored) == 1:
        text = f"Validation RMSE {vr.iloc[0]:.4f}, test RMSE {tr.iloc[0]:.4f}."
    else:
        span = lambda v: f"{v.min():.4f} to {v.max():.4f}" if f"{v.min():.4f}" != f"{v.max():.4f}" else None  # noqa: E731
        text = (f"Final validation RMSE spans {span(vr)} across the methods that ran" if span(vr)
                else f"Final validation RMSE is {vr.min():.4f} for every method that ran")
        text += f"; test RMSE {span(tr)}." if span(tr) else f"; test RMSE {tr.min():.4f} for every one."
    base = table[(table["reason"] == "baseline") & table["test_rmse"].notna()]
    if len(base):
        text += " Baselines' test RMSE: " + ", ".join(f"{r['optimizer']} {r['test_rmse']:.4f}"
                                                     for _, r in base.iterrows()) + "."
    return [text]




def negative_curvature_sentence(counts: dict[str, float]) -> str | None:
    """One sentence on the negative curvature each method's inner solver met, and what that method
    does with it; only methods that ran and met some (None: none did)."""
    met = {k: int(v) for k, v in counts.items() if v and not _missing(v) and v > 0}
    if not met:
        return None
    what = [REGISTRY[k].on_negative_curvature for k in met if k in REGISTRY and REGISTRY[k].on_negative_curvature]
    return ("Negative curvature met by the inner solvers (Hessian-vector products with v.Hv < 0): "
            + ", ".join(f"{k} {v}" for k, v in met.items()) + "." + (" " + "; ".join(what) + "." if what else ""))


def bits_sentence(blas_kernels: str | None) -> str:
    """What the run's figures depend on: seconds always on the machine; passes and iterates not,
    where the run's OpenBLAS ran the project's pinned kernel set (``pipeline.reproducible``)."""
    from pipeline.reproducible import BLAS_CORETYPE
    head = "Seconds are optimizer wall time on the machine that ran it. "
    if blas_kernels and blas_kernels.lower() == BLAS_CORETYPE.lower():
        return head + ("Data passes, iterates, losses, gaps and RMSEs are the same bits on any x86-64 CPU with AVX2 "
                       "and any thread count, with the pinned versions (constraints.txt; tests/test_reproducible.py).")
    return head + (f"This run's OpenBLAS ran {blas_kernels or 'unrecorded'} kernels, not the pinned {BLAS_CORETYPE}: "
                   "its passes and iterates may differ from another machine's in their last bits, and a path "
                   "near a degenerate minimum can then end elsewhere.")


def write_report(logged: dict, folder: str | Path) -> Path:
    """``report.md`` and its figures in ``folder`` from a logged comparison (see tracking.load_comparison)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parent = logged["parent"]
    results = results_from_logged(logged["children"])
    rows = []
    for child in logged["children"]:
        tags = child["tags"]
        reason = tags.get("stop_reason", "baseline")
        rows.append(table_row(child["name"], child["metrics"], reason, tags.get("end_note", ""),
                              tags.get("stop_message", "")))
    table = comparison_table(rows)
    p = parent["params"]
    pm = parent.get("metrics", {})
    f_star = pm.get("f_star")
    from pipeline.objectives import model_spec
    spec = model_spec(p.get("model", "mf"))
    hyper = ", ".join(f"{f.name} {p.get(f.name)}" for f in spec.hyperparameters())
    title = f"{parent['experiment']}: {spec.name}, " + ", ".join(f"{k} {p.get(k)}" for k in spec.headline) + \
        f", gtol {p.get('gtol')}"
    figs = figures([results], folder, title, [f_star]) if results else []
    neg = {c["name"]: c["metrics"].get("n_negative_curvature") for c in logged["children"]
           if c["metrics"].get("n_negative_curvature")}
    budget = " or ".join(x for x in (f"{p.get('max_passes')} data passes" if p.get("max_passes") not in (None, "None") else "",
                                     f"{p.get('max_seconds')} s" if p.get("max_seconds") not in (None, "None") else "") if x)
    costs = race.describe_costs(pm)
    text = [f"# Case study: optimizers on {spec.title} ({parent['experiment']})", "",
            f"MLflow run `{parent['run_id']}`; dataset `{p.get('dataset')}` ({p.get('n_train')} training, "
            f"{p.get('n_val')} validation, {p.get('n_test')} test ratings; split {p.get('split')}, seed {p.get('split_seed')}); "
            f"model {spec.name} ({spec.summary}): {hyper}. "
            f"Every method starts from the same point (seed {p.get('seed')}) under the same rule: stop at "
            f"||g||/||g0|| <= {p.get('gtol')} or when the budget ({budget or 'none'}) is spent.",
            "", "## The rules of the race", "",
            f"- Reference optimum: {parent['tags'].get('reference_optimum', 'not logged')}. Every curve and every "
            "target is measured against this one value, computed once per problem outside the race.",
            "- Cost is data passes (a loss+gradient, a Hessian-vector product, half an ALS sweep, an SGD epoch "
            "each count one) and optimizer seconds. Compiling the kernels, or loading them from numba's cache "
            + (f"({pm['compile_seconds']:.1f} s here) " if "compile_seconds" in pm else "")
            + "happens before any clock starts; validation scoring and logging are outside the clock.",
            ("- Measured cost of one operation in loss+gradient passes on this problem (median [quartiles] "
             "of interleaved calls at distinct points): " + costs
             + (f" (one loss+gradient: {1e3 * pm['seconds_loss_grad']:.2f} ms)." if "seconds_loss_grad" in pm else "."))
            if costs else "- Pass costs: not logged.",
            "- Methods are ranked by passes and seconds to reach (f - f*)/|f*| <= 1e-3, 1e-6 and 1e-9, and to come "
            "within 1e-4 of their own best validation RMSE; final wall time ranks nothing.",
            "", "## The objective and its derivatives", "", spec.derivation, "## The methods", ""]
    for name in results:
        text.append(f"- **{name}**: {REGISTRY[name].notes if name in REGISTRY else ''}")
    text += ["", "## Results", "", markdown_table(table), ""]
    for f in figs:
        text += [f"![{f.stem}]({f.name})", ""]
    text += ["## What the numbers say", ""] + [f"- {line}" for line in findings(table)]
    if (sentence := negative_curvature_sentence(neg)):
        text.append(f"- {sentence}")
    text += ["", *question_section(table, pm, results, neg, logged.get("spectrum"), folder)]
    text += ["", bits_sentence(p.get("blas_kernels")), ""]
    path = folder / "report.md"
    path.write_text("\n".join(text))
    from pipeline import explain, html
    html.write(path, folder / "report.html", f"Case study: {parent['experiment']}",
               {plain: mathml for plain, mathml in explain.FORMULAS.values()})
    return path


QUESTION = "When does Newton-CG beat gradient descent, and why?"


def question_section(table: pd.DataFrame, curvature: dict, results: dict, negative: dict,
                     spectrum: pd.DataFrame | None, folder: Path) -> list[str]:
    """The report's answer to :data:`QUESTION` (``pipeline.explain``): the formulas it rests on,
    the measured spectrum (figure and table), each method's costs, and the sentences."""
    from pipeline import explain
    points, costs = explain.why_table(table, curvature, results, negative)
    lines = [f"## {QUESTION}", "", "What the curvature predicts (a quadratic model near a minimum):", ""]
    lines += [f"    {plain}" for plain, _ in explain.FORMULAS.values()] + [""]
    if spectrum is not None and len(spectrum):
        spectrum_figure(spectrum, folder / "spectrum.png")
        lines += ["![spectrum](spectrum.png)", ""]
    if len(points):
        lines += ["The Hessian's spectrum off the rotation symmetry (Lanczos and LOBPCG on hessp; shares by "
                  "stochastic Lanczos quadrature):", "", _markdown(points.drop(columns="label")), ""]
    if len(costs):
        lines += ["Each method's cost per iteration and its observed rate (|g| over the last half of its passes):", "",
                  _markdown(costs), ""]
    lines += [f"- {line}" for line in explain.answer(table, curvature, results, negative)]
    return lines


def _markdown(frame: pd.DataFrame) -> str:
    return _markdown_rows(list(frame.columns), [list(row) for row in frame.itertuples(index=False)])


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
                     f"({last.max():.0%}, within {race.PROFILE_TAUS[-1]:.0f}x the best cost).")
    return lines
