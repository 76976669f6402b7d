"""Metrics on hand-computed cases, and the baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import evaluate
from pipeline.data import random_split
from pipeline.objectives import BiasedMF


def test_rmse_and_mae_known_answers():
    pred, truth = np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0])
    assert evaluate.rmse(pred, truth) == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert evaluate.mae(pred, truth) == pytest.approx(1.0)
    assert math.isnan(evaluate.rmse(np.array([]), np.array([])))


def test_scores_clip_to_the_rating_scale(tiny):
    always_six = lambda u, i: np.full(len(u), 6.0)
    s = evaluate.score(always_six, tiny, "x")
    assert s["x_mae"] == pytest.approx(np.mean(5.0 - tiny.ratings))


def test_biases_baseline_solves_its_ridge_problem(small_synthetic):
    """The fitted biases zero the MF objective's bias gradient at zero factors (the rank-0 model)."""
    split = random_split(small_synthetic, seed=1)
    for weighting in ("count", "none"):
        mu, b, c = evaluate.fit_biases(split.train, 0.3, weighting, sweeps=2000)
        f = BiasedMF(split.train, rank=1, reg=0.0, reg_bias=0.3, weighting=weighting)
        assert mu == pytest.approx(f.mu)
        x = f.pack(np.zeros((f.n_users, 1)), np.zeros((f.n_items, 1)), b, c)
        _, _, gb, gc = f.unpack(f.loss_grad(x)[1])
        assert np.abs(gb).max() < 1e-10 and np.abs(gc).max() < 1e-10


def test_baselines_order_on_structured_data(small_synthetic):
    split = random_split(small_synthetic, seed=1)
    gm = evaluate.score_split(evaluate.global_mean_baseline(split.train), split)
    bi = evaluate.score_split(evaluate.biases_baseline(split.train, 0.5, "count"), split)
    assert bi["train_rmse"] < gm["train_rmse"]
    assert set(gm) == {"train_rmse", "train_mae", "val_rmse", "val_mae", "test_rmse", "test_mae"}
