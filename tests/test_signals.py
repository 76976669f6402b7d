"""Signals against a real process: SIGTERM and SIGHUP end the open runs KILLED with their points."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_marks_the_open_runs_killed_and_keeps_the_points(tmp_path, tracking_uri, sig):
    data = tmp_path / "small" / "u.data"  # experiment "small"
    subprocess.run([sys.executable, "-m", "pipeline", "data", "synth", "--out", str(data), "--users", "60",
                    "--items", "50", "--ratings", "1200", "--seed", "2"], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "compare", "--dataset", str(data), "--optimizers", "gd",
                             "--gtol", "0", "--max-passes", "100000000", "--max-seconds", "120", "--quiet",
                             "--no-models", "--data-dir", str(tmp_path / "d")],
                            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(tracking_uri)
    deadline = time.monotonic() + 90
    gd = None
    while time.monotonic() < deadline and gd is None:  # wait until gd is running and has flushed points
        time.sleep(0.5)
        exp = client.get_experiment_by_name("small")
        if exp is not None:
            runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == "gd"]
            if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
                gd = runs[0]
    assert gd is not None, proc.communicate(timeout=30)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted ({signal.Signals(sig).name})" in err and "Traceback" not in err
    runs = {r.info.run_name: r for r in client.search_runs([gd.info.experiment_id])}
    assert runs["gd"].info.status == "KILLED" and runs["compare-gd"].info.status == "KILLED"
    steps = sorted(m.step for m in client.get_metric_history(gd.info.run_id, "train_loss"))  # data passes
    seconds = client.get_metric_history(gd.info.run_id, "seconds")
    assert all(b > a for a, b in zip(steps, steps[1:])) and len(steps) > 1
    assert sorted(m.step for m in seconds) == steps  # every curve has every point up to the stop, none missing


def test_ui_on_a_port_in_use_says_so_and_exits_non_zero(tracking_uri, runner=None):
    """It printed the links, then "Address already in use", and exited 0."""
    import socket
    from click.testing import CliRunner
    from pipeline.cli import cli
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(cli, ["ui", "--port", str(port)])
    assert res.exit_code == 1 and f"port {port} on 127.0.0.1 is in use" in res.stderr and not res.stdout


def test_a_signal_stops_the_servers_whole_process_group(tmp_path):
    """`recsys ui` forwards SIGTERM to everything the server started (a server and a grandchild
    here, as uvicorn's workers and the job runner are), and exits 128 + 15."""
    import threading
    from pipeline.cli.errors import stop_on_signal
    from pipeline.cli.runs import _serve
    pids = tmp_path / "pids"
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
              "time.sleep(600)\n")
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, stop_on_signal)

    def send_when_started():
        end = time.monotonic() + 30
        while not (pids.exists() and pids.read_text()) and time.monotonic() < end:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=send_when_started, daemon=True).start()
    try:
        code = _serve([sys.executable, "-c", script], grace=5.0)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    assert code == 128 + signal.SIGTERM
    for pid in map(int, pids.read_text().split()):
        try:
            os.kill(pid, 0)
            alive = open(f"/proc/{pid}/stat").read().split()[2] != "Z"
        except (ProcessLookupError, FileNotFoundError):
            alive = False
        assert not alive, pid


@pytest.mark.slow
def test_recsys_ui_leaves_nothing_running_after_sigterm(tmp_path, tracking_uri):
    """The real MLflow UI: after SIGTERM to `recsys ui`, no process it started holds the port."""
    import socket
    import psutil
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--port", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end, up = time.monotonic() + 90, False
    while time.monotonic() < end and not up and proc.poll() is None:
        time.sleep(0.5)
        with socket.socket() as s:
            up = s.connect_ex(("127.0.0.1", port)) == 0
    assert up, proc.communicate(timeout=30)
    tree = psutil.Process(proc.pid).children(recursive=True)
    assert tree
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    gone, alive = psutil.wait_procs(tree, timeout=15)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again
