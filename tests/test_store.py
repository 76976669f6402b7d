"""The MLflow store under unlucky first uses and failures: built atomically, never half-built,
never created by a command that only reads, one line when it cannot be used."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

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
