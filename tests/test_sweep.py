"""Sweeps: grid and random search, selection by validation only, refit scored once on test."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline import experiment
from pipeline.config import DataConfig, ModelConfig, RunConfig
from pipeline.data import Ratings
from pipeline.optim import StoppingRule
from pipeline.search import DEFAULT_AXES, GridSearch, Range, TpeSearch, tpe_space

GRID = {"rank": [1, 3], "reg": [0.05, 1.0], "reg_bias": [0.1], "weighting": ["count"]}


def cfg():
    return RunConfig(data=DataConfig(dataset="unused", seed=0), model=ModelConfig(),
                     rule=StoppingRule(gtol=1e-4, max_iter=100), optimizers=("als",))


def test_grid_and_random_search_points():
    assert len(GridSearch(GRID).points) == 4
    picked = GridSearch(GRID, 2, 0).points
    assert len(picked) == 2 and picked == GridSearch(GRID, 2, 0).points
    assert all(p in GridSearch(GRID).points for p in picked)


def test_selection_uses_validation_only(small_synthetic):
    """Scrambling the test ratings changes nothing in the selection, only the final test score."""
    a = experiment.sweep(cfg(), GridSearch(GRID), "als", ratings=small_synthetic)
    splits = experiment.load_splits(cfg().data, small_synthetic)[1]
    test_keys = set(zip(splits[0].test.users.tolist(), splits[0].test.items.tolist()))
    mask = np.array([(u, i) in test_keys for u, i in zip(small_synthetic.users.tolist(), small_synthetic.items.tolist())])
    scrambled = small_synthetic.ratings.copy()
    scrambled[mask] = 6.0 - scrambled[mask]  # mirror the test ratings: a different test set entirely
    other = Ratings(**{**small_synthetic.__dict__, "ratings": scrambled})
    b = experiment.sweep(cfg(), GridSearch(GRID), "als", ratings=other)
    assert a.best == b.best
    np.testing.assert_allclose(a.trials["val_rmse"], b.trials["val_rmse"], rtol=0, atol=0)
    assert a.test_metrics["test_rmse"] != b.test_metrics["test_rmse"]



def test_winner_is_the_argmin_of_validation(small_synthetic):
    out = experiment.sweep(cfg(), GridSearch(GRID), "als", ratings=small_synthetic)
    best_row = out.trials.loc[out.trials["val_rmse"].idxmin()]
    assert out.best["rank"] == best_row["rank"] and out.best["reg"] == best_row["reg"]
    assert np.isfinite(out.test_metrics["test_rmse"])


def test_sweep_logs_trials_and_tags_the_winner(small_synthetic, tracking_uri, tmp_path):
    from pipeline.tracking import MlflowTracker
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "art")
    out = experiment.sweep(cfg(), GridSearch(GRID), "als", tracker=tracker, ratings=small_synthetic)
    runs = tracker.client.search_runs([tracker.experiment_id])
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 4 and all("test_rmse" not in r.data.metrics for r in trials)
    winners = [r for r in trials if r.data.tags.get("winner") == "true"]
    assert len(winners) == 1 and winners[0].data.metrics["val_rmse"] == pytest.approx(out.trials["val_rmse"].min())
    refit = next(r for r in runs if r.data.tags.get("kind") == "refit")
    assert refit.data.metrics["test_rmse"] == pytest.approx(out.test_metrics["test_rmse"])


def test_a_winner_on_the_edge_of_the_grid_is_reported():
    assert GridSearch({"rank": [1, 3], "reg": [0.05, 0.1, 1.0], "weighting": ["count", "none"]}).edges(
        {"rank": 3, "reg": 0.1, "weighting": "none"}) == [
        "rank = 3 is the largest value searched (1 to 3): widen the grid past it"]
    assert GridSearch({"reg": [0.05, 0.1, 1.0]}).edges({"reg": 0.05})[0].startswith("reg = 0.05 is the smallest")
    assert GridSearch({"reg": [0.1]}).edges({"reg": 0.1}) == []  # one value: nothing was searched


def test_a_train_test_pair_holds_out_validation_from_train(tmp_path, small_synthetic, runner):
    """--train/--test files have no validation part: the sweep holds out --val-fraction of the
    training file (seeded) instead of refusing, and the test file is scored once, by the refit."""
    from pipeline.cli import cli
    from pipeline.data import random_split, write_udata
    split = random_split(small_synthetic, (0.8, 0.0, 0.2), 0)
    train, test = tmp_path / "u1.base", tmp_path / "u1.test"
    write_udata(split.train, train)
    write_udata(split.test, test)
    res = runner.invoke(cli, ["sweep", "--train", str(train), "--test", str(test), "--optimizer", "als",
                              "--search", "grid", "--ranks", "1,3", "--regs", "0.05,1", "--val-fraction", "0.2",
                              "--max-passes", "100",
                              "-q", "--no-tracking", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "winner (by validation RMSE)" in res.stdout and "test RMSE" in res.stdout
    assert "is the largest value searched" in res.stderr or "is the smallest value searched" in res.stderr
    out = experiment.sweep(RunConfig(data=DataConfig(train_file=str(train), test_file=str(test), seed=0,
                                                     data_dir=str(tmp_path / "d")),
                                     model=ModelConfig(), rule=StoppingRule(gtol=1e-4, max_iter=20),
                                     optimizers=("als",)),
                           GridSearch({"rank": [2]}), "als", val_fraction=0.25)
    assert np.isfinite(out.trials["val_rmse"]).all() and len(out.trials) == 1


SPACE = {"rank": Range(1, 8, integer=True), "reg": Range(0.01, 10.0), "weighting": ("count", "none")}


def test_tpe_is_seeded_and_prunes_and_an_interrupted_study_resumes(small_synthetic, tmp_path):
    """TPE over log-uniform ranges: the same seed proposes the same trials; the median pruner stops
    some trials on their validation curve; a study stored in SQLite and run again with more trials
    runs only the ones missing, and its winner is chosen over all of them."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    rule = cfg().rule
    run = lambda search: experiment.sweep(replace(cfg(), rule=replace(rule, max_iter=60)), search, "lbfgs",
                                          ratings=small_synthetic)
    import optuna

    def search(name, trials, storage=None):
        # Median pruning compares a trial's best value so far, and these curves start alike: a
        # threshold shows the wiring (report each iterate, stop the fit, tell the study) for sure.
        return TpeSearch(SPACE, trials, seed=3, storage=storage, name=name, warmup_trials=3, warmup_steps=3,
                         pruner=optuna.pruners.ThresholdPruner(upper=1.0, n_warmup_steps=3))
    a = run(search("a", 12, storage))
    b = run(search("b", 12))  # in memory, the same seed
    cols = ["rank", "reg", "weighting"]
    assert a.trials[cols].equals(b.trials[cols])
    assert (a.trials["reason"] == "pruned").any() and (a.trials["reason"] != "pruned").any()
    assert a.best["rank"] == int(a.best["rank"]) and 1 <= a.best["rank"] <= 8 and 0.01 <= a.best["reg"] <= 10
    more = search("a", 15, storage)
    c = run(more)
    assert more.resumed == 12
    assert len(c.trials) == 15 and (c.trials["reason"].str.contains("earlier run")).sum() == 12
    assert list(c.trials["trial"]) == list(range(15))  # numbered on from the earlier run's trials
    assert c.trials["val_rmse"].min() <= a.trials["val_rmse"].min()


