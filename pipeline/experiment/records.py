"""What the commands write to the tracker: one function per thing recorded, nothing else here.

The orchestrators (``compare``, ``study``, ``sweep``) fit and aggregate; at fixed points they hand
their plain results to these functions, which turn them into MLflow params, metrics, tags and
artifacts (through the tracker protocol: ``pipeline.tracking`` or ``pipeline.null_tracker``).
Only the live curve listener, which must see each iterate as it happens, is attached during a fit
(:func:`listeners`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from pipeline import report, schema
from pipeline.race import TO_TARGET
from pipeline.recommender import Recommender


def listeners(*maybe) -> tuple:
    """The listeners given, without the ``None`` ones (progress off, nothing tracked)."""
    return tuple(listener for listener in maybe if listener)


def keep(found: dict, name: str, value) -> None:
    """Record a run id or model URI (none when nothing is tracked)."""
    if value is not None:
        found[name] = value


def log_files(tracker, run_id: str, tables: dict[str, object], figures: Callable[[Path], list] | None = None) -> None:
    """Each of ``tables`` (file name -> a DataFrame, written as CSV, or text) and the figures
    ``figures(folder)`` draws, as artifacts of ``run_id``."""
    if not tracker.records:  # files made only to be logged
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for path in (figures(folder) if figures else []):
            tracker.log_artifact(run_id, path)
        for name, content in tables.items():
            path = folder / name
            if isinstance(content, pd.DataFrame):
                content.to_csv(path, index=False)
            else:
                path.write_text(str(content))
            tracker.log_artifact(run_id, path)


def final_metrics(metrics: dict, drop=()) -> dict:
    """A fit's metrics as logged once at its end: the curves' own values left to the curves."""
    return {k: v for k, v in metrics.items() if k not in schema.CURVE_ONLY and not k.startswith(tuple(drop))}


def record_baseline(tracker, name: str, params: dict, parent_id: str | None, metrics: dict) -> str | None:
    with tracker.run(name, {**params, "optimizer": name}, parent_id, {"kind": "baseline"}) as rid:
        tracker.log_metrics(rid, metrics)
    return rid


def record_fit(tracker, rid: str, result, metrics: dict, note: str) -> None:
    """A method's end: its final metrics (at its last step, the data passes it used) and why it stopped."""
    tracker.log_metrics(rid, final_metrics(metrics), step=int(result.final.data_passes))
    tracker.set_tags(rid, {"stop_reason": result.reason, "stop_message": result.message,
                           **({"end_note": note} if note else {})})


def record_model(tracker, rid: str, prepared, result, name: str) -> str | None:
    """The fit as an MLflow LoggedModel (a pyfunc serving it); its URI."""
    rec = Recommender.from_fit(prepared.objective, result.x, prepared.ratings, prepared.split.train)
    return tracker.log_model(rid, rec, name, step=int(result.final.data_passes))


def race_metrics(out) -> dict:
    """``f*`` and every method's gap and costs to the targets, flat (a comparison's or repeat's run)."""
    ref = out.prepared.reference
    flat = {"f_star": ref.f_star, "f_star_rel_grad_norm": ref.rel_grad_norm}
    for name, m in out.metrics.items():
        if name in out.results:
            flat.update({f"{name}_{k}": v for k, v in m.items() if k.startswith(TO_TARGET) or k == schema.GAP})
    return flat


def record_split(tracker, run_id: str, out, title: str, repeats: list | None = None) -> None:
    """A comparison's (or repeat's) table, Markdown table and figures."""
    parts = repeats or [out]
    f_stars = [r.prepared.reference.f_star if r.prepared.reference else None for r in parts]
    log_files(tracker, run_id, {"comparison.csv": out.table, "comparison.md": report.markdown_table(out.table)},
              lambda folder: report.figures([r.results for r in parts], folder, title, f_stars))


def record_comparison(tracker, parent_id: str, out, repeated: bool) -> None:
    """The parent run's summary: compile time and pass costs, the winner by validation RMSE, and
    (one split) the split's cold counts and the reference optimum."""
    prep = out.prepared
    tracker.log_metrics(parent_id, {"compile_seconds": out.compile_seconds, **out.pass_costs,
                                    **curvature_metrics(prep.curvature, prep.spectra)})
    if prep.spectra:
        frame = spectra_frame(prep.spectra)
        log_files(tracker, parent_id, {"spectrum.csv": frame},
                  lambda folder: [report.spectrum_figure(frame, folder / "spectrum.png")])
    best = out.best()
    if repeated:
        tracker.log_metrics(parent_id, out.metrics["_flat"])
    elif best:
        tracker.log_metrics(parent_id, {"best_val_rmse": out.metrics[best]["val_rmse"],
                                        "best_test_rmse": out.metrics[best]["test_rmse"]})
    if best:
        tracker.set_tags(parent_id, {"best_optimizer": best})
    tracker.set_tags(parent_id, {"mlflow.note.content": description(out)})
    if not repeated:
        tracker.set_tags(parent_id, {**{k: str(v) for k, v in prep.split.cold_counts().items()},
                                     "reference_optimum": prep.reference.note()})


