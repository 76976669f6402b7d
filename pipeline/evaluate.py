"""Accuracy metrics and the baselines every model is compared against.

Predictions are clipped to the rating scale ``[lo, hi]`` before scoring (a prediction of 5.7
on a 1..5 scale is scored as 5), as Surprise and LensKit do::

    RMSE = sqrt( (1/n) sum (clip(rhat) - r)^2 )        MAE = (1/n) sum |clip(rhat) - r|
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from pipeline.data.ratings import Ratings
from pipeline.data.split import Split

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def clip(pred: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    return np.clip(pred, scale[0], scale[1])


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error; NaN for an empty set."""
    if len(truth) == 0:
        return float("nan")
    d = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error; NaN for an empty set."""
    if len(truth) == 0:
        return float("nan")
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64))))


def score(predict: Predictor, ratings: Ratings, prefix: str) -> dict[str, float]:
    """``{prefix}_rmse`` and ``{prefix}_mae`` of ``predict`` on ``ratings`` (clipped)."""
    pred = clip(predict(ratings.users, ratings.items), ratings.rating_scale)
    return {f"{prefix}_rmse": rmse(pred, ratings.ratings), f"{prefix}_mae": mae(pred, ratings.ratings)}


def score_split(predict: Predictor, split: Split) -> dict[str, float]:
    """RMSE and MAE on train, validation and test, under the flat split-prefixed names."""
    out: dict[str, float] = {}
    for prefix, part in (("train", split.train), ("val", split.validation), ("test", split.test)):
        out.update(score(predict, part, prefix))
    return out


def global_mean_baseline(train: Ratings) -> Predictor:
    """Predict the mean training rating for every pair."""
    mu = float(train.ratings.mean())
    return lambda users, items: np.full(len(users), mu)


def biases_baseline(train: Ratings, reg_bias: float, weighting: str = "count", sweeps: int = 30) -> Predictor:
    """Predict ``mu + b_u + c_i`` with the biases of :func:`fit_biases`."""
    mu, b, c = fit_biases(train, reg_bias, weighting, sweeps)
    return lambda users, items: mu + b[users] + c[items]


def fit_biases(train: Ratings, reg_bias: float, weighting: str = "count",
               sweeps: int = 30) -> tuple[float, np.ndarray, np.ndarray]:
    """``mu + b_u + c_i`` fitted by alternating exact ridge solves (the MF objective at rank 0).

    Minimizes ``1/2 sum (mu + b_u + c_i - r)^2 + lam_b/2 (sum w_u b_u^2 + sum w_i c_i^2)``::

        b_u = sum_i (r_ui - mu - c_i) / (n_u + lam_b w_u)      (likewise c_i)

    Each sweep is an exact block minimization, so the objective never increases; users or items
    with no training rating keep a zero bias.
    """
    u, i, r = train.users, train.items, train.ratings
    mu = float(r.mean())
    n_u = np.bincount(u, minlength=train.n_users).astype(float)
    n_i = np.bincount(i, minlength=train.n_items).astype(float)
    w_u, w_i = (n_u, n_i) if weighting == "count" else (np.ones_like(n_u), np.ones_like(n_i))
    b, c = np.zeros(train.n_users), np.zeros(train.n_items)
    den_u = np.maximum(n_u + reg_bias * w_u, 1e-300)
    den_i = np.maximum(n_i + reg_bias * w_i, 1e-300)
    for _ in range(sweeps):
        b = np.bincount(u, r - mu - c[i], train.n_users) / den_u
        c = np.bincount(i, r - mu - b[u], train.n_items) / den_i
    return mu, b, c