def test_a_tpe_winner_at_the_end_of_a_range_is_reported():
    search = TpeSearch(SPACE, 1, seed=0)
    assert search.edges({"rank": 8, "reg": 0.5})[0].startswith("rank = 8 is at the top of the range searched (1 to 8)")
    assert search.edges({"rank": 3, "reg": 0.011})[0].startswith("reg = 0.011 is at the bottom")
    assert search.edges({"rank": 3, "reg": 0.5}) == []


def test_the_refit_reported_is_train_plus_validation_and_reproducible(small_synthetic):
    """``Sweep.refit`` is what the reported test RMSE came from: the trials' train and validation
    parts together, the winner's hyperparameters, and for an early-stopped winner its iteration
    count as the rule; fitting it again gives the same test RMSE to the bit (the peers benchmark
    times exactly this fit)."""
    from pipeline import evaluate
    from pipeline.optim import minimize
    rule = replace(cfg().rule, patience=2, max_iter=200)
    out = experiment.sweep(replace(cfg(), rule=rule), GridSearch(GRID), "als", ratings=small_synthetic)
    split, wcfg = out.refit
    assert len(split.train) == len(out.split.train) + len(out.split.validation) and len(split.validation) == 0
    assert len(out.split.test) == len(split.test) > 0
    assert {k: getattr(wcfg.model.hyper, k) for k in out.best} == out.best
    best_row = out.trials.loc[out.trials["val_rmse"].idxmin()]
    assert wcfg.rule.patience is None
    if best_row["reason"] == "early_stopped":
        assert wcfg.rule.max_iter == best_row["iterations"]
    prep = experiment.prepare_split(split, small_synthetic, wcfg)
    res = minimize("als", prep.objective, prep.x0, wcfg.rule)
    pred = evaluate.clip(prep.objective.predict(res.x, split.test.users, split.test.items), small_synthetic.rating_scale)
    assert evaluate.rmse(pred, split.test.ratings) == out.test_metrics["test_rmse"]


