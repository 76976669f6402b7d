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


def score(predict: Predictor, ratings: Ratings, prefix: str, model=None) -> dict[str, float]:
    """``{prefix}_rmse`` and ``{prefix}_mae`` of ``predict`` on ``ratings`` (clipped).

    A model says what it predicts (the objective protocol): ``model.target(ratings)`` and
    ``model.output_range(scale)``; without a model, the rating and its scale. For logistic
    regression the target is the 0/1 label, so RMSE is the root Brier score.
    """
    truth = ratings.ratings if model is None else model.target(ratings.ratings)
    bounds = ratings.rating_scale if model is None else model.output_range(ratings.rating_scale)
    pred = clip(predict(ratings.users, ratings.items), bounds)
    return {f"{prefix}_rmse": rmse(pred, truth), f"{prefix}_mae": mae(pred, truth)}


def score_split(predict: Predictor, split: Split, model=None) -> dict[str, float]:
    """RMSE and MAE on train, validation and test, under the flat split-prefixed names."""
    out: dict[str, float] = {}
    for prefix, part in (("train", split.train), ("val", split.validation), ("test", split.test)):
        out.update(score(predict, part, prefix, model))
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


# -- ranking metrics ---------------------------------------------------------------------------------
def ranking_metrics(scores_fn, train: Ratings, test: Ratings, k: int = 10, threshold: float = 4.0,
                    batch: int | None = None) -> dict[str, float]:
    """Top-k metrics on the test split, averaged over users with at least one relevant test item.

    For user u: relevant items ``R_u`` = test items rated ``>= threshold``; candidates = every item
    u did not rate in training; ``L_u`` = the k candidates with the highest predicted rating.

        precision@k = |L_u & R_u| / k
        recall@k    = |L_u & R_u| / |R_u|
        NDCG@k      = DCG / IDCG,  DCG = sum_{j=1..k} rel_j / log2(j + 1),  IDCG = the same for the
                      ideal list (min(|R_u|, k) ones first)
        MAP@k       = (1 / min(|R_u|, k)) sum_{j=1..k} rel_j * precision@j
        coverage    = |union of all L_u| / (number of items)    (over every evaluated user)

    ``scores_fn(user_indices) -> (len(users), n_items)`` predicted ratings.
    """
    rel_mask = test.ratings >= threshold
    users = np.unique(test.users[rel_mask])
    if len(users) == 0:
        return {f"precision_at_{k}": float("nan"), f"recall_at_{k}": float("nan"), f"ndcg_at_{k}": float("nan"),
                f"map_at_{k}": float("nan"), f"coverage_at_{k}": float("nan")}
    n_items = train.n_items
    batch = batch or max(1, 20_000_000 // max(n_items, 1))  # about 160 MB of scores at a time
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    prec, rec, ndcg, ap = [], [], [], []
    shown = np.zeros(n_items, bool)
    t_order = np.argsort(train.users, kind="stable")
    t_users, t_items = train.users[t_order], train.items[t_order]
    r_order = np.argsort(test.users[rel_mask], kind="stable")
    r_users, r_items = test.users[rel_mask][r_order], test.items[rel_mask][r_order]
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        s = np.array(scores_fn(chunk), dtype=np.float64)
        for row, u in enumerate(chunk):
            a, b = np.searchsorted(t_users, [u, u + 1])
            s[row, t_items[a:b]] = -np.inf
        kk = min(k, n_items)
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable"), 1)
        for row, u in enumerate(chunk):
            a, b = np.searchsorted(r_users, [u, u + 1])
            relevant = r_items[a:b]
            hits = np.isin(top[row], relevant).astype(float)
            shown[top[row]] = True
            n_rel = len(relevant)
            prec.append(hits.sum() / k)
            rec.append(hits.sum() / n_rel)
            ideal = discounts[:min(n_rel, k)].sum()
            ndcg.append(float(hits @ discounts[:len(hits)]) / ideal)
            prec_at_j = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            ap.append(float((hits * prec_at_j).sum()) / min(n_rel, k))
    return {f"precision_at_{k}": float(np.mean(prec)), f"recall_at_{k}": float(np.mean(rec)),
            f"ndcg_at_{k}": float(np.mean(ndcg)), f"map_at_{k}": float(np.mean(ap)),
            f"coverage_at_{k}": float(shown.mean())}
