"""What a command prints while it works (progress of fits and downloads), and the tracker it logs to."""

from __future__ import annotations

import time

import click

from pipeline.config import default_tracking_uri, project_root
from pipeline.optim.base import IterationRecord


class DownloadProgress:
    """Prints a download's progress at most twice a second."""

    def __init__(self):
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or (total and done >= total):
            self._last = now
            of = f" of {total / 1e6:,.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
            click.echo(f"  downloading: {done / 1e6:,.1f}{of}", err=True)


class Progress:
    """Prints an iterate at most every ``every`` seconds (and the first of each optimizer)."""

    def __init__(self, every: float = 1.0):
        self.every, self._last, self._name = every, 0.0, None

    def __call__(self, name: str, r: IterationRecord) -> None:
        now = time.monotonic()
        if name != self._name or now - self._last >= self.every:
            self._name, self._last = name, now
            click.echo(f"  {name:<10} it {r.iteration:>5}  f {r.loss:.8f}  |g|/|g0| {r.rel_grad_norm:.2e}  "
                       f"val_rmse {r.val_rmse:.4f}  {r.seconds:6.1f}s  hessp {r.n_hessp}", err=True)


def tracker_for(kw: dict):
    if kw.get("no_tracking"):
        from pipeline.null_tracker import NullTracker
        return NullTracker()
    from pipeline.tracking import MlflowTracker
    tracker = MlflowTracker(kw.get("tracking_uri") or default_tracking_uri(), artifact_root=project_root() / "mlartifacts")
    note_repaired(tracker.repair())  # the cheap check at start: runs left RUNNING by a killed process
    return tracker


def note_repaired(run_ids: list[str]) -> None:
    if run_ids:
        click.echo(f"note: {len(run_ids)} run(s) left RUNNING by a process that is gone were marked FAILED: "
                   + ", ".join(r[:8] for r in run_ids), err=True)
