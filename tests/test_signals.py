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
    steps = [m.step for m in client.get_metric_history(gd.info.run_id, "train_loss")]
    assert steps == list(range(len(steps))) and len(steps) > 1  # every point up to the stop, none missing
