"""MLflow logging against an SQLite store under tmp_path."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import experiment, schema
from pipeline.config import DataConfig, ModelConfig, RunConfig
from pipeline.optim import StoppingRule
from pipeline.tracking import MlflowTracker


def small_cfg(optimizers=("gd", "newton-cg", "lbfgs")):
    return RunConfig(data=DataConfig(dataset="unused", seed=0), model=ModelConfig.of("mf", rank=3, reg=0.1, reg_bias=0.1),
                     rule=StoppingRule(gtol=1e-5, max_iter=300, max_seconds=30), optimizers=optimizers)


@pytest.fixture
def comparison(tracking_uri, tmp_path, small_synthetic):
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "artifacts")
    return tracker, experiment.compare(small_cfg(), tracker, ratings=small_synthetic)


def test_parent_and_children_are_nested_and_finished(comparison):
    tracker, out = comparison
    parent = tracker.run_info(out.parent_run_id)
    assert parent.info.status == "FINISHED"
    exp = tracker.client.get_experiment(parent.info.experiment_id)
    assert exp.name == "synthetic"
    children = tracker.client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{out.parent_run_id}'")
    names = {c.info.run_name for c in children}
    assert names == {"gd", "newton-cg", "lbfgs", "global-mean", "biases-only"}
    assert all(c.info.status == "FINISHED" for c in children)


def test_params_metrics_and_curves(comparison):
    tracker, out = comparison
    run = tracker.run_info(out.child_run_ids["newton-cg"])
    p = run.data.params
    assert p["optimizer"] == "newton-cg" and p["rank"] == "3" and p["gtol"] == "1e-05" and p["dataset"] == "synthetic"
    m = run.data.metrics
    for key in ("train_rmse", "val_rmse", "test_rmse", "test_mae", "fit_seconds", "n_hessp", "grad_norm", "train_loss"):
        assert key in m, key
    assert m["n_hessp"] > 0
    history = tracker.client.get_metric_history(run.info.run_id, "train_loss")
    steps = sorted(h.step for h in history)
    res = out.results["newton-cg"]
    assert steps == [r.data_passes for r in res.history]  # step = data passes, the race's unit
    assert all(b > a for a, b in zip(steps, steps[1:])) and len(set(steps)) == len(res.history)
    values = [h.value for h in sorted(history, key=lambda h: h.step)]
    assert values == pytest.approx([r.loss for r in res.history])
    assert [r.iteration for r in res.history] == list(range(len(res.history)))  # the j-th point is iteration j
    log_gap = tracker.client.get_metric_history(run.info.run_id, "log10_rel_gap")
    f_star = out.prepared.reference.f_star
    assert {h.step: h.value for h in log_gap} == pytest.approx(
        {r.data_passes: np.log10((r.loss - f_star) / abs(f_star)) for r in res.history if r.loss > f_star})
    assert run.data.tags["stop_reason"] == out.results["newton-cg"].reason
    base = tracker.run_info(out.child_run_ids["global-mean"]).data.metrics
    assert set(base) >= {"val_rmse", "test_rmse"}  # baselines share the metric names


def test_artifacts_and_dataset_input_on_the_parent(comparison):
    tracker, out = comparison
    files = {a.path for a in tracker.client.list_artifacts(out.parent_run_id)}
    assert {"convergence.png", "comparison.csv"} <= files
    run = tracker.run_info(out.parent_run_id)
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "synthetic"


def test_links_name_the_experiment_and_the_runs(comparison):
    tracker, out = comparison
    assert f"#/experiments/{tracker.experiment_id}?" in out.links["experiment"]
    for rid in out.child_run_ids.values():
        assert rid in out.links["compare"]


def test_a_failing_method_fails_alone(tracking_uri, tmp_path, small_synthetic, monkeypatch):
    """Its run is FAILED with a one-line reason, the methods after it run, the table shows it."""
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "artifacts")
    from pipeline.experiment import fitting
    real = fitting.minimize

    def boom(name, *args, **kwargs):
        if name == "gd":
            raise RuntimeError("boom\nsecond line")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(fitting, "minimize", boom)
    out = experiment.compare(small_cfg(("gd", "lbfgs")), tracker, ratings=small_synthetic)
    runs = {r.info.run_name: r for r in tracker.client.search_runs([tracker.experiment_id])}
    assert runs["gd"].info.status == "FAILED"
    assert runs["gd"].data.tags["stop_message"] == "RuntimeError: boom"
    assert runs["lbfgs"].info.status == "FINISHED" and runs["compare-gd-lbfgs"].info.status == "FINISHED"
    row = out.table.set_index("optimizer").loc["gd"]
    assert row["reason"] == "failed" and row["message"] == "RuntimeError: boom"
    assert out.failures == {"gd": "RuntimeError: boom"} and "lbfgs" in out.results


def test_ctrl_c_marks_runs_killed(tracking_uri, tmp_path, small_synthetic, monkeypatch):
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "artifacts")

    def interrupt(name, record):
        if record.iteration == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        experiment.compare(small_cfg(("lbfgs",)), tracker, progress=interrupt, ratings=small_synthetic)
    runs = {r.info.run_name: r for r in tracker.client.search_runs([tracker.experiment_id])}
    assert runs["lbfgs"].info.status == "KILLED" and runs["compare-lbfgs"].info.status == "KILLED"
    kept = tracker.client.get_metric_history(runs["lbfgs"].info.run_id, "train_loss")
    assert len(kept) == 5  # the curve so far is kept (iterations 0..4)


def test_parent_run_holds_the_rules_of_the_race(comparison):
    tracker, out = comparison
    parent = tracker.run_info(out.parent_run_id)
    m = parent.data.metrics
    assert m["f_star"] == out.prepared.reference.f_star
    assert {"compile_seconds", "seconds_loss_grad", "cost_hessp", "cost_loss"} <= set(m)
    assert m["lbfgs_passes_to_1e-3"] == out.metrics["lbfgs"]["passes_to_1e-3"]
    assert "f* = " in parent.data.tags["reference_optimum"]
    for name in ("gd", "newton-cg", "lbfgs"):
        child = tracker.run_info(out.child_run_ids[name])
        assert "StopIteration" not in child.data.tags["stop_message"]


def test_study_logs_profiles_and_the_per_problem_csv(tracking_uri, tmp_path):
    import pandas as pd
    from click.testing import CliRunner
    from pipeline.cli import cli
    data = tmp_path / "u.data"
    runner = CliRunner()
    assert runner.invoke(cli, ["data", "synth", "--out", str(data), "--users", "50", "--items", "40",
                               "--ratings", "900", "--seed", "3"]).exit_code == 0
    res = runner.invoke(cli, ["study", "--datasets", str(data), "--ranks", "2", "--regs", "0.1", "--seeds", "0,1",
                              "--optimizers", "gd-bb,lbfgs,als", "--max-passes", "150", "-q",
                              "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "(f - f*)/|f*| <= 1e-3, in passes:" in res.stdout
    tracker = MlflowTracker(tracking_uri)
    study = tracker.client.search_runs([tracker.client.get_experiment_by_name("study").experiment_id],
                                       "tags.kind = 'study'")[0]
    names = {f.path for f in tracker.client.list_artifacts(study.info.run_id)}
    assert {"performance_profile_passes.png", "performance_profile_seconds.png", "study.csv"} <= names
    csv = pd.read_csv(tracker.client.download_artifacts(study.info.run_id, "study.csv", str(tmp_path)))
    assert len(csv) == 2 * 3 and set(csv["optimizer"]) == {"gd-bb", "lbfgs", "als"}
    assert {"passes_to_1e-6", "seconds_to_1e-9", "f_star", "problem"} <= set(csv.columns)


def test_a_run_whose_final_write_fails_is_failed_and_keeps_its_points(tracking_uri, tmp_path, small_synthetic):
    """Full disk or broken store at the last flush: the run ends FAILED (not FINISHED with its
    curve missing) and the unwritten points stay in the buffer."""
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "artifacts", flush_seconds=1e9)
    tracker.use_experiment("flaky")
    real = tracker.client.log_batch

    def full_disk(run_id, metrics=(), **kw):
        if metrics:
            raise OSError("No space left on device")
        return real(run_id, metrics=metrics, **kw)
    with pytest.raises(OSError):
        with tracker.run("gd") as rid:
            listen = tracker.curve_listener(rid)
            from pipeline.optim import IterationRecord
            for k in range(5):
                listen("gd", IterationRecord(k, 1.0 / (k + 1), 1.0, 1.0, 0.1 * k, k, k, 0, 0.9, k))
            tracker.client.log_batch = full_disk
    tracker.client.log_batch = real
    assert tracker.run_info(rid).info.status == "FAILED"
    assert len(tracker._buffer[rid]) == 5 * len(schema.CURVES)  # every point (every curve, no f*) still there to flush
    tracker.flush(rid)
    assert len(tracker.client.get_metric_history(rid, "train_loss")) == 5


def test_runs_of_a_process_that_is_gone_are_repaired(tracking_uri, tmp_path):
    """SIGKILL leaves runs RUNNING; `recsys runs repair` (and every logging command at start)
    marks those of a dead process FAILED and leaves a live process's runs alone."""
    import subprocess
    import sys
    from click.testing import CliRunner
    from pipeline.cli import cli
    tracker = MlflowTracker(tracking_uri)
    tracker.use_experiment("killed")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tracker.client.create_run(tracker.experiment_id, tags={"recsys.host": __import__("socket").gethostname(),
                                                                    "recsys.pid": str(dead.pid)}).info.run_id
    with tracker.run("alive") as alive:  # this process: running, and must stay so
        res = CliRunner().invoke(cli, ["runs", "repair", "--tracking-uri", tracking_uri])
        assert res.exit_code == 0 and "1 run(s) repaired" in res.stdout, res.output
        assert tracker.run_info(alive).info.status == "RUNNING"
    assert tracker.run_info(orphan).info.status == "FAILED"
    assert tracker.run_info(orphan).data.tags["recsys.repaired"] == "its process is gone"
    assert tracker.run_info(alive).data.tags["recsys.pid"] == str(__import__("os").getpid())


