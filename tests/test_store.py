"""The MLflow store under unlucky first uses and failures: built atomically, never half-built,
never created by a command that only reads, one line when it cannot be used."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from pipeline.cli import cli

RACE = ("import sys; from pipeline.tracking import MlflowTracker; "
        "MlflowTracker(sys.argv[1]).use_experiment('e'); print('ok')")


def test_two_first_uses_at_once_both_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", RACE, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(o.strip() == "ok" for o, _ in outs)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".building")]  # nothing left aside


def test_a_half_built_store_is_one_line_naming_the_fix(tmp_path):
    db = tmp_path / "half.db"
    with sqlite3.connect(db) as con:  # what an interrupted table creation leaves: some tables, no version
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256))")
    res = CliRunner().invoke(cli, ["compare", "--tracking-uri", f"sqlite:///{db}", "--max-passes", "5", "-q"])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot be used" in lines[0] and f"mv {db} {db}.broken" in lines[0]


def test_reading_commands_never_create_a_store(tmp_path):
    db = tmp_path / "typo.db"
    for args in (["recommend", "--model-uri", "runs:/x/model", "--user", "1"], ["report"]):
        res = CliRunner().invoke(cli, args + ["--tracking-uri", f"sqlite:///{db}"])
        assert res.exit_code == 1 and f"no MLflow store at {db}" in res.stderr, res.output
    assert not db.exists()


def test_a_server_that_does_not_answer_is_one_line_within_10_s(tmp_path):
    start = time.monotonic()
    res = CliRunner().invoke(cli, ["compare", "--tracking-uri", "http://127.0.0.1:9", "--max-passes", "5", "-q",
                                   "--data-dir", str(tmp_path)])
    assert time.monotonic() - start < 10
    assert res.exit_code == 1 and "no MLflow tracking server answers at http://127.0.0.1:9" in res.stderr, res.output
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1


# -- a full disk and read-only places (issue 12, findings 4 and 8) --------------------------------
def _small_compare(tmp_path, tracking_uri, max_passes=3000):
    data = tmp_path / "small" / "u.data"  # experiment "small"
    if not data.exists():
        assert CliRunner().invoke(cli, ["data", "synth", "--out", str(data), "--users", "60", "--items", "50",
                                        "--ratings", "1200", "--seed", "2"]).exit_code == 0
    return [sys.executable, "-m", "pipeline", "compare", "--dataset", str(data), "--optimizers", "gd,lbfgs",
            "--max-passes", str(max_passes), "-q", "--tracking-uri", tracking_uri, "--data-dir", str(tmp_path / "d")]


def _error_lines(stderr: str) -> list[str]:
    """What the command said beyond its progress notes: one line is what users should get."""
    assert "Traceback" not in stderr, stderr
    notes = ("dataset ", "kernels ", "reference optimum", "curvature at ", "one operation costs")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(notes)]


def _statuses(tracking_uri: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_name: r.info.status for r in client.search_runs(exps)}


def _read_only(folder, command: list[str]) -> list[str]:
    """``command`` run with ``folder`` read-only: by its mode for a user, by a read-only bind mount
    in a private mount namespace for root (whom file modes do not stop)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(folder), *command]


def test_a_full_disk_is_one_line_and_leaves_no_run_open(tmp_path, tracking_uri):
    """Writes that fail for lack of space (here: a file size limit just above the store's size, so
    the first curve batch cannot be written) end in one line, exit 1, and no run left RUNNING."""
    import resource
    import signal
    command = _small_compare(tmp_path, tracking_uri)
    room = os.path.getsize(tracking_uri[len("sqlite:///"):]) + 40_000

    def little_room():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG) rather than kill the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
    res = subprocess.run(command, preexec_fn=little_room, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: the MLflow store failed") and "disk" in lines[0], lines
    statuses = _statuses(tracking_uri)
    assert statuses["gd"] == "FAILED" and "RUNNING" not in statuses.values(), statuses


def _unshare_works() -> bool:
    return os.geteuid() != 0 or subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="root without the right to mount: no way to make a folder read-only")
def test_a_read_only_store_is_one_line(tmp_path, tracking_uri):
    import shutil
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(tracking_uri[len("sqlite:///"):], folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    res = subprocess.run(_read_only(folder, _small_compare(tmp_path, uri, 50)), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and _error_lines(res.stderr) == [
        "Error: the MLflow store failed: attempt to write a readonly database"], res.stderr
    res = subprocess.run(_read_only(folder, _small_compare(tmp_path, f"sqlite:///{folder / 'new.db'}", 50)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    [line] = _error_lines(res.stderr)
    assert line.startswith(f"Error: cannot create the MLflow store {folder / 'new.db'}"), line
    assert not (folder / "new.db").exists()


@pytest.mark.skipif(not _unshare_works(), reason="root without the right to mount: no way to make a folder read-only")
def test_a_read_only_artifact_folder_is_one_line_and_the_runs_failed(tmp_path, tracking_uri):
    from mlflow.tracking import MlflowClient
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    MlflowClient(tracking_uri).create_experiment("small", artifact_location=(artifacts / "small").as_uri())
    res = subprocess.run(_read_only(artifacts, _small_compare(tmp_path, tracking_uri, 50)), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    [line] = _error_lines(res.stderr)
    assert line.startswith(f"Error: {artifacts / 'small'}"), line
    statuses = _statuses(tracking_uri)
    assert statuses["gd"] == "FAILED" and "RUNNING" not in statuses.values(), statuses
