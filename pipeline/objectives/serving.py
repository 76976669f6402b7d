"""Scorers: what a fitted model serves, in inner indices (no ids, no MLflow here).

``objective.scorer(x)`` returns one. A scorer answers ``predict(users, items)`` for index pairs
and ``scores(users)`` (users x every item, what ranking needs); an index of -1 is a user or item
training never saw, and gets the model's fallback, never another row. ``arrays()`` and
``from_arrays`` save and load it (one ``.npz``, see ``pipeline.recommender``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FactorScorer:
    """``mu + b_u + c_i + p_u . q_i``; an unknown user (item) contributes no bias and no factor
    term, so a cold pair gets the global mean plus whatever bias is known. MF serves its factors;
    SVD++ serves its effective user factors ``p_u + |N(u)|^-1/2 sum_j y_j``."""

    mu: float
    P: np.ndarray
    Q: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        ku, ki = users >= 0, items >= 0
        out = np.full(len(users), float(self.mu))
        out[ku] += self.b[users[ku]]
        out[ki] += self.c[items[ki]]
        both = ku & ki
        out[both] += np.einsum("nk,nk->n", self.P[users[both]], self.Q[items[both]])
        return out

    def scores(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, np.int64)
        known = users >= 0
        s = np.repeat((self.mu + self.c)[None, :], len(users), axis=0)
        s[known] += self.b[users[known]][:, None] + self.P[users[known]] @ self.Q.T
        return s

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mu": np.array(self.mu), "P": self.P, "Q": self.Q, "b": self.b, "c": self.c}

    @classmethod
    def from_arrays(cls, a: dict) -> "FactorScorer":
        return cls(float(a["mu"]), a["P"], a["Q"], a["b"], a["c"])
