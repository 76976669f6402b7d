r"""SVD++: biased matrix factorization with implicit feedback (Koren 2008), the third model.

Written as a user of the template would write one: this module, its test
(``tests/test_svdpp.py``) and one registry line; nothing else in the pipeline knows it exists.

Model and objective
-------------------
N training ratings ``(u, i, r)``; ``N(u)`` the items user u rated in training (the implicit
feedback), ``s_u = |N(u)|^(-1/2)``; ``mu`` the mean training rating (a constant). Parameters: user
factors ``P`` (m x k), item factors ``Q`` (n x k), implicit item factors ``Y`` (n x k), biases ``b``
(m) and ``c`` (n)::

    z_u = p_u + s_u sum_{j in N(u)} y_j          rhat_ui = mu + b_u + c_i + q_i . z_u          e_ui = rhat_ui - r_ui

    L = (1/N) [ 1/2 sum_(u,i) e_ui^2 + lam/2 (sum_u w_u |p_u|^2 + sum_i w_i (|q_i|^2 + |y_i|^2))
                                     + lam_b/2 (sum_u w_u b_u^2 + sum_i w_i c_i^2) ]

with the weights ``w`` of biased MF (``count``: the number of training ratings; ``none``: 1).

The structure used: the data term is biased MF's data term at ``(Z, Q, b, c)``, and
``Z = P + S A Y`` is *linear* in the parameters (``A`` the m x n indicator of rated pairs,
``S = diag(s_u)``). Write ``T`` for that linear map ``(P, Q, Y, b, c) -> (Z, Q, b, c)`` and ``g``
for MF's penalty-free objective. Then ``L = g(T x) + penalty(x)`` and the chain rule is exact::

    grad L   = T^T grad g(Tx) + grad penalty          H_L v = T^T H_g(Tx) (T v) + H_penalty v

Spelled out, with ``G_u = sum_i e_ui q_i`` (MF's user-factor gradient at ``Z``, times N)::

    dL/dp_u = (1/N) [ G_u + lam w_u p_u ]               dL/dq_i = (1/N) [ sum_u e_ui z_u + lam w_i q_i ]
    dL/dy_j = (1/N) [ sum_{u: j in N(u)} s_u G_u + lam w_j y_j ]
    dL/db_u = (1/N) [ sum_i e_ui + lam_b w_u b_u ]      dL/dc_i = (1/N) [ sum_u e_ui + lam_b w_i c_i ]

Hessian-vector product along ``(dP, dQ, dY, db, dc)``: ``dz_u = dp_u + s_u sum_{j in N(u)} dy_j``,
``de_ui = db_u + dc_i + dq_i . z_u + q_i . dz_u``, ``h_u = sum_i (de_ui q_i + e_ui dq_i)``::

    (Hv)_p_u = (1/N) [ h_u + lam w_u dp_u ]             (Hv)_q_i = (1/N) [ sum_u (de_ui z_u + e_ui dz_u) + lam w_i dq_i ]
    (Hv)_y_j = (1/N) [ sum_{u: j in N(u)} s_u h_u + lam w_j dy_j ]
    (Hv)_b_u = (1/N) [ sum_i de_ui + lam_b w_u db_u ]   (Hv)_c_i = (1/N) [ sum_u de_ui + lam_b w_i dc_i ]

The Gauss-Newton product drops the residual terms ``e_ui dq_i`` and ``e_ui dz_u``: it is
``T^T`` (MF's Gauss-Newton product) ``T`` plus the penalty, positive semi-definite. So every
product costs one of MF's compiled passes (``mf_kernels``) plus two sparse products with ``A``
(``A Y`` forward, ``A^T (S G)`` back), O(N k) each; nothing of size m x n is formed.

``x = concat(P, Q, Y, b, c)`` (row-major). Serving folds the implicit part into the user factors:
a fit serves ``mu + b_u + c_i + q_i . z_u`` as an MF scorer with ``P := Z``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from pipeline.data.ratings import Ratings
from pipeline.objectives.base import PredictsRatings
from pipeline.objectives.engine import LocalEngine
from pipeline.objectives.mf import BiasedMF, MFHyper, hyper_of, rating_baselines
from pipeline.objectives.serving import FactorScorer
from pipeline.objectives.spec import ModelSpec


# The hyperparameters of biased MF, with the same meaning (the penalty on Y is lam, weighted like Q's).
SVDppHyper = MFHyper


class SVDpp(PredictsRatings):
    """The objective above on a training set (see the module docstring)."""

    BLOCKS = ("P", "Q", "Y", "b", "c")  # the parameter blocks, in ``unpack`` order

    def __init__(self, train: Ratings, hyper: SVDppHyper | None = None, *, engine=None, kernel: str = "auto",
                 **values):
        h = hyper_of(hyper, values)  # checks rank, penalties, weighting
        # MF's penalty-free data term at (Z, Q, b, c), its sums where the engine says
        self.data_term = BiasedMF(train, replace(h, reg=0.0, reg_bias=0.0), engine=engine or LocalEngine(kernel))
        mf = self.data_term
        weighting = h.weighting
        self.rank, self.reg, self.reg_bias, self.weighting = mf.rank, float(h.reg), float(h.reg_bias), weighting
        self.init_scale, self.mu = float(h.init_scale), mf.mu
        self._times_kernel = _SPARSE_TIMES[mf.kernel]  # chosen once, with the data term's kernel
        self.n_users, self.n_items, self.n_ratings = mf.n_users, mf.n_items, mf.n_ratings
        self.user_counts, self.item_counts = mf.user_counts, mf.item_counts
        self.w_user, self.w_item = (mf.user_counts, mf.item_counts) if weighting == "count" else \
            (np.ones(self.n_users), np.ones(self.n_items))
        self.s = np.where(mf.user_counts > 0, 1.0 / np.sqrt(np.maximum(mf.user_counts, 1.0)), 0.0)
        # S A (m x n, rows scaled by s_u) and its transpose, in CSR: the two sparse products
        self.SA = sp.csr_matrix((self.s[mf.users], (mf.users, mf.items)), shape=(self.n_users, self.n_items))
        self.SAT = self.SA.T.tocsr()
        m, n, k = self.n_users, self.n_items, self.rank
        self._cuts = np.cumsum([m * k, n * k, n * k, m])
        self.n_params = (m + 2 * n) * k + m + n
        self._x: np.ndarray | None = None
        per_row = lambda w, lam: np.repeat(lam * w, k)
        self._penalty_diagonal = np.concatenate([
            per_row(self.w_user, self.reg), per_row(self.w_item, self.reg), per_row(self.w_item, self.reg),
            self.reg_bias * self.w_user, self.reg_bias * self.w_item]) / self.n_ratings
        self._tx: np.ndarray | None = None

    # -- layout -----------------------------------------------------------------------------------
    def unpack(self, x: np.ndarray):
        """Views ``(P, Q, Y, b, c)`` into ``x``."""
        P, Q, Y, b, c = np.split(x, self._cuts)
        m, n, k = self.n_users, self.n_items, self.rank
        return P.reshape(m, k), Q.reshape(n, k), Y.reshape(n, k), b, c

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Small random ``P``, ``Q`` and ``Y`` (``N(0, init_scale^2)``), zero biases; users and items
        with no training rating start (and stay) at zero."""
        m, n, k = self.n_users, self.n_items, self.rank
        P = rng.normal(0.0, self.init_scale, (m, k)) * (self.user_counts > 0)[:, None]
        Q = rng.normal(0.0, self.init_scale, (n, k)) * (self.item_counts > 0)[:, None]
        Y = rng.normal(0.0, self.init_scale, (n, k)) * (self.item_counts > 0)[:, None]
        return np.concatenate([P.ravel(), Q.ravel(), Y.ravel(), np.zeros(m + n)])

    def symmetry_directions(self, x: np.ndarray) -> np.ndarray:
        """``(P A, Q A, Y A, 0, 0)`` for ``A = E_ab - E_ba``, ``a < b``: ``Z = P + S A Y`` turns with
        ``P`` and ``Y`` (``Z R``), so ``Z Q^T`` and the penalty are unchanged by ``R`` orthogonal, as
        for MF (``pipeline.curvature``)."""
        P, Q, Y, b, c = self.unpack(x)
        pairs = [(a, b_) for a in range(self.rank) for b_ in range(a + 1, self.rank)]
        out = np.zeros((self.n_params, len(pairs)))
        for j, (a, b_) in enumerate(pairs):
            turned = []
            for M in (P, Q, Y):
                d = np.zeros_like(M)
                d[:, b_], d[:, a] = M[:, a], -M[:, b_]
                turned.append(d.ravel())
            out[:, j] = np.concatenate(turned + [np.zeros(self.n_users + self.n_items)])
        return out

    def inactive_parameters(self) -> np.ndarray:
        """True for the factors, implicit factors and biases of users and items without a training
        rating (they start at zero and stay there)."""
        cu, ci = self.user_counts == 0, self.item_counts == 0
        k = self.rank
        return np.concatenate([np.repeat(cu, k), np.repeat(ci, k), np.repeat(ci, k), cu, ci])

    def _times(self, M: sp.csr_matrix, X: np.ndarray) -> np.ndarray:
        """``M @ X`` for a sparse ``M``: compiled, one thread per row, each row summed in its stored
        order (the same bits on any number of threads), or scipy's on the numpy path."""
        return self._times_kernel(M, X)

    def _effective(self, P: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """``Z = P + S A Y``."""
        return P + self._times(self.SA, Y)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """``T x = (Z, Q, b, c)`` in MF's layout."""
        P, Q, Y, b, c = self.unpack(np.asarray(x, dtype=np.float64))
        return np.concatenate([self._effective(P, Y).ravel(), Q.ravel(), b, c])

    def _at(self, x: np.ndarray) -> np.ndarray:
        """``T x`` for the point ``x``, kept for the next call at the same point (scipy asks for many
        Hessian-vector products at one ``x``; each then pays for its direction only)."""
        if self._x is None or not np.array_equal(self._x, x):
            self._x, self._tx = np.array(x, dtype=np.float64, copy=True), self._forward(x)
        return self._tx

    def _back(self, g_inner: np.ndarray) -> np.ndarray:
        """``T^T g``: MF's gradient at ``(Z, Q, b, c)`` as a gradient in ``(P, Q, Y, b, c)``."""
        gZ, gQ, gb, gc = self.data_term.unpack(g_inner)
        return np.concatenate([gZ.ravel(), gQ.ravel(), self._times(self.SAT, gZ).ravel(), gb, gc])

    def _penalty_times(self, v: np.ndarray) -> np.ndarray:
        """The penalty's Hessian (diagonal and constant: ``lam w / N`` per factor entry, ``lam_b w / N``
        per bias) times ``v``."""
        return self._penalty_diagonal * v

    # -- the protocol -------------------------------------------------------------------------------
    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        f, g = self.data_term.loss_grad(self._at(x))
        pen = self._penalty_times(x)
        return float(f + 0.5 * x @ pen), self._back(g) + pen

    def loss(self, x: np.ndarray) -> float:
        x = np.asarray(x, dtype=np.float64)
        return float(self.data_term.loss(self._at(x)) + 0.5 * x @ self._penalty_times(x))

    def _direction(self, v: np.ndarray) -> np.ndarray:
        """``T v``: a direction in ``(P, Q, Y, b, c)`` as one in ``(Z, Q, b, c)`` (T is linear)."""
        return self._forward(v)

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return self._back(self.data_term.hessp(self._at(x), self._direction(v))) + self._penalty_times(v)

    def gnvp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return self._back(self.data_term.gnvp(self._at(x), self._direction(v))) + self._penalty_times(v)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """``e / sqrt(N)``, so that the loss is ``1/2 |residuals|^2`` plus the penalty."""
        x = np.asarray(x, dtype=np.float64)
        mf = self.data_term
        return (mf.predict(self._at(x), mf.users, mf.items) - mf.ratings) / np.sqrt(self.n_ratings)

    def warm_up(self) -> None:
        """MF's kernels, and the sparse product on a tiny problem, compiled before any clock starts."""
        self.data_term.warm_up()
        self.kernel_threads = getattr(self.data_term, "kernel_threads", None)
        eye = sp.identity(2, format="csr")
        _COMPILE[self.data_term.kernel](lambda: self._times_kernel(eye, np.ones((2, self.rank))))

    def tune_threads(self) -> int:
        """MF's kernels carry the passes: as many threads as pay for them (``BiasedMF.tune_threads``)."""
        self.kernel_threads = self.data_term.tune_threads()
        return self.kernel_threads

    # -- serving ------------------------------------------------------------------------------------
    def scorer(self, x: np.ndarray) -> FactorScorer:
        """MF's scorer with the implicit part folded in: ``P := Z = P + S A Y``."""
        P, Q, Y, b, c = self.unpack(np.asarray(x, dtype=np.float64))
        return FactorScorer(self.mu, self._effective(P, Y), Q.copy(), b.copy(), c.copy())

    def predict(self, x: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``mu + b_u + c_i + q_i . z_u``; a user or item with no training rating adds no term."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        known_u = np.where(self.user_counts[users] > 0, users, -1)
        known_i = np.where(self.item_counts[items] > 0, items, -1)
        Z, Q, b, c = self.data_term.unpack(self._at(np.asarray(x, dtype=np.float64)))  # views of T x, kept
        return FactorScorer(self.mu, Z, Q, b, c).predict(known_u, known_i)


def _compiled_csr_times_dense():
    """``out = M @ X`` for CSR ``M``: a numba kernel, parallel over rows, each row's terms added in
    stored order (no reduction across threads, so the bits do not depend on the thread count)."""
    from numba import njit, prange

    @njit(parallel=True, cache=True, nogil=True)
    def csr_times_dense(indptr, indices, data, X, out):
        k = X.shape[1]
        for row in prange(len(indptr) - 1):
            for t in range(k):
                out[row, t] = 0.0
            for p in range(indptr[row], indptr[row + 1]):
                col, weight = indices[p], data[p]
                for t in range(k):
                    out[row, t] += weight * X[col, t]
    return csr_times_dense


try:
    _csr_times_dense = _compiled_csr_times_dense()
except ImportError:  # numba absent: the numpy path (scipy's product) is the only one
    _csr_times_dense = None


def _compiled_times(M: sp.csr_matrix, X: np.ndarray) -> np.ndarray:
    out = np.empty((M.shape[0], X.shape[1]))
    _csr_times_dense(M.indptr, M.indices, M.data, np.ascontiguousarray(X), out)
    return out


# ``M @ X`` by the kernel of the data term: scipy's on the numpy path, compiled (same bits on any
# number of threads) on the numba path.
_SPARSE_TIMES = {"numpy": lambda M, X: M @ X, "numba": _compiled_times}


def _compile_sound(run) -> None:
    from pipeline.objectives.mf_kernels import with_sound_cache
    with_sound_cache(_csr_times_dense, run)


_COMPILE = {"numpy": lambda run: None, "numba": _compile_sound}  # warm-up of the product, by kernel


DERIVATION = r"""For N training ratings, `N(u)` the items user u rated, `s_u = |N(u)|^(-1/2)` and effective user factors
`z_u = p_u + s_u sum_{j in N(u)} y_j`, residuals `e_ui = mu + b_u + c_i + q_i.z_u - r_ui`:

    L = (1/N) [ 1/2 sum e_ui^2 + lam/2 (sum_u w_u |p_u|^2 + sum_i w_i (|q_i|^2 + |y_i|^2)) + lam_b/2 (sum_u w_u b_u^2 + sum_i w_i c_i^2) ]

The data term is biased MF's at `(Z, Q, b, c)` and `Z = P + S A Y` is linear in the parameters (`A` the rated
pairs, `S = diag(s_u)`), so with `T` that linear map the chain rule is exact: `grad L = T^T grad g + grad pen`,
`H v = T^T H_g (T v) + H_pen v`. Spelled out: `dL/dp_u = (1/N)[G_u + lam w_u p_u]` with `G_u = sum_i e_ui q_i`,
`dL/dy_j = (1/N)[sum_{u: j in N(u)} s_u G_u + lam w_j y_j]`, `dL/dq_i = (1/N)[sum_u e_ui z_u + lam w_i q_i]`.
Each product is one of MF's compiled passes plus two sparse products with `A`; Gauss-Newton drops the
`e_ui dq_i` and `e_ui dz_u` terms (full derivation: docs/derivation.md).
"""

SPEC = ModelSpec(
    name="svdpp", summary="SVD++: biased MF with implicit feedback from the items each user rated",
    hyper=SVDppHyper,
    build=lambda train, h, engine: SVDpp(train, h, engine=engine),
    baselines=lambda train, h: rating_baselines(train, h.reg_bias, h.weighting),
    title="SVD++ (biased matrix factorization with implicit feedback)", derivation=DERIVATION,
    headline=("rank", "reg"))
