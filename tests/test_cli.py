"""The CLI through click's CliRunner: the happy path, and one line + exit 2 on bad input."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from pipeline.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def small_file(tmp_path, runner):
    out = tmp_path / "small" / "u.data"
    res = runner.invoke(cli, ["data", "synth", "--out", str(out), "--users", "60", "--items", "50",
                              "--ratings", "1200", "--seed", "2"])
    assert res.exit_code == 0, res.output
    return out


def test_data_synth_writes_the_default_shape(tmp_path, runner):
    out = tmp_path / "u.data"
    res = runner.invoke(cli, ["data", "synth", "--out", str(out)])
    assert res.exit_code == 0 and "100,000 ratings, 943 users, 1,682 items" in res.output
    assert len(out.read_text().splitlines()) == 100_000


def test_compare_prints_the_table_and_links_and_logs(tmp_path, runner, small_file, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--rank", "3", "--max-iter", "200",
                              "--max-seconds", "20", "--optimizers", "gd,newton-cg"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    header = next(line for line in out.splitlines() if line.startswith("optimizer"))
    for col in ("iterations", "n_fun", "n_grad", "n_hessp", "seconds", "train_loss", "grad_norm", "val_rmse", "test_rmse"):
        assert col in header
    rows = {line.split()[0] for line in out.splitlines() if line and line.split()[0] in
            {"gd", "newton-cg", "global-mean", "biases-only"}}
    assert rows == {"gd", "newton-cg", "global-mean", "biases-only"}
    assert re.search(r"http://127\.0\.0\.1:5000/#/experiments/\d+\?workflowType=machine_learning", out)
    assert "#/compare-runs?runs=" in out
    assert (tmp_path / "mlartifacts" / "small").is_dir()  # artifacts next to the store, not scattered


def test_train_with_one_optimizer_and_no_tracking(runner, small_file):
    res = runner.invoke(cli, ["train", "--optimizer", "lbfgs", "--dataset", str(small_file), "--rank", "2",
                              "--no-tracking", "--quiet", "--max-iter", "50"])
    assert res.exit_code == 0, res.output
    assert "lbfgs" in res.stdout and "http://" not in res.stdout


def test_check_grad_prints_small_errors(runner, small_file):
    res = runner.invoke(cli, ["check-grad", "--dataset", str(small_file), "--rank", "3"])
    assert res.exit_code == 0, res.output
    values = dict(re.findall(r"^(\S+)\s+([0-9.e+-]+)", res.stdout, re.M))
    assert {"init_grad_rel_error", "init_hessp_rel_error", "random_hessp_symmetry_error"} <= set(values)
    assert max(float(v) for v in values.values()) < 1e-5


def test_config_file_supplies_defaults_and_flags_win(tmp_path, runner, small_file):
    cfg = tmp_path / "recsys.toml"
    cfg.write_text(f'[defaults]\ndataset = "{small_file}"\nrank = 2\n\n[train]\noptimizer = "gd"\nmax_iter = 5\n')
    res = runner.invoke(cli, ["--config", str(cfg), "train", "--no-tracking", "--quiet"])
    assert res.exit_code == 0, res.output
    gd_row = next(line for line in res.stdout.splitlines() if line.startswith("gd "))
    assert gd_row.split()[1] == "5"  # iterations from the config file
    res = runner.invoke(cli, ["--config", str(cfg), "train", "--no-tracking", "--quiet", "--max-iter", "3"])
    assert next(line for line in res.stdout.splitlines() if line.startswith("gd ")).split()[1] == "3"


@pytest.mark.parametrize("args, message", [
    (["compare", "--dataset", "/nonexistent/u.data"], "no such file"),
    (["compare", "--optimizers", "gd,adam"], "unknown optimizer adam"),
    (["train", "--optimizer", "adam"], "'adam' is not one of"),
    (["compare", "--rank", "0"], "0 is not in the range x>=1"),
    (["compare", "--reg", "-0.1"], "-0.1 is not in the range x>=0"),
    (["compare", "--reg-bias", "-1"], "-1.0 is not in the range x>=0"),
    (["compare", "--split", "0.5,0.5"], "expected three non-negative fractions"),
    (["--config", "/nonexistent.toml", "compare"], "cannot read config"),
])
def test_bad_input_is_one_line_and_exit_2(runner, args, message):
    res = runner.invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert message in res.stderr
    assert "Traceback" not in res.output


def test_bad_file_content_is_one_line_and_exit_2(tmp_path, runner):
    bad = tmp_path / "u.data"
    bad.write_text("1\t2\t4\t100\n1\t3\tseven\t101\n")
    res = runner.invoke(cli, ["compare", "--dataset", str(bad), "--no-tracking"])
    assert res.exit_code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: {bad}, line 2: rating 'seven' is not a finite number"]


def test_every_command_has_help(runner):
    for args in (["--help"], ["compare", "--help"], ["train", "--help"], ["check-grad", "--help"],
                 ["data", "synth", "--help"], ["ui", "--help"]):
        res = runner.invoke(cli, args)
        assert res.exit_code == 0 and "Usage:" in res.output
    assert "--max-seconds" in runner.invoke(cli, ["compare", "--help"]).output


def test_config_reaches_the_nested_synth_command(tmp_path, runner):
    cfg = tmp_path / "recsys.toml"
    out = tmp_path / "s.data"
    cfg.write_text(f'[synth]\nusers = 30\nitems = 20\nratings = 300\nout = "{out}"\n')
    res = runner.invoke(cli, ["--config", str(cfg), "data", "synth"])
    assert res.exit_code == 0, res.output
    assert "300 ratings, 30 users, 20 items" in res.output and out.exists()


def test_python_dash_m_pipeline_runs():
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "compare" in res.stdout


@pytest.mark.slow
def test_default_comparison_newton_cg_reaches_the_shared_tolerance(runner):
    """What `make train` runs, on the embedded default dataset, without tracking."""
    res = runner.invoke(cli, ["compare", "--no-tracking", "--quiet", "--optimizers", "newton-cg",
                              "--max-seconds", "120"])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.stdout.splitlines() if line.startswith("newton-cg")).split()
    assert row[-1] == "converged"
    assert float(row[8]) < 0.86  # validation RMSE well below the biases-only baseline (~0.92)
