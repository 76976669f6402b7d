r"""L2-regularized logistic regression on ratings: does user u rate item i at least ``threshold``?

The second model, proving the template: not matrix factorization, same protocol, so every
optimizer, the stopping rule, tracking and the CLI work on it unchanged.

Model and objective
-------------------
Features: one-hot user and item indicators and an intercept (side features, such as MovieLens'
user age or item genres, would be further columns; the ratings files read here carry none).
``y_ui = 1[r_ui >= threshold]``; ``z_ui = w0 + a_u + d_i``; ``s = sigma(z) = 1 / (1 + exp(-z))``::

    L(w0, a, d) = (1/N) [ sum_(u,i) ( log(1 + exp(z_ui)) - y_ui z_ui ) + lam/2 (|a|^2 + |d|^2) ]

Gradient (``s_ui - y_ui`` summed per user, per item, and over all)::

    dL/da_u = (1/N) [ sum_i (s_ui - y_ui) + lam a_u ]     dL/dw0 = (1/N) sum (s_ui - y_ui)

Hessian-vector product along ``(dw0, da, dd)``: with ``dz_ui = dw0 + da_u + dd_i`` and the
weights ``s_ui (1 - s_ui)``::

    (Hv)_a_u = (1/N) [ sum_i s_ui (1 - s_ui) dz_ui + lam da_u ]     (Hv)_w0 = (1/N) sum s (1 - s) dz

The objective is convex (the Hessian is a weighted Gram matrix plus ``lam I`` on a, d), so every
optimizer should reach the same minimum. ``x = concat([w0], a, d)``. Prediction: the probability.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.ratings import Ratings


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


class LogisticRatings:
    """The objective above on a training set (see the module docstring)."""

    def __init__(self, train: Ratings, reg: float = 1.0, threshold: float = 4.0, **_ignored):
        if reg < 0:
            raise ValueError(f"reg must be non-negative, got {reg}")
        if len(train) == 0:
            raise ValueError("the training set is empty")
        self.reg, self.threshold = float(reg), float(threshold)
        self.users = train.users.astype(np.int64)
        self.items = train.items.astype(np.int64)
        self.y = (train.ratings >= threshold).astype(np.float64)
        self.n_users, self.n_items, self.n_ratings = train.n_users, train.n_items, len(train)
        self.n_params = 1 + self.n_users + self.n_items
        self._x: np.ndarray | None = None
        self._s: np.ndarray | None = None

    def unpack(self, x: np.ndarray):
        return x[0], x[1:1 + self.n_users], x[1 + self.n_users:]

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Zeros (the problem is convex) plus tiny noise from ``rng`` so seeds mean something."""
        return rng.normal(0.0, 1e-3, self.n_params)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        if self._x is None or not np.array_equal(self._x, x):
            w0, a, d = self.unpack(x)
            z = w0 + a[self.users] + d[self.items]
            self._x, self._z, self._s = np.array(x, copy=True), z, _sigmoid(z)
        return self._s

    def loss(self, x: np.ndarray) -> float:
        self._probabilities(x)
        z = self._z
        _, a, d = self.unpack(x)
        data = np.sum(np.logaddexp(0.0, z) - self.y * z)
        return float(data + 0.5 * self.reg * (a @ a + d @ d)) / self.n_ratings

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        s = self._probabilities(x)
        _, a, d = self.unpack(x)
        r = s - self.y
        g = np.concatenate([[r.sum()], np.bincount(self.users, r, self.n_users) + self.reg * a,
                            np.bincount(self.items, r, self.n_items) + self.reg * d])
        return self.loss(x), g / self.n_ratings

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        s = self._probabilities(x)
        dw0, da, dd = self.unpack(np.asarray(v, dtype=np.float64))
        wdz = s * (1.0 - s) * (dw0 + da[self.users] + dd[self.items])
        h = np.concatenate([[wdz.sum()], np.bincount(self.users, wdz, self.n_users) + self.reg * da,
                            np.bincount(self.items, wdz, self.n_items) + self.reg * dd])
        return h / self.n_ratings

    gnvp = hessp  # the Gauss-Newton product of logistic loss is its Hessian

    def predict(self, x: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(rating >= threshold) for index pairs (unseen users / items contribute 0 to z)."""
        w0, a, d = self.unpack(np.asarray(x, dtype=np.float64))
        return _sigmoid(w0 + a[np.asarray(users, np.int64)] + d[np.asarray(items, np.int64)])

    def target(self, ratings: np.ndarray) -> np.ndarray:
        """What predictions are scored against: the binary label."""
        return (np.asarray(ratings) >= self.threshold).astype(np.float64)

    def output_range(self, rating_scale) -> tuple[float, float]:
        return (0.0, 1.0)

    def describe(self) -> dict:
        return {"model": "logreg", "reg": self.reg, "threshold": self.threshold, "n_params": self.n_params}
