"""Sweeps: grid and random search, selection by validation only, refit scored once on test."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import experiment
from pipeline.config import DataConfig, ModelConfig, RunConfig
from pipeline.data import Ratings
from pipeline.optim import StoppingRule

GRID = {"rank": [1, 3], "reg": [0.05, 1.0], "reg_bias": [0.1], "weighting": ["count"]}


def cfg():
    return RunConfig(data=DataConfig(dataset="unused", seed=0), model=ModelConfig(),
                     rule=StoppingRule(gtol=1e-4, max_iter=100), optimizers=("als",))


def test_grid_and_random_search_points():
    assert len(experiment.sweep_grid(GRID, None, 0)) == 4
    picked = experiment.sweep_grid(GRID, 2, 0)
    assert len(picked) == 2 and picked == experiment.sweep_grid(GRID, 2, 0)
    assert all(p in experiment.sweep_grid(GRID, None, 0) for p in picked)


def test_selection_uses_validation_only(small_synthetic):
    """Scrambling the test ratings changes nothing in the selection, only the final test score."""
    a = experiment.sweep(cfg(), GRID, "als", ratings=small_synthetic)
    splits = experiment.load_splits(cfg().data, small_synthetic)[1]
    test_keys = set(zip(splits[0].test.users.tolist(), splits[0].test.items.tolist()))
    mask = np.array([(u, i) in test_keys for u, i in zip(small_synthetic.users.tolist(), small_synthetic.items.tolist())])
    scrambled = small_synthetic.ratings.copy()
    scrambled[mask] = 6.0 - scrambled[mask]  # mirror the test ratings: a different test set entirely
    other = Ratings(**{**small_synthetic.__dict__, "ratings": scrambled})
    b = experiment.sweep(cfg(), GRID, "als", ratings=other)
    assert a.best == b.best
    np.testing.assert_allclose(a.trials["val_rmse"], b.trials["val_rmse"], rtol=0, atol=0)
    assert a.test_metrics["test_rmse"] != b.test_metrics["test_rmse"]



def test_winner_is_the_argmin_of_validation(small_synthetic):
    out = experiment.sweep(cfg(), GRID, "als", ratings=small_synthetic)
    best_row = out.trials.loc[out.trials["val_rmse"].idxmin()]
    assert out.best["rank"] == best_row["rank"] and out.best["reg"] == best_row["reg"]
    assert np.isfinite(out.test_metrics["test_rmse"])


def test_sweep_logs_trials_and_tags_the_winner(small_synthetic, tracking_uri, tmp_path):
    from pipeline.tracking import MlflowTracker
    tracker = MlflowTracker(tracking_uri, artifact_root=tmp_path / "art")
    out = experiment.sweep(cfg(), GRID, "als", tracker=tracker, ratings=small_synthetic)
    runs = tracker.client.search_runs([tracker.experiment_id])
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(trials) == 4 and all("test_rmse" not in r.data.metrics for r in trials)
    winners = [r for r in trials if r.data.tags.get("winner") == "true"]
    assert len(winners) == 1 and winners[0].data.metrics["val_rmse"] == pytest.approx(out.trials["val_rmse"].min())
    refit = next(r for r in runs if r.data.tags.get("kind") == "refit")
    assert refit.data.metrics["test_rmse"] == pytest.approx(out.test_metrics["test_rmse"])