def test_tpe_space_from_the_default_axes_and_one_line_for_a_bad_range():
    space = tpe_space(DEFAULT_AXES["tpe"])
    assert space["rank"] == Range(5, 100, integer=True)
    assert space["reg"] == {"count": Range(0.003, 3.0), "none": Range(0.3, 300.0)}
    assert space["weighting"] == ("count", "none")
    for bad in ([1.0], [2.0, 1.0], [0.0, 1.0]):
        with pytest.raises(ValueError, match="is a range LOW,HIGH"):
            tpe_space({"reg": bad})
    with pytest.raises(ValueError, match="no range for weighting none"):
        tpe_space({"reg": {"count": [0.1, 1.0]}, "weighting": ["count", "none"]})


def test_a_range_that_depends_on_the_weighting_is_drawn_from_the_branch_chosen(tmp_path):
    """Each trial's reg lies in its own weighting's range; the study stores it as reg[count] or
    reg[none] and a resumed study reads it back as reg; the edge is judged in the branch's range."""
    space = {"reg": {"count": Range(0.01, 0.1), "none": Range(10.0, 100.0)}, "weighting": ("count", "none")}
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = TpeSearch(space, 12, seed=1, storage=storage, name="cond")
    search.begin()
    seen = set()
    for j in range(12):
        p = search.propose(j)
        assert list(p) == ["reg", "weighting"]
        low, high = (0.01, 0.1) if p["weighting"] == "count" else (10.0, 100.0)
        assert low <= p["reg"] <= high
        seen.add(p["weighting"])
        search.tell(j, p["reg"] if p["weighting"] == "count" else 1.0)
    assert seen == {"count", "none"}
    again = TpeSearch(space, 13, seed=1, storage=storage, name="cond")
    again.begin()
    assert again.resumed == 12 and all(set(r) >= {"reg", "weighting"} and "reg[count]" not in r
                                       for r in again.others())
    assert search.edges({"reg": 99.0, "weighting": "none"})[0].startswith("reg = 99 is at the top of the range "
                                                                          "searched (10 to 100)")
    assert search.edges({"reg": 0.03, "weighting": "count"}) == []


