"""Reading what was logged: report, ui, and runs repair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from pipeline.cli import cli
from pipeline.cli.errors import input_errors
from pipeline.cli.options import TRACKING_URI
from pipeline.cli.output import note_repaired
from pipeline.cli.types import InputError
from pipeline.config import default_tracking_uri, project_root


@cli.command()
@click.option("--run-id", default=None, help="The comparison's parent run [default: the newest finished comparison; one still running is refused].")
@click.option("--experiment", default=None, help="Look for the newest finished comparison in this experiment only.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for report.md and its figures [default: reports/<experiment>-<run>].")
@TRACKING_URI
@input_errors
def report(run_id, experiment, out_dir, tracking_uri):
    """Write the case study of a logged comparison (Markdown, its PNG figures, and one self-contained
    HTML page) and log report.md and report.html at its run's artifact root."""
    from pipeline.experiment import records
    from pipeline.tracking import MlflowTracker, path_component
    tracker = MlflowTracker(tracking_uri or default_tracking_uri(), create=False)
    try:
        run_id = run_id or tracker.latest_comparison(experiment)
        logged = tracker.load_comparison(run_id)
    except LookupError as exc:
        raise InputError(str(exc)) from None
    except Exception as exc:  # an unknown run id comes back as an MLflow error
        raise InputError(f"cannot read run {run_id}: {str(exc).splitlines()[0]}") from None
    status = logged["parent"]["status"]
    if status != "FINISHED":
        raise InputError(f"comparison {run_id} is {status}: "
                         + ("wait until it finishes (or `recsys runs repair` if its process is gone)"
                            if status == "RUNNING" else "it did not finish, so its race is incomplete; run it again"))
    name = path_component(f"{logged['parent']['experiment']}-{run_id[:8]}")
    folder = Path(out_dir or project_root() / "reports" / name)
    path = records.record_report(tracker, run_id, folder, logged)
    click.echo(f"wrote {path} and {path.with_suffix('.html')} (and logged both at run {run_id}'s artifact root)")


@cli.group()
def runs():
    """Look after the runs in the MLflow store."""


@runs.command()
@TRACKING_URI
@input_errors
def repair(tracking_uri):
    """Mark FAILED the RUNNING runs of this machine whose process is gone (killed with SIGKILL, a
    power loss). Every command that logs runs does this check when it starts."""
    from pipeline.tracking import MlflowTracker
    repaired = MlflowTracker(tracking_uri or default_tracking_uri()).repair()
    note_repaired(repaired)
    click.echo(f"{len(repaired)} run(s) repaired")


@cli.command()
@TRACKING_URI
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@input_errors
def ui(tracking_uri, port):
    """Start the MLflow UI on 127.0.0.1 for the project's runs (Ctrl-C, SIGTERM or SIGHUP stops it
    and every process it started)."""
    from pipeline.tracking import UI_HOST, MlflowTracker, ui_command
    uri = tracking_uri or default_tracking_uri()
    tracker = MlflowTracker(uri, create=False)
    if not _port_free(UI_HOST, port):
        raise click.ClickException(f"port {port} on {UI_HOST} is in use (another MLflow UI?): choose another --port")
    base = f"http://127.0.0.1:{port}"
    click.echo(f"MLflow UI: {base}/#/experiments?workflowType=machine_learning  (store: {uri})")
    for name, links in tracker.experiment_links(base).items():
        click.echo(f"  {name}: {links['experiment']}")
        if "compare" in links:
            click.echo(f"    latest comparison: {links['compare']}")
        if "race" in links:
            click.echo(f"    its race over data passes: {links['race']}")
    sys.exit(_serve(ui_command(uri, port=port)))


def _port_free(host: str, port: int) -> bool:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _serve(command: list[str], grace: float = 10.0) -> int:
    """Run the server ``command`` in its own process group until it exits or this process is told
    to stop (Ctrl-C, SIGTERM, SIGHUP: ``stop_on_signal``); then the whole group (the server, its
    workers, job runners and consumers) gets SIGTERM, and SIGKILL after ``grace`` seconds. The
    server's exit code, or 128 + the signal that stopped it."""
    import os
    import signal
    from pipeline.cli.errors import SIGNAL
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        number = SIGNAL["number"] or signal.SIGINT
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                _wait_group(proc.pid, wait)
                break
            except subprocess.TimeoutExpired:
                continue
        click.echo(f"\nstopped the MLflow UI ({signal.Signals(number).name})", err=True)
        return 128 + number


def _wait_group(pgid: int, seconds: float) -> None:
    """Until no process of group ``pgid`` is left (TimeoutExpired after ``seconds``)."""
    import os
    import time
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise subprocess.TimeoutExpired(f"process group {pgid}", seconds)
