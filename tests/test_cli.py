"""The CLI through click's CliRunner: the happy path, and one line + exit 2 on bad input."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from pipeline.cli import cli


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
    for col in ("stop", "passes", "seconds", "(f-f*)/|f*|", "|g|/|g0|", "to 1e-3", "to 1e-6", "to 1e-9",
                "to val plateau", "val_rmse", "test_rmse"):
        assert col in header
    assert "To (f - f*)/|f*| <= 1e-3" in out or "No method reached (f - f*)/|f*| <= 1e-3" in out
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
    assert gd_row.split()[1] == "max_iter" and "in 5 iterations" in res.stdout  # from the config file
    res = runner.invoke(cli, ["--config", str(cfg), "train", "--no-tracking", "--quiet", "--max-iter", "3"])
    assert "in 3 iterations (" in res.stdout and "its iteration cap reached" in res.stdout


@pytest.mark.parametrize("args, message", [
    (["compare", "--dataset", "/nonexistent/u.data"], "no such file"),
    (["compare", "--optimizers", "gd,adam"], "unknown optimizer adam"),
    (["train", "--optimizer", "adam"], "'adam' is not one of"),
    (["compare", "--rank", "0"], "0 is not in the range x>=1"),
    (["compare", "--reg", "-0.1"], "-0.1 is not in the range x>=0"),
    (["compare", "--reg-bias", "-1"], "-1.0 is not in the range x>=0"),
    (["compare", "--fractions", "0.5,0.5"], "expected three non-negative fractions"),
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
def test_default_budget_lets_every_convergent_method_converge(runner, tmp_path):
    """What `make train` runs, on the embedded default dataset, without tracking: under the default
    budget of 4,000 data passes Newton-CG, L-BFGS and ALS meet the shared tolerance."""
    res = runner.invoke(cli, ["compare", "--no-tracking", "--quiet", "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    header = next(line for line in lines if line.startswith("optimizer")).split()
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:1] and line.split()[0] in
            ("gd", "gd-bb", "newton-cg", "lbfgs", "als")}
    assert set(rows) == {"gd", "gd-bb", "newton-cg", "lbfgs", "als"}
    for name in ("newton-cg", "lbfgs", "als"):
        assert rows[name][1] == "converged", rows[name]
        assert int(rows[name][2]) <= 4000
    assert rows["gd"][1] == "max_passes"


from tests.test_readers import BAD  # noqa: E402


@pytest.mark.parametrize("name, make, message", BAD, ids=[b[0] + ":" + b[2][:20] for b in BAD])
def test_bad_files_from_the_cli_exit_2_and_leave_no_run_open(tmp_path, runner, tracking_uri, monkeypatch,
                                                             name, make, message):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / name
    make(p)
    res = runner.invoke(cli, ["compare", "--dataset", str(p), "--quiet"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    assert not [r for r in client.search_runs(exps) if r.info.status == "RUNNING"]


@pytest.mark.parametrize("args, message", [
    (["--fractions", "0,0.5,0.5"], "train > 0"),
    (["--dataset", "ml-7k"], "no such file"),
    (["--split", "user", "--last-k", "0"], "0 is not in the range x>=1"),
    (["--folds", "1", "--split", "kfold"], "1 is not in the range x>=2"),
    (["--rating-scale", "5,1"], "the low end must be below the high end"),
    (["--min-user-ratings", "100000"], "no rating is left"),
    (["--train", "/nonexistent.base"], "needs both --train and --test"),
])
def test_bad_data_options_exit_2(runner, args, message):
    res = runner.invoke(cli, ["compare", "--no-tracking", "--quiet", *args])
    assert res.exit_code == 2, res.output
    assert message in res.stderr


def test_kfold_compare_logs_folds_with_mean_and_spread(tmp_path, runner, small_file, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--split", "kfold", "--folds", "3",
                              "--rank", "2", "--max-iter", "30", "--optimizers", "lbfgs", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "mean over 3 repeats" in res.stdout and "test_rmse_std" in res.stdout
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("small")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("kind") == "comparison")
    folds = [r for r in runs if r.data.tags.get("kind") == "repeat"]
    assert len(folds) == 3 and all(f.data.tags["mlflow.parentRunId"] == parent.info.run_id for f in folds)
    fold_ids = {f.info.run_id for f in folds}
    lbfgs_runs = [r for r in runs if r.info.run_name == "lbfgs"]
    assert len(lbfgs_runs) == 3 and {r.data.tags["mlflow.parentRunId"] for r in lbfgs_runs} == fold_ids
    per_fold = [r.data.metrics["test_rmse"] for r in lbfgs_runs]
    assert parent.data.metrics["lbfgs_test_rmse_mean"] == pytest.approx(sum(per_fold) / 3)
    assert parent.data.metrics["lbfgs_test_rmse_std"] > 0


def test_predefined_split_from_the_cli(tmp_path, runner):
    from tests.test_readers import ROWS, udata_text
    (tmp_path / "u1.base").write_text(udata_text(ROWS[:4]) + "".join(f"{u}\t{i}\t3\t1\n" for u in range(5, 20) for i in range(40, 50)))
    (tmp_path / "u1.test").write_text(udata_text(ROWS[4:]))
    res = runner.invoke(cli, ["train", "--train", str(tmp_path / "u1.base"), "--test", str(tmp_path / "u1.test"),
                              "--optimizer", "lbfgs", "--rank", "2", "--no-tracking", "--quiet", "--max-iter", "20"])
    assert res.exit_code == 0, res.output
    assert "split 154/0/1" in res.stderr


def test_data_split_writes_files_other_tools_can_read(tmp_path, runner, small_file):
    out = tmp_path / "split"
    res = runner.invoke(cli, ["data", "split", str(small_file), "--out", str(out), "--split", "temporal"])
    assert res.exit_code == 0, res.output
    from pipeline.data import ReadOptions, read_ratings
    sizes = [len(read_ratings(out / f"{p}.tsv", ReadOptions(format="udata"))) for p in ("train", "validation", "test")]
    assert sum(sizes) == 1200


def test_data_describe(runner, small_file):
    res = runner.invoke(cli, ["data", "describe", str(small_file), "--split", "user", "--last-k", "2"])
    assert res.exit_code == 0, res.output
    assert "1,200 ratings, 60 users" in res.stdout and "ratings per user: q0" in res.stdout
    assert "user split: train" in res.stdout


def test_parsed_files_are_cached_in_the_data_dir_unless_told_not_to(runner, small_file, tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    for folder, flag in ((on, "--cache"), (off, "--no-cache")):
        for _ in range(2):  # the second run reads the entry the first one wrote
            res = runner.invoke(cli, ["data", "describe", str(small_file), "--data-dir", str(folder), flag])
            assert res.exit_code == 0, res.output
            assert "1,200 ratings, 60 users" in res.stdout
    assert len(list((on / "cache").glob("*.npz"))) == 1
    assert not (off / "cache").exists()


def test_seeds_make_repeats_with_a_band_figure(tmp_path, runner, small_file, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--seeds", "0,1", "--rank", "2",
                              "--max-iter", "15", "--optimizers", "gd,als", "--quiet"])
    assert res.exit_code == 0, res.output
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("small")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("kind") == "comparison")
    assert {r.info.run_name for r in runs if r.data.tags.get("kind") == "repeat"} == {"seed-0", "seed-1"}
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"convergence.png", "convergence_passes.png", "val_rmse.png", "comparison.csv", "comparison.md"} <= files
    assert parent.data.params["seeds"] == "0,1"
    assert "als_test_rmse_std" in parent.data.metrics


def test_report_from_a_logged_comparison(tmp_path, runner, small_file, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--rank", "2", "--max-iter", "40",
                              "--optimizers", "gd,newton-cg,trust-ncg", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["report", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "rep" / "report.md").read_text()
    for part in ("## The objective and its derivatives", "## The methods", "**newton-cg**", "## Results",
                 "| optimizer |", "![convergence](convergence.png)", "## What the numbers say"):
        assert part in text, part
    assert (tmp_path / "rep" / "convergence_passes.png").stat().st_size > 1000
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("small")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("kind") == "comparison")
    root = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "spectrum.png", "spectrum.csv"} <= root  # compare logged them; report again
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<math display=\"block\"" in page and "data:image/png;base64," in page and 'src="convergence' not in page
    assert "## When does Newton-CG beat gradient descent, and why?" in text and "![spectrum](spectrum.png)" in text


def test_report_refuses_an_unfinished_comparison_and_keeps_names_out_of_paths(tmp_path, runner, small_file,
                                                                             tracking_uri, monkeypatch):
    """Issue 22, classes 7 and 11: `recsys report` on a comparison still running wrote an
    incomplete report into the live run; an experiment renamed ``../../../../tmp/x`` on a shared
    store made it write outside reports/."""
    from mlflow.tracking import MlflowClient
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "recsys"\n')
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--rank", "2", "--max-iter", "20",
                              "--optimizers", "gd,lbfgs", "--quiet"])
    assert res.exit_code == 0, res.output
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("small")
    client.rename_experiment(exp.experiment_id, "../../../../" + str(tmp_path / "escaped").lstrip("/"))
    live = client.create_run(exp.experiment_id, tags={"kind": "comparison"}, run_name="compare-live")
    res = runner.invoke(cli, ["report", "--run-id", live.info.run_id])
    assert res.exit_code == 2 and f"comparison {live.info.run_id} is RUNNING: wait" in res.stderr, res.output
    assert not client.list_artifacts(live.info.run_id)
    res = runner.invoke(cli, ["report"])  # the newest finished comparison, not the live one
    assert res.exit_code == 0, res.output
    [folder] = (tmp_path / "reports").iterdir()
    assert (folder / "report.md").is_file() and folder.name.startswith("_") and "/" not in folder.name
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.parent.glob("*escaped*"))


def test_an_experiment_named_dot_dot_keeps_its_artifacts_under_the_root(tmp_path):
    from pipeline.tracking import MlflowTracker, path_component
    assert [path_component(n) for n in ("..", ".", "", "a/b", "../../x", "ml-100k", "ünï")] == \
        ["_", "_", "_", "a_b", "__.._x", "ml-100k", "_n_"]
    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'm.db'}", artifact_root=tmp_path / "mlruns")
    tracker.use_experiment("..")
    location = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    assert location.startswith((tmp_path / "mlruns").as_uri() + "/") and not location.endswith("/..")


def test_report_without_runs_is_one_line(runner, tracking_uri):
    res = runner.invoke(cli, ["report"])
    assert res.exit_code == 2 and "no finished comparison run" in res.stderr


def test_ui_prints_links_on_its_own_port(runner, tracking_uri, monkeypatch, small_file, tmp_path):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--rank", "2", "--max-iter", "5",
                              "--optimizers", "gd", "--quiet", "--no-models"])
    assert res.exit_code == 0, res.output
    import pipeline.cli.runs as cli_module
    monkeypatch.setattr(cli_module, "_serve", lambda cmd: 0)  # do not start a server in a test
    res = runner.invoke(cli, ["ui", "--port", "5055"])
    assert res.exit_code == 0, res.output
    assert "http://127.0.0.1:5055/#/experiments/" in res.stdout and "127.0.0.1:5000" not in res.stdout
    assert "#/compare-runs?runs=" in res.stdout


def test_a_method_that_fails_fails_alone(runner, small_file):
    """ALS on a zero penalty meets singular per-user systems: its row says so, the methods after it run."""
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--optimizers", "lbfgs,als,gd", "--rank", "8",
                              "--reg", "0", "--reg-bias", "0", "--max-passes", "200", "--no-tracking", "--quiet"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if line.split()[:1] in (["lbfgs"], ["als"], ["gd"])}
    assert rows["als"].split()[1] == "failed" and rows["gd"].split()[1] == "max_passes"
    assert "als failed: LinAlgError" in res.stdout


@pytest.mark.parametrize("args", [
    ["compare", "--reg", "nan"], ["compare", "--reg-bias", "inf"], ["compare", "--init-scale", "nan"],
    ["compare", "--gd-step", "inf"], ["compare", "--max-seconds", "nan"], ["compare", "--threshold", "nan"],
    ["compare", "--gtol", "nan"], ["compare", "--rating-scale", "1,inf"], ["compare", "--fractions", "nan,0.1,0.1"],
    ["sweep", "--regs", "0.1,nan"], ["sweep", "--reg-biases", "inf"], ["study", "--regs", "nan"]])
def test_numeric_options_reject_nan_and_inf(runner, args):
    res = runner.invoke(cli, args + ["--no-tracking"])
    assert res.exit_code == 2, res.output
    assert "finite number" in res.stderr or "expected" in res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize("text, message", [
    ("[defaults]\nrnak = 3\n", "unknown key 'rnak' in [defaults]; did you mean 'rank'?"),
    ("[compare]\noptimizer = 'gd'\n", "unknown key 'optimizer' in [compare]; did you mean 'optimizers'?"),
    ("[compre]\nrank = 3\n", "unknown table [compre]")])
def test_config_rejects_unknown_keys_and_tables(tmp_path, runner, text, message):
    cfg = tmp_path / "recsys.toml"
    cfg.write_text(text)
    res = runner.invoke(cli, ["--config", str(cfg), "compare", "--no-tracking"])
    assert res.exit_code == 2 and message in res.stderr, res.output


@pytest.mark.parametrize("make_args", [
    lambda blocked, data: ["data", "synth", "--out", str(blocked / "x" / "u.data"), "--users", "10", "--items", "5",
                           "--ratings", "20"],
    lambda blocked, data: ["data", "split", str(data), "--out", str(blocked / "split")]])
def test_an_output_path_that_cannot_be_written_is_one_line(tmp_path, runner, small_file, make_args):
    blocked = tmp_path / "a-file"  # a file where a folder should be: unwritable even for root
    blocked.write_text("")
    res = runner.invoke(cli, make_args(blocked, small_file))
    assert res.exit_code == 1, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Not a directory" in lines[0] and "Traceback" not in res.output


def test_recommend_with_a_binary_users_file_is_one_line(tmp_path, runner):
    users = tmp_path / "users.bin"
    users.write_bytes(bytes(range(256)))
    res = runner.invoke(cli, ["recommend", "--model-uri", "runs:/none/model", "--users", str(users)])
    assert res.exit_code == 2 and "not a text file of user ids" in res.stderr, res.output


def test_validation_without_train_is_refused(runner, small_file):
    res = runner.invoke(cli, ["compare", "--dataset", str(small_file), "--validation", str(small_file), "--no-tracking"])
    assert res.exit_code == 2 and "--validation is part of a predefined split" in res.stderr, res.output


def test_a_rank_too_large_for_memory_is_one_line_before_allocating(runner, small_file, monkeypatch):
    """Issue 22, class 9: `--rank 200000` under a 4 GB limit was a 44-line MemoryError traceback."""
    from pipeline.objectives import mf
    monkeypatch.setattr("pipeline.limits.memory_limit", lambda: 4 * 2**30)
    from pipeline.objectives.base import check_size
    check_size(10**6, "a million parameters", block=100)  # 0.2 GiB: fits
    allocations = []
    real = mf.Layout.of
    monkeypatch.setattr(mf.Layout, "of", lambda *a, **k: allocations.append(a) or real(*a, **k))
    res = runner.invoke(cli, ["train", "--dataset", str(small_file), "--rank", "200000", "--optimizer", "lbfgs",
                              "--no-tracking", "-q"])
    assert res.exit_code == 2 and not allocations, res.output
    assert "rank 200000 on" in res.stderr and "GiB this process may use" in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) <= 2  # click's "Error:" line (and a usage hint at most)


def test_running_out_of_memory_anywhere_is_one_line(runner, small_file, monkeypatch):
    def exhausted(*a, **k):
        raise MemoryError
    monkeypatch.setattr("pipeline.experiment.fitting.minimize", exhausted)
    res = runner.invoke(cli, ["train", "--dataset", str(small_file), "--optimizer", "lbfgs", "--no-tracking", "-q"])
    assert res.exit_code == 1 and "lbfgs: out of memory" in res.stderr and "Traceback" not in res.output, res.output
    monkeypatch.setattr("pipeline.experiment.comparison.load_splits", exhausted)  # outside any method's fit
    res = runner.invoke(cli, ["train", "--dataset", str(small_file), "--optimizer", "lbfgs", "--no-tracking", "-q"])
    assert res.exit_code == 1 and res.stderr.startswith("Error: out of memory") and "Traceback" not in res.output


def test_curvature_prints_both_points_with_their_kind_and_cost(runner, small_file):
    res = runner.invoke(cli, ["curvature", "--dataset", str(small_file), "--rank", "3"])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split() for line in res.stdout.splitlines()[1:]}
    start, opt = rows["start"], rows["reference"]
    assert start[-2:] == ["not", "stationary"] and opt[-2:] == ["local", "minimum"]
    assert float(start[2]) < 0 < float(opt[2])  # the small random start sits in negative curvature
    assert float(opt[2]) <= float(opt[3]) and int(opt[8]) > 0  # passes spent on the measurement
    pre = rows["M^-1"]  # the preconditioned Hessian at the optimum: what newton-pcg's CG meets
    assert pre[-1] == "-" and 0 < float(pre[4]) <= float(pre[5]) and float(pre[6]) < float(opt[4])
    assert float(pre[5]) == pytest.approx(2.0, abs=1e-6)  # docs/derivation.md: the symmetry's partners at 2