def test_a_model_without_a_weighting_sweeps_the_union_of_the_penalty_ranges(tmp_path, small_synthetic, runner):
    """logreg has a reg but no weighting: TPE's default reg range is the union of the weighting's
    ranges, and the default sweep runs (it raised KeyError when the ranges became per weighting)."""
    from pipeline.cli import cli
    from pipeline.data import random_split, write_udata
    assert tpe_space({"reg": DEFAULT_AXES["tpe"]["reg"]}) == {"reg": Range(0.003, 300.0)}
    split = random_split(small_synthetic, (0.8, 0.0, 0.2), 0)
    train, test = tmp_path / "u1.base", tmp_path / "u1.test"
    write_udata(split.train, train)
    write_udata(split.test, test)
    res = runner.invoke(cli, ["sweep", "--train", str(train), "--test", str(test), "--model", "logreg",
                              "--optimizer", "lbfgs", "--trials", "2", "--max-passes", "30",
                              "-q", "--no-tracking", "--data-dir", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "winner (by validation RMSE): reg=" in res.stdout


# -- resuming a study (issue 22, class 1 b-d) -------------------------------------------------------
def test_the_finished_trials_are_read_whatever_lies_between(tmp_path):
    """A study of done 0.95, RUNNING (a killed process), done 0.90: the earlier code took the
    first two trials (0.95 and the running one, as "pruned") and dropped the better 0.90."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = TpeSearch(SPACE, 3, seed=0, storage=storage, name="s")
    first.begin()
    t1 = first.study.ask()
    first.study.tell(t1, 0.95)
    first.study.ask()  # left RUNNING
    t3 = first.study.ask()
    first.study.tell(t3, 0.90)
    again = TpeSearch(SPACE, 5, seed=0, storage=storage, name="s")
    again.GRACE = 0.0  # the running one was left by a process that died
    again.begin()
    assert again.resumed == 2
    rows = again.others()
    assert sorted(r["val_rmse"] for r in rows if r["reason"] == "earlier run") == [0.90, 0.95]
    assert [r["reason"] for r in rows if r["trial"] == 1] == ["interrupted (earlier run)"]


def test_an_interrupted_trial_is_told_failed_not_left_running(small_synthetic, tmp_path, monkeypatch):
    import optuna
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr("pipeline.experiment.tuning.fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiment.sweep(cfg(), TpeSearch(SPACE, 3, seed=0, storage=storage, name="k"), "lbfgs",
                         ratings=small_synthetic)
    [name] = optuna.get_all_study_names(storage)
    states = [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]
    assert states == [optuna.trial.TrialState.FAIL]
    again = TpeSearch(SPACE, 3, seed=0, storage=storage, name=name)
    again.begin()
    assert [r["reason"] for r in again.others()] == ["interrupted (earlier run)"]


def test_a_winner_from_an_earlier_run_is_not_tagged_through_a_missing_run_id(small_synthetic, tracking_uri,
                                                                             tmp_path, monkeypatch):
    """pandas stores an earlier trial's missing run id as NaN: `is not None` let it through and the
    sweep crashed after the refit ("Run with id=nan not found")."""
    from pipeline.tracking import MlflowTracker
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "art")
    search = GridSearch({"rank": [2], "reg": [0.1]})
    earlier = {"rank": 3, "reg": 0.2, "val_rmse": 1e-9, "reason": "earlier run", "run_id": float("nan")}
    monkeypatch.setattr(search, "others", lambda on_wait=None: [earlier])
    out = experiment.sweep(cfg(), search, "als", tracker=tracker, ratings=small_synthetic)
    assert out.best["rank"] == 3 and "test_rmse" in out.test_metrics
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert not any(r.data.tags.get("winner") for r in runs)


# -- a study's identity, resumption and sharing (issue 22, class 1 a, e, f; class 6) ---------------
def _sweep_cli(data: str, data_dir, *extra) -> list[str]:
    import sys
    return [sys.executable, "-m", "pipeline", "sweep", "--dataset", str(data), "--data-dir", str(data_dir),
            "--optimizer", "als", "--max-passes", "20", "-q", "--no-tracking", *extra]


def test_a_study_is_resumed_only_by_the_same_data_split_and_rule(small_synthetic, tmp_path, runner):
    """Two files in one folder: the second sweep "resumed" the first's study (4 of 4 trials done
    before) and reported a winner chosen on the other file's validation part."""
    from pipeline.cli import cli
    from pipeline.data import write_udata
    from pipeline.data.synthetic import SyntheticSpec, generate
    folder = tmp_path / "A"
    folder.mkdir()
    write_udata(small_synthetic, folder / "small.data")
    write_udata(generate(SyntheticSpec(n_users=70, n_items=50, n_ratings=1700, min_per_user=5, seed=9)),
                folder / "other.data")
    args = lambda name, *extra: ["sweep", "--dataset", str(folder / name), "--data-dir", str(tmp_path / "d"),
                                 "--optimizer", "als", "--trials", "2", "--max-passes", "20", "-q", "--no-tracking",
                                 *extra]
    first = runner.invoke(cli, args("small.data"))
    assert first.exit_code == 0, first.output and "resuming" not in first.stderr
    for other in (args("other.data"), args("small.data", "--fractions", "0.7,0.1,0.2"),
                  args("small.data", "--max-passes", "21"), args("small.data", "--min-user-ratings", "20")):
        res = runner.invoke(cli, other)
        assert res.exit_code == 0, res.output
        assert "resuming" not in res.stderr and res.stderr.count("trial ") == 2, (other[-2:], res.stderr)
    again = runner.invoke(cli, args("small.data", "--trials", "3"))
    assert "resuming study" in again.stderr and "2 of 3 trials done before" in again.stderr
    assert again.stderr.count("trial ") == 1 and "trial 3/3" in again.stderr


def test_a_resumed_study_draws_new_start_up_points_and_numbers_on(tmp_path):
    """The seeded sampler, recreated, replayed the start-up points the first run had tried."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = TpeSearch(SPACE, 3, seed=0, storage=storage, name="r", warmup_trials=10)
    first.begin()
    seen = []
    for j in range(3):
        seen.append(first.propose(j))
        assert first.number(j) == j
        first.tell(j, 1.0)
    again = TpeSearch(SPACE, 6, seed=0, storage=storage, name="r", warmup_trials=10)
    again.begin()
    assert again.resumed == 3
    for j in range(3):
        p = again.propose(j)
        assert again.number(j) == 3 + j and p not in seen, (p, seen)
        again.tell(j, 1.0)
    assert again.propose(3) is None


def test_two_searches_on_one_study_share_its_trials_and_its_winner(tmp_path):
    """Interleaved like two processes: between them they fit n_trials, not 2 n; a trial asked
    beyond n is told FAIL unfitted; each waits for the other's running trial and both see all."""
    import threading
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    a, b = (TpeSearch(SPACE, 3, seed=s, storage=storage, name="shared") for s in (0, 1))
    a.begin(), b.begin()
    assert a.propose(0) and b.propose(0) and a.propose(1)
    assert b.propose(1) is None and a.propose(2) is None  # three being fitted
    a.tell(0, 0.9), a.tell(1, 0.8)
    waits = []
    threading.Timer(1.5, lambda: b.tell(0, 0.7)).start()
    theirs = a.others(waits.append)
    assert waits == [1] and [(r["trial"], r["val_rmse"], r["reason"]) for r in theirs] == [(1, 0.7, "another run")]
    assert sorted(r["val_rmse"] for r in b.others()) == [0.8, 0.9]
    assert [k for k in theirs[0] if k in SPACE] == list(SPACE)  # the space's order, not the study's (a winner's
    # line printed "weighting=none, rank=29, ..." by one process and "rank=29, ..., weighting=none" by the other)
    # the surplus path: another process asks between this one's count and its ask
    c = TpeSearch(SPACE, 4, seed=2, storage=storage, name="shared")
    c.begin()
    real = c._counted
    c._counted = lambda below: 0 if below > 1000 else real(below) + 1
    assert c.propose(0) is None
    import optuna
    last = optuna.load_study(study_name="shared", storage=storage).trials[-1]
    assert last.state == optuna.trial.TrialState.FAIL and last.user_attrs["surplus"] and not last.params
    assert len(c.others()) == 3  # the surplus trial is not a row


@pytest.mark.slow
def test_two_concurrent_sweep_processes_fit_the_study_once_and_agree(small_synthetic, tmp_path):
    """`recsys sweep --trials 6` twice at once ended with 12 trials and two different winners."""
    import subprocess
    from pipeline.data import write_udata
    data = tmp_path / "small.data"
    write_udata(small_synthetic, data)
    runs = [subprocess.Popen(_sweep_cli(data, tmp_path / "d", "--trials", "6", "--seed", "0"), text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outs
    fitted = sum(line.startswith("trial ") for _, err in outs for line in err.splitlines())
    assert fitted == 6, outs
    winners = {next(line for line in out.splitlines() if line.startswith("winner")) for out, _ in outs}
    assert len(winners) == 1, outs


def test_study_storage_problems_are_one_line_about_the_study(small_synthetic, tmp_path, runner):
    """A corrupt optuna.db, a foreign SQLite file, a missing driver: one line naming the study's
    storage (they read "the MLflow store failed" or were a traceback)."""
    import sqlite3
    from pipeline.cli import cli
    from pipeline.data import write_udata
    data = tmp_path / "small.data"
    write_udata(small_synthetic, data)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x13" * 3000)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("create table trials (x text)")
        db.execute("insert into trials values ('mine')")
    for storage in (f"sqlite:///{garbage}", f"sqlite:///{foreign}", "postgresql://localhost/none",
                    "nonsense://x", f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}"):
        res = runner.invoke(cli, ["sweep", "--dataset", str(data), "--data-dir", str(tmp_path / "d"), "--trials", "1",
                                  "--max-passes", "5", "-q", "--no-tracking", "--study-storage", storage])
        assert res.exit_code == 1, (storage, res.output)
        last = res.output.strip().splitlines()[-1]
        assert last.startswith(f"Error: the study storage {storage}") and "MLflow" not in res.output, res.output
        assert "Traceback" not in res.output


def test_a_storage_another_process_is_creating_is_opened_on_a_retry(tmp_path, monkeypatch):
    """Two sweeps starting at once on a new optuna.db: one met the other's half-made tables ("table
    ... already exists") and exited 1 (seen in CI); opening is retried."""
    import optuna
    real, calls = optuna.create_study, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.OperationalError) table studies already exists")
        return real(*args, **kwargs)
    monkeypatch.setattr(optuna, "create_study", racing)
    search = TpeSearch(SPACE, 2, seed=0, storage=f"sqlite:///{tmp_path / 'optuna.db'}", name="race")
    search.begin("id")
    assert len(calls) == 2 and search.study.study_name == "race-id"
    monkeypatch.setattr(optuna, "create_study", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken")))
    from pipeline.search import StudyError
    with pytest.raises(StudyError, match="broken"):
        TpeSearch(SPACE, 2, seed=0, storage="sqlite:///x.db", name="other").begin("id")