SHARES = {"negative": 0.0, "below_1pct": 0.01}  # metric suffix -> eigenvalue bound as a share of lambda_max


def curvature_metrics(measured: dict, spectra: dict | None = None) -> dict:
    """``lambda_min_start``, ``lambda_max_optimum``, ``condition_preconditioned`` ..., the shares
    of the eigenvalue densities (:data:`SHARES`) and what measuring them all cost
    (``curvature_passes``), from ``{"start": Curvature, ...}`` and ``{"start": Spectrum, ...}``."""
    flat, spectra = {}, spectra or {}
    for label, c in measured.items():
        flat.update({f"lambda_min_{label}": c.lambda_min, f"lambda_max_{label}": c.lambda_max,
                     f"lambda_min_error_{label}": c.error})
        if c.lambda_min > 0:
            flat[f"condition_{label}"] = c.condition
    for label, s in spectra.items():
        if label in measured:
            flat.update({f"eigenvalues_{key}_share_{label}": s.share_below(bound * measured[label].lambda_max)
                         for key, bound in SHARES.items()})
    if measured:
        flat["curvature_passes"] = sum(c.passes for c in measured.values())  # each with its density's products
    return flat


def spectra_frame(spectra: dict) -> pd.DataFrame:
    """The eigenvalue densities as one table (``point``, ``eigenvalue``, ``weight``, ``dim``):
    what ``spectrum.png`` draws and the report reads back."""
    return pd.concat([pd.DataFrame({"point": label, "eigenvalue": s.nodes, "weight": s.weights, "dim": s.dim})
                      for label, s in spectra.items()], ignore_index=True)


def description(out) -> str:
    """The parent run's description in the MLflow UI (Markdown): the race's table and what the
    numbers say, the same sentences ``recsys compare`` prints, and where f* came from."""
    ref = out.prepared.reference
    lines = ["**The race** (budget and axis: data passes; each method from the same start, gaps against "
             f"the reference optimum: {ref.note() if ref else 'not computed'})", "",
             report.markdown_table(out.table), "", "**What the numbers say**", ""]
    lines += [f"- {line}" for line in report.findings(out.table)]
    return "\n".join(lines) + "\n"


REPORT_FILES = ("report.md", "report.html")  # at the comparison's artifact root, beside its figures


def record_report(tracker, parent_id: str, folder: Path | None = None, logged: dict | None = None) -> Path | None:
    """The case study (``report.write_report``) of the logged comparison ``parent_id``, read back
    from the store as ``recsys report`` reads it: written to ``folder`` (a temporary one if None)
    and :data:`REPORT_FILES` logged at the run's root, where MLflow's artifact viewer shows the
    HTML. ``logged``: the comparison already read. The Markdown's path (None with no ``folder``)."""
    if not tracker.records:
        return None
    logged = logged or tracker.load_comparison(parent_id)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder or tmp)
        path = report.write_report(logged, where)
        for name in REPORT_FILES:
            tracker.log_artifact(parent_id, where / name)
    return path if folder else None


def record_problem(tracker, parent_id: str, label: str, params: dict, reference, rows: list[dict]) -> None:
    """One problem of a study: its ``f*`` and every method's costs to target, one run."""
    with tracker.run(label, params, parent_id, {"kind": "problem"}) as pid:
        tracker.log_metrics(pid, {"f_star": reference.f_star, "f_star_rel_grad_norm": reference.rel_grad_norm,
                                  **{f"{r['optimizer']}_{k}": r[k] for r in rows for k in r
                                     if k.startswith(TO_TARGET) or k in (schema.GAP, "data_passes")}})
        tracker.set_tags(pid, {f"{r['optimizer']}_stop": r["reason"] for r in rows})


def record_study(tracker, parent_id: str, out, n_problems: int) -> None:
    """The study's profiles (figures and their values at tau = 1 and at the largest tau), the
    per-problem CSV and the headline."""
    log_files(tracker, parent_id, {"study.csv": out.runs,
                                   "headline.md": "\n".join(f"- {line}" for line in out.headline) + "\n"},
              lambda folder: report.profile_figures(out.profiles, folder, n_problems))
    flat = {}
    for name, prof in out.profiles.items():
        for method in prof.columns:
            flat[f"{method}_rho1_{name}"] = float(prof[method].iloc[0])
            flat[f"{method}_solved_{name}"] = float(prof[method].iloc[-1])
    tracker.log_metrics(parent_id, flat)


def record_sweep(tracker, parent_id: str, out) -> None:
    """The sweep's winner (tags), its refit's test metrics, the edges it sits on, the trials CSV."""
    tracker.log_metrics(parent_id, {"best_val_rmse": float(out.trials["val_rmse"].min()), **out.test_metrics})
    tracker.set_tags(parent_id, {f"best_{k}": v for k, v in out.best.items()})
    if out.edges:
        tracker.set_tags(parent_id, {"winner_on_edge": "; ".join(out.edges)})
    log_files(tracker, parent_id, {"trials.csv": out.trials.drop(columns=["run_id"])})
