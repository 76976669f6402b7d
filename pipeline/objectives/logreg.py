r"""L2-regularized logistic regression on ratings: does user u rate item i at least ``threshold``?

The second model, proving the template: not matrix factorization, same protocol, so every
optimizer, the stopping rule, tracking and the CLI work on it unchanged.

Model and objective
-------------------
Features: one-hot user and item indicators, an intercept, and the side features MovieLens ships
where present (``U``: user age, gender, occupation; ``G``: item genres; see ``pipeline.data.side``).
``y_ui = 1[r_ui >= threshold]``; ``z_ui = w0 + a_u + d_i + U_u . alpha + G_i . beta``;
``s = sigma(z) = 1 / (1 + exp(-z))``::

    L = (1/N) [ sum_(u,i) ( log(1 + exp(z_ui)) - y_ui z_ui ) + lam/2 (|a|^2 + |d|^2 + |alpha|^2 + |beta|^2) ]

Gradient, with ``r_ui = s_ui - y_ui``, ``R_u = sum_i r_ui`` and ``C_i = sum_u r_ui``::

    dL/dw0 = (1/N) sum r      dL/da_u = (1/N) [ R_u + lam a_u ]      dL/dalpha = (1/N) [ U^T R + lam alpha ]
                              dL/dd_i = (1/N) [ C_i + lam d_i ]      dL/dbeta  = (1/N) [ G^T C + lam beta ]

Hessian-vector product along ``(dw0, da, dd, dalpha, dbeta)``: ``dz_ui = dw0 + da_u + dd_i +
U_u . dalpha + G_i . dbeta``, ``t_ui = s_ui (1 - s_ui) dz_ui``, ``T_u = sum_i t_ui``,
``S_i = sum_u t_ui``; then ``(Hv)`` has the same shape as the gradient with ``r`` replaced by ``t``
and ``lam`` times the direction added. The objective is convex (a weighted Gram matrix plus
``lam I``), so every optimizer should reach the same minimum.
``x = concat([w0], a, d, alpha, beta)``. Prediction: the probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.ratings import Ratings
from pipeline.objectives.spec import ModelSpec, constant, hyperparameter


@dataclass(frozen=True)
class LogRegHyper:
    reg: float = hyperparameter(1.0, "L2 penalty lambda on every weight but the intercept.", low=0)
    threshold: float = hyperparameter(4.0, "Ratings at or above this are the positive class.")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


class LogisticRatings:
    """The objective above on a training set (see the module docstring)."""

    BLOCKS = ("w0", "a", "d", "alpha", "beta")  # the parameter blocks, in ``unpack`` order

    def __init__(self, train: Ratings, reg: float = 1.0, threshold: float = 4.0, use_side: bool = True):
        if reg < 0:
            raise ValueError(f"reg must be non-negative, got {reg}")
        if len(train) == 0:
            raise ValueError("the training set is empty")
        self.reg, self.threshold = float(reg), float(threshold)
        self.users = train.users.astype(np.int64)
        self.items = train.items.astype(np.int64)
        self.y = (train.ratings >= threshold).astype(np.float64)
        self.n_users, self.n_items, self.n_ratings = train.n_users, train.n_items, len(train)
        extra = (train.extra or {}) if use_side else {}
        self.U = _aligned(extra.get("user_features"), train.user_ids)
        self.G = _aligned(extra.get("item_features"), train.item_ids)
        self.feature_names = (list(extra["user_features"].columns) if self.U.shape[1] else []) + \
                             (list(extra["item_features"].columns) if self.G.shape[1] else [])
        self._cuts = np.cumsum([1, self.n_users, self.n_items, self.U.shape[1]])
        self.n_params = 1 + self.n_users + self.n_items + self.U.shape[1] + self.G.shape[1]
        self._x: np.ndarray | None = None
        self._s: np.ndarray | None = None

    def unpack(self, x: np.ndarray):
        """Views ``(w0, a, d, alpha, beta)`` into ``x``."""
        w0, a, d, alpha, beta = np.split(x, self._cuts)
        return w0[0], a, d, alpha, beta

    def _z(self, w0, a, d, alpha, beta, users, items):
        z = w0 + a[users] + d[items]
        if len(alpha):
            z = z + (self.U @ alpha)[users]
        if len(beta):
            z = z + (self.G @ beta)[items]
        return z

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Zeros (the problem is convex) plus tiny noise from ``rng`` so seeds mean something."""
        return rng.normal(0.0, 1e-3, self.n_params)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        if self._x is None or not np.array_equal(self._x, x):
            z = self._z(*self.unpack(x), self.users, self.items)
            self._x, self._zv, self._s = np.array(x, copy=True), z, _sigmoid(z)
        return self._s

    def loss(self, x: np.ndarray) -> float:
        self._probabilities(x)
        z = self._zv
        data = np.sum(np.logaddexp(0.0, z) - self.y * z)
        return float(data + 0.5 * self.reg * float(x[1:] @ x[1:])) / self.n_ratings

    def _back(self, r: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """``(sum r, R + lam a, C + lam d, U^T R + lam alpha, G^T C + lam beta) / N``."""
        R = np.bincount(self.users, r, self.n_users)
        C = np.bincount(self.items, r, self.n_items)
        out = np.concatenate([[r.sum()], R, C, self.U.T @ R, self.G.T @ C])
        out[1:] += self.reg * direction[1:]
        return out / self.n_ratings

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        s = self._probabilities(x)
        return self.loss(x), self._back(s - self.y, np.asarray(x, dtype=np.float64))

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        s = self._probabilities(x)
        v = np.asarray(v, dtype=np.float64)
        dz = self._z(*self.unpack(v), self.users, self.items)
        return self._back(s * (1.0 - s) * dz, v)

    gnvp = hessp  # the Gauss-Newton product of logistic loss is its Hessian

    def predict(self, x: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """P(rating >= threshold) for index pairs (an unseen user or item adds only its side features)."""
        z = self._z(*self.unpack(np.asarray(x, dtype=np.float64)), np.asarray(users, np.int64), np.asarray(items, np.int64))
        return _sigmoid(z)

    def scorer(self, x: np.ndarray) -> "LogisticScorer":
        """What a fit serves: the intercept, and per user and item its indicator weight plus its
        side features' share (so serving needs no feature tables)."""
        w0, a, d, alpha, beta = self.unpack(np.asarray(x, dtype=np.float64).copy())
        user_part = a + (self.U @ alpha if len(alpha) else 0.0)
        item_part = d + (self.G @ beta if len(beta) else 0.0)
        return LogisticScorer(float(w0), np.asarray(user_part, np.float64), np.asarray(item_part, np.float64))

    def target(self, ratings: np.ndarray) -> np.ndarray:
        """What predictions are scored against: the binary label."""
        return (np.asarray(ratings) >= self.threshold).astype(np.float64)

    def output_range(self, rating_scale) -> tuple[float, float]:
        return (0.0, 1.0)

    def describe(self) -> dict:
        return {"model": "logreg", "reg": self.reg, "threshold": self.threshold, "n_params": self.n_params,
                "side_features": len(self.feature_names)}


def _aligned(frame, ids: np.ndarray) -> np.ndarray:
    """Rows of a side-feature frame (indexed by raw id as text) in vocabulary order; zeros where an
    id has no row; an empty matrix when there is no frame."""
    if frame is None or len(frame) == 0:
        return np.zeros((len(ids), 0))
    return frame.reindex(np.asarray(ids).astype(str)).fillna(0.0).to_numpy(dtype=np.float64)


class LogisticScorer:
    """``sigma(w0 + user part + item part)``; an unknown user or item contributes nothing, so a
    cold pair gets ``sigma(w0)`` plus whatever part is known."""

    def __init__(self, w0: float, user_part: np.ndarray, item_part: np.ndarray):
        self.w0, self.user_part, self.item_part = float(w0), user_part, item_part

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        z = np.full(len(users), self.w0)
        z[users >= 0] += self.user_part[users[users >= 0]]
        z[items >= 0] += self.item_part[items[items >= 0]]
        return _sigmoid(z)

    def scores(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, np.int64)
        z = np.repeat((self.w0 + self.item_part)[None, :], len(users), axis=0)
        z[users >= 0] += self.user_part[users[users >= 0]][:, None]
        return _sigmoid(z.ravel()).reshape(z.shape)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w0": np.array(self.w0), "user_part": self.user_part, "item_part": self.item_part}

    @classmethod
    def from_arrays(cls, a: dict) -> "LogisticScorer":
        return cls(float(a["w0"]), a["user_part"], a["item_part"])


DERIVATION = """\
For N training ratings, labels `y_ui = 1[r_ui >= threshold]`, scores `z_ui = w0 + a_u + d_i + U_u.alpha + G_i.beta`
(user and item indicators, and the side features MovieLens ships where present) and `s = sigma(z)`:

    L = (1/N) [ sum ( log(1 + exp(z_ui)) - y_ui z_ui ) + lam/2 (|a|^2 + |d|^2 + |alpha|^2 + |beta|^2) ]

Gradient: with `r_ui = s_ui - y_ui`, `dL/da_u = (1/N)[sum_i r_ui + lam a_u]`, `dL/dd_i = (1/N)[sum_u r_ui + lam d_i]`,
`dL/dalpha = (1/N)[U^T R + lam alpha]`. Hessian-vector product: the same sums with `r` replaced by
`s (1 - s) dz` and `lam` times the direction added; the Gauss-Newton product is the Hessian. The objective is
convex, so every convergent method reaches one minimum. Predictions are probabilities; RMSE is the root Brier score.
"""

SPEC = ModelSpec(
    name="logreg", summary="logistic regression on user and item indicators predicting rating >= threshold",
    hyper=LogRegHyper, build=lambda train, h, engine: LogisticRatings(train, reg=h.reg, threshold=h.threshold),
    baselines=lambda train, h: {"global-rate": constant(float((train.ratings >= h.threshold).mean()))},
    title="logistic regression on ratings", derivation=DERIVATION, headline=("reg", "threshold"))