def test_ctrl_c_inside_a_store_transaction_keeps_the_points_and_frees_the_lock(tracking_uri, tmp_path):
    """SIGINT delivered while a metric batch is inside its SQLite transaction (issue 12, finding 2):
    the write completes before the interrupt is handled, so at the moment the interrupt surfaces
    the points are committed and no lock is held for the cleanup (or another process) to wait on;
    the run then ends KILLED."""
    import os
    import signal
    import sqlite3
    from sqlalchemy import event
    from pipeline.optim import IterationRecord
    tracker = MlflowTracker(tracking_uri, flush_seconds=1e9)
    tracker.use_experiment("interrupted")
    engine = tracker.client._tracking_client.store.engine
    armed = []

    def interrupt_inside_the_transaction(_conn):
        if armed:
            armed.clear()
            os.kill(os.getpid(), signal.SIGINT)  # lands before COMMIT

    def seen_by_another_connection(run_id):
        other = sqlite3.connect(tracking_uri[len("sqlite:///"):], timeout=0.5)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" while the interrupted transaction holds it
            other.rollback()
            return other.execute("SELECT count(*) FROM metrics WHERE run_uuid = ? AND key = 'train_loss'",
                                 (run_id,)).fetchone()[0]
        finally:
            other.close()
    event.listen(engine, "commit", interrupt_inside_the_transaction)
    try:
        with pytest.raises(KeyboardInterrupt):
            with tracker.run("gd") as rid:
                listen = tracker.curve_listener(rid)
                for k in range(7):
                    listen("gd", IterationRecord(k, 1.0 / (k + 1), 1.0, 1.0, 0.1 * k, k, k, 0, 0.9, k))
                armed.append(True)
                try:
                    tracker.flush(rid)
                except KeyboardInterrupt:
                    assert seen_by_another_connection(rid) == 7
                    raise
                raise AssertionError("the interrupt was not delivered")
    finally:
        event.remove(engine, "commit", interrupt_inside_the_transaction)
    assert tracker.run_info(rid).info.status == "KILLED"
    assert [m.step for m in tracker.client.get_metric_history(rid, "train_loss")] == list(range(7))


def test_the_parent_runs_description_holds_the_table_and_the_findings(comparison):
    """The MLflow UI shows a run's description (tag mlflow.note.content) on its page: the parent's
    had none."""
    from pipeline import report
    tracker, out = comparison
    note = tracker.run_info(out.parent_run_id).data.tags["mlflow.note.content"]
    assert report.markdown_table(out.table) in note and out.prepared.reference.note() in note
    for line in report.findings(out.table):
        assert f"- {line}" in note


def test_the_race_link_overlays_the_methods_gap_over_data_passes(comparison):
    """make train's links opened a parallel-coordinates plot with no curve; the race link is the
    metric page of rel_gap for the methods' runs, x axis = step (data passes), log y."""
    import json
    import urllib.parse
    tracker, out = comparison
    race = out.links["race"]
    query = urllib.parse.parse_qs(race.split("#/metric?", 1)[1])
    assert json.loads(query["metric"][0]) == "rel_gap" and query["x_axis"] == ["step"] and query["y_axis_scale"] == ["log"]
    assert sorted(json.loads(query["runs"][0])) == sorted(out.child_run_ids[n] for n in out.results)


def test_the_curvature_at_the_start_and_at_the_optimum_is_on_the_parent(comparison):
    tracker, out = comparison
    m = tracker.run_info(out.parent_run_id).data.metrics
    start, opt = out.prepared.curvature["start"], out.prepared.curvature["optimum"]
    assert m["lambda_min_start"] == start.lambda_min < 0 < m["lambda_min_optimum"] == opt.lambda_min
    assert m["condition_optimum"] == pytest.approx(opt.lambda_max / opt.lambda_min)
    pre = out.prepared.curvature["preconditioned"]
    assert "condition_start" not in m and m["curvature_passes"] == start.passes + opt.passes + pre.passes
    assert m["condition_preconditioned"] == pytest.approx(pre.condition) and pre.condition < m["condition_optimum"]
    spectra = out.prepared.spectra
    assert m["eigenvalues_negative_share_start"] == spectra["start"].share_below(0.0) > 0
    assert m["eigenvalues_negative_share_optimum"] == 0
    assert m["eigenvalues_below_1pct_share_optimum"] == spectra["optimum"].share_below(0.01 * opt.lambda_max)
    files = {a.path for a in tracker.client.list_artifacts(out.parent_run_id)}
    assert {"spectrum.png", "spectrum.csv"} <= files
