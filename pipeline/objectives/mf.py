r"""Biased matrix factorization with L2 regularization: loss, gradient, Hessian-vector product.

Model and objective
-------------------
N training ratings ``(u, i, r)``; ``mu`` is the mean training rating (a constant, not a
parameter). Parameters: user factors ``P`` (m x k), item factors ``Q`` (n x k), user biases
``b`` (m), item biases ``c`` (n)::

    rhat_ui = mu + b_u + c_i + p_u . q_i            e_ui = rhat_ui - r_ui

    L(P, Q, b, c) = (1/N) [ 1/2 sum_(u,i) e_ui^2
                            + lam/2   (sum_u w_u |p_u|^2 + sum_i w_i |q_i|^2)
                            + lam_b/2 (sum_u w_u  b_u^2  + sum_i w_i  c_i^2) ]

Penalty weighting: ``"none"`` gives ``w = 1`` (plain L2); ``"count"`` gives ``w_u = n_u`` and
``w_i = n_i``, the number of training ratings of the user or item, which is the penalty that
per-rating SGD (Surprise's SVD) and ALS-WR effectively minimize. The weights apply to the
biases as well as the factors, so ``"count"`` matches SGD term for term.

Gradient (sums over the ratings of the user / item)::

    dL/dp_u = (1/N) [ sum_i e_ui q_i + lam w_u p_u ]       dL/db_u = (1/N) [ sum_i e_ui + lam_b w_u b_u ]
    dL/dq_i = (1/N) [ sum_u e_ui p_u + lam w_i q_i ]       dL/dc_i = (1/N) [ sum_u e_ui + lam_b w_i c_i ]

Hessian-vector product in the direction ``v = (dP, dQ, db, dc)``. The directional derivative of
the residual is ``de_ui = db_u + dc_i + dp_u . q_i + p_u . dq_i``; differentiating the gradient
along ``v``::

    (Hv)_p_u = (1/N) [ sum_i (de_ui q_i + e_ui dq_i) + lam w_u dp_u ]
    (Hv)_q_i = (1/N) [ sum_u (de_ui p_u + e_ui dp_u) + lam w_i dq_i ]
    (Hv)_b_u = (1/N) [ sum_i de_ui + lam_b w_u db_u ]
    (Hv)_c_i = (1/N) [ sum_u de_ui + lam_b w_i dc_i ]

The ``e_ui dq_i`` and ``e_ui dp_u`` terms are the residual curvature; dropping them gives the
Gauss-Newton product ``J^T J v / N + penalty``, positive semi-definite (:meth:`gnvp`). The exact
Hessian is indefinite away from a minimum (MF is non-convex: ``P = Q = 0`` is a saddle point).

Conventions
-----------
``x = concat(P.ravel(), Q.ravel(), b, c)``, row-major, length ``(m + n)(k + 1)``.

Two implementations of the same math: ``kernel="numpy"``, the readable reference below (sparse
products, gathered N x k rows), and ``kernel="numba"`` (default when numba is installed), one
fused compiled pass per call in ``mf_kernels.py`` with memory O(parameters + ratings), parallel
over blocks of users. Tests hold them equal to 1e-10 relative.
With ``E`` the sparse m x n matrix of residuals, the sums are sparse products: ``E @ Q``,
``E.T @ P``; every call costs O(N k) time. The state that depends on ``x`` alone (residuals,
gathered factor rows, ``E``) is cached, so the inner CG steps of Newton-CG at one ``x`` pay only
for the direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipeline.data.ratings import Ratings
from pipeline.objectives.base import PredictsRatings
from pipeline.objectives.serving import FactorScorer
from pipeline.objectives.spec import ModelSpec, hyperparameter

WEIGHTINGS = ("none", "count")
KERNELS = ("auto", "numba", "numpy")


@dataclass(frozen=True)
class MFHyper:
    """Hyperparameters of biased MF (the CLI options ``--rank`` ... are made from these)."""

    rank: int = hyperparameter(10, "Number of latent factors k.", low=1)
    reg: float = hyperparameter(0.1, "Factor penalty lambda (see --weighting).", low=0)
    reg_bias: float = hyperparameter(0.1, "Bias penalty lambda_b.", low=0)
    weighting: str = hyperparameter("count", "Penalty weights: 'count' weights each user/item by its number of "
                                             "training ratings (what SGD and ALS-WR minimize); 'none' is plain L2.",
                                    choices=WEIGHTINGS)
    init_scale: float = hyperparameter(0.1, "Standard deviation of the random starting factors.", low=0,
                                       low_open=True)
    kernel: str = hyperparameter("auto", "The compiled kernels (numba) or the numpy reference; auto: numba "
                                         "where installed.", choices=KERNELS)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a declared dependency
        return False
    return True


@dataclass
class _State:
    """What depends on ``x`` alone, cached between calls at the same point."""

    x: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    b: np.ndarray
    c: np.ndarray
    Pu: np.ndarray  # P[users], N x k
    Qi: np.ndarray  # Q[items], N x k
    e: np.ndarray   # residuals, N
    E: sp.csr_matrix


class BiasedMF(PredictsRatings):
    """The objective above on a training set. See the module docstring for the math."""

    BLOCKS = ("P", "Q", "b", "c")  # the parameter blocks, in ``unpack`` order

    def __init__(self, train: Ratings, rank: int = 10, reg: float = 0.05, reg_bias: float = 0.05,
                 weighting: str = "count", init_scale: float = 0.1, kernel: str = "auto",
                 mu: float | None = None):
        if rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        if reg < 0 or reg_bias < 0:
            raise ValueError(f"penalties must be non-negative, got reg={reg}, reg_bias={reg_bias}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if len(train) == 0:
            raise ValueError("the training set is empty")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if kernel == "auto":
            kernel = "numba" if _numba_available() else "numpy"
        self.kernel = kernel
        self.rank, self.reg, self.reg_bias, self.weighting = int(rank), float(reg), float(reg_bias), weighting
        self.init_scale = float(init_scale)
        self.n_users, self.n_items = train.n_users, train.n_items
        # CSR order: by user, then item (one int64 key; pairs are unique, so any sort gives one order)
        order = np.argsort(train.users.astype(np.int64) * train.n_items + train.items)
        self.users = train.users[order].astype(np.int64)
        self.items = train.items[order].astype(np.int64)
        self.ratings = train.ratings[order]
        self.n_ratings = len(self.ratings)
        self.mu = float(self.ratings.mean()) if mu is None else float(mu)  # a shard uses the global mean
        self.user_counts = np.bincount(self.users, minlength=self.n_users).astype(np.float64)
        self.item_counts = np.bincount(self.items, minlength=self.n_items).astype(np.float64)
        self.indptr = np.concatenate([[0], np.cumsum(self.user_counts)]).astype(np.int64)
        if weighting == "count":
            self.w_user, self.w_item = self.user_counts, self.item_counts
        else:
            self.w_user, self.w_item = np.ones(self.n_users), np.ones(self.n_items)
        m, n, k = self.n_users, self.n_items, self.rank
        self._cuts = np.cumsum([m * k, n * k, m])
        self.n_params = (m + n) * (k + 1)
        self._state: _State | None = None
        if self.kernel == "numba":
            from pipeline.objectives import mf_kernels as K
            # Items relabelled by popularity inside the kernels, so the rows most ratings touch are
            # contiguous in memory (measured at 5M ratings x 59k items: loss_grad 20 % and hessp
            # 39 % faster). Q, c and their directions are permuted per call (O(n k), not O(N)).
            self._k_item_order = np.argsort(-self.item_counts, kind="stable")  # new label -> item
            item_rank = np.empty(self.n_items, np.int64)
            item_rank[self._k_item_order] = np.arange(self.n_items)
            # The order the kernels visit the ratings in (cache blocks on large data; see schedule).
            perm, self._k_sched = K.schedule(self.users, item_rank[self.items], self.indptr, self.n_items, self.rank)
            self._k_ratings = self.ratings[perm]
            n_blocks = len(self._k_sched[0]) - 1
            self._k_buf = np.empty((n_blocks, self.n_items, self.rank + 1))  # per-block item sums
            self._k_V = np.empty((self.n_items, self.rank + 1))               # (q_i, c_i) at _fast_x
            self._k_HV = np.empty((self.n_items, 2 * (self.rank + 1)))       # (q_i, c_i, dq_i, dc_i)
            self._fast_x: np.ndarray | None = None
            self._fast_e = np.empty(self.n_ratings)

    # -- layout ---------------------------------------------------------------------------
    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views ``(P, Q, b, c)`` into ``x`` (no copies)."""
        P, Q, b, c = np.split(x, self._cuts)
        return P.reshape(self.n_users, self.rank), Q.reshape(self.n_items, self.rank), b, c

    def pack(self, P, Q, b, c) -> np.ndarray:
        return np.concatenate([np.ravel(P), np.ravel(Q), np.ravel(b), np.ravel(c)]).astype(np.float64)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Small random factors ``N(0, init_scale^2)`` (zero factors are a saddle), zero biases.

        Users and items with no training rating start (and, having zero gradient, stay) at zero.
        """
        P = rng.normal(0.0, self.init_scale, (self.n_users, self.rank)) * (self.user_counts > 0)[:, None]
        Q = rng.normal(0.0, self.init_scale, (self.n_items, self.rank)) * (self.item_counts > 0)[:, None]
        return self.pack(P, Q, np.zeros(self.n_users), np.zeros(self.n_items))

    # -- cached state at x -----------------------------------------------------------------
    def _csr(self, data: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((data, self.items, self.indptr), shape=(self.n_users, self.n_items))

    def _at(self, x: np.ndarray) -> _State:
        s = self._state
        if s is not None and (s.x is x or np.array_equal(s.x, x)):
            return s
        x = np.array(x, dtype=np.float64, copy=True)
        P, Q, b, c = self.unpack(x)
        Pu, Qi = P[self.users], Q[self.items]
        e = self.mu + b[self.users] + c[self.items] + np.einsum("nk,nk->n", Pu, Qi) - self.ratings
        self._state = _State(x, P, Q, b, c, Pu, Qi, e, self._csr(e))
        return self._state

    # -- the protocol -------------------------------------------------------------------------
    def loss(self, x: np.ndarray) -> float:
        """``L(x)`` alone: one pass for the residuals, no gradient products (line searches)."""
        if self.kernel == "numba":
            return self._fast_loss_grad(x, with_grad=False)[0]
        s = self._at(x)
        return self._loss(s)

    # -- compiled path (same math; see mf_kernels) ----------------------------------------------
    def _penalty(self, P, Q, b, c) -> float:
        lam, lam_b, wu, wi = self.reg, self.reg_bias, self.w_user, self.w_item
        return float(0.5 * lam * (wu @ np.einsum("uk,uk->u", P, P) + wi @ np.einsum("ik,ik->i", Q, Q))
                     + 0.5 * lam_b * (wu @ (b * b) + wi @ (c * c)))

    def _fast_remember(self, x: np.ndarray) -> None:
        if self._fast_x is None:
            self._fast_x = np.empty_like(x)
        np.copyto(self._fast_x, x)

    def _fast_at(self, x: np.ndarray) -> None:
        """Item rows ``V`` and residuals ``e`` at ``x`` (kept while ``x`` does not change)."""
        from pipeline.objectives import mf_kernels as K
        if self._fast_x is not None and np.array_equal(self._fast_x, x):
            return
        P, Q, b, c = self.unpack(x)
        K.item_rows(self._k_item_order, Q, c, Q, c, self._k_V)
        K.residuals(self._k_sched, self._k_ratings, self.mu, P, b, self._k_V, self._fast_e)
        self._fast_remember(x)

    def _fast_loss_grad(self, x: np.ndarray, with_grad: bool = True):
        """Value (and gradient). ``loss`` alone runs the same pass: a residual-only pass would be
        cheaper, but its sums, re-associated differently, differ from these in the last bits, and
        line searches compare values from both (gradient descent then stopped early in a test)."""
        from pipeline.objectives import mf_kernels as K
        x = np.ascontiguousarray(x, dtype=np.float64)
        P, Q, b, c = self.unpack(x)
        V, order, scale = self._k_V, self._k_item_order, 1.0 / self.n_ratings
        K.item_rows(order, Q, c, Q, c, V)
        g = np.empty(self.n_params)
        gP, gQ, gb, gc = self.unpack(g)  # the kernels write straight into the gradient vector
        lam, lam_b = self.reg, self.reg_bias
        data = K.loss_grad(self._k_sched, self._k_ratings, self.mu, P, b, V, self.w_user, lam, lam_b, scale,
                           self._fast_e, gP, gb, self._k_buf)
        data += K.finish_items(order, self._k_buf, V, 0, self.w_item, lam, lam_b, scale, gQ, gc)
        self._fast_remember(x)
        return data * scale, (g if with_grad else None)

    def _add_penalty(self, out: np.ndarray, v: np.ndarray) -> None:
        """``out += D v`` with ``D`` the (diagonal) penalty Hessian, in place."""
        oP, oQ, ob, oc = self.unpack(out)
        vP, vQ, vb, vc = self.unpack(v)
        lam, lam_b = self.reg, self.reg_bias
        oP += (lam * self.w_user)[:, None] * vP
        oQ += (lam * self.w_item)[:, None] * vQ
        ob += lam_b * self.w_user * vb
        oc += lam_b * self.w_item * vc

    def _fast_hessp(self, x: np.ndarray, v: np.ndarray, exact: bool) -> np.ndarray:
        from pipeline.objectives import mf_kernels as K
        x = np.ascontiguousarray(x, dtype=np.float64)
        self._fast_at(x)
        P, Q, b, c = self.unpack(x)
        dP, dQ, db, dc = self.unpack(np.ascontiguousarray(v, dtype=np.float64))
        HV, order, scale = self._k_HV, self._k_item_order, 1.0 / self.n_ratings
        K.item_rows(order, Q, c, dQ, dc, HV)
        h = np.empty(self.n_params)
        hP, hQ, hb, hc = self.unpack(h)
        lam, lam_b = self.reg, self.reg_bias
        K.hessp(self._k_sched, self._fast_e, P, dP, db, HV, exact, self.w_user, lam, lam_b, scale, hP, hb,
                self._k_buf)
        K.finish_items(order, self._k_buf, HV, self.rank + 1, self.w_item, lam, lam_b, scale, hQ, hc)
        return h

    def _loss(self, s: _State) -> float:
        lam, lam_b, wu, wi = self.reg, self.reg_bias, self.w_user, self.w_item
        data = 0.5 * float(s.e @ s.e)
        pen = 0.5 * lam * (wu @ np.einsum("uk,uk->u", s.P, s.P) + wi @ np.einsum("ik,ik->i", s.Q, s.Q))
        pen_b = 0.5 * lam_b * (wu @ (s.b * s.b) + wi @ (s.c * s.c))
        return float(data + pen + pen_b) / self.n_ratings

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        if self.kernel == "numba":
            return self._fast_loss_grad(x)
        s = self._at(x)
        lam, lam_b, wu, wi = self.reg, self.reg_bias, self.w_user, self.w_item
        gP = s.E @ s.Q + lam * wu[:, None] * s.P
        gQ = s.E.T @ s.P + lam * wi[:, None] * s.Q
        gb = np.bincount(self.users, s.e, self.n_users) + lam_b * wu * s.b
        gc = np.bincount(self.items, s.e, self.n_items) + lam_b * wi * s.c
        return self._loss(s), self.pack(gP, gQ, gb, gc) / self.n_ratings

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Exact ``H(x) v``; see the module docstring."""
        return self._hessp(x, v, exact=True)

    def gnvp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Gauss-Newton product (residual curvature dropped), positive semi-definite."""
        return self._hessp(x, v, exact=False)

    def _hessp(self, x: np.ndarray, v: np.ndarray, exact: bool) -> np.ndarray:
        if self.kernel == "numba":
            return self._fast_hessp(x, v, exact)
        s = self._at(x)
        dP, dQ, db, dc = self.unpack(np.asarray(v, dtype=np.float64))
        de = (db[self.users] + dc[self.items]
              + np.einsum("nk,nk->n", dP[self.users], s.Qi)
              + np.einsum("nk,nk->n", s.Pu, dQ[self.items]))
        De = self._csr(de)
        lam, lam_b, wu, wi = self.reg, self.reg_bias, self.w_user, self.w_item
        hP = De @ s.Q + lam * wu[:, None] * dP
        hQ = De.T @ s.P + lam * wi[:, None] * dQ
        if exact:
            hP += s.E @ dQ
            hQ += s.E.T @ dP
        hb = np.bincount(self.users, de, self.n_users) + lam_b * wu * db
        hc = np.bincount(self.items, de, self.n_items) + lam_b * wi * dc
        return self.pack(hP, hQ, hb, hc) / self.n_ratings

    # -- model-specific solvers (optional capabilities: ALS and SGD use them) -------------------
    def _item_order(self):
        """The ratings by item (CSC): ``(order, indptr, users, ratings)``, built on first use."""
        if not hasattr(self, "_by_item"):
            order = np.lexsort((self.users, self.items))
            counts = self.item_counts.astype(np.int64)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._by_item = (order, indptr, self.users[order], self.ratings[order])
        return self._by_item

    def precondition(self, x: np.ndarray):
        """``v -> M^-1 v`` for ``M`` the block diagonal of the Hessian at ``x``: per user the
        (k+1)-square block over ``(p_u, b_u)``, ``(1/N)(sum_i z_i z_i^T + w_u D)`` with
        ``z_i = (q_i, 1)``, ``D = diag(lam, ..., lam, lam_b)`` (exact: the residual curvature has no
        term inside a block, since ``e_ui`` is linear in ``(p_u, b_u)``), and per item the same with
        ``(p_u, 1)``. These are ALS's normal matrices; each is Cholesky-factored once here (two
        passes over the ratings, as an ALS sweep) and every application costs two triangular
        solves per row, O((m + n) k^2), no pass over the ratings. What ``M`` drops: the blocks that
        couple a user with an item (``q_i p_u^T / N`` and the residual curvature ``e_ui I / N``).
        Symmetric positive definite (a row without ratings or penalty gets the identity)."""
        x = np.asarray(x, dtype=np.float64)
        P, Q, b, c = self.unpack(x)
        k1 = self.rank + 1
        _, indptr_i, users_i, _ = self._item_order()
        sides = ((self.indptr, self.items, Q, self.w_user), (indptr_i, users_i, P, self.w_item))
        factors = []
        for indptr, cols, F, w in sides:
            L = np.empty((len(indptr) - 1, k1, k1))
            if self.kernel == "numba":
                from pipeline.objectives import mf_kernels as K
                K.block_cholesky(indptr, cols, np.ascontiguousarray(F), w, self.reg, self.reg_bias, L)
            else:
                for row in range(len(indptr) - 1):
                    Z = np.column_stack([F[cols[indptr[row]:indptr[row + 1]]], np.ones(indptr[row + 1] - indptr[row])])
                    A = Z.T @ Z + w[row] * np.diag([self.reg] * self.rank + [self.reg_bias])
                    try:
                        L[row] = np.linalg.cholesky(A)
                    except np.linalg.LinAlgError:  # no ratings and no penalty: never moves
                        L[row] = np.eye(k1)
            factors.append(L)

        def solve(L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
            if self.kernel == "numba":
                from pipeline.objectives import mf_kernels as K
                out = np.empty_like(rhs)
                K.block_solve(L, rhs, out)
                return out
            y = np.linalg.solve(L, rhs[..., None])
            return np.linalg.solve(np.swapaxes(L, 1, 2), y)[..., 0]

        def apply(v: np.ndarray) -> np.ndarray:
            vP, vQ, vb, vc = self.unpack(np.asarray(v, dtype=np.float64))
            users = solve(factors[0], np.column_stack([vP, vb]))
            items = solve(factors[1], np.column_stack([vQ, vc]))
            return self.n_ratings * self.pack(users[:, :-1], items[:, :-1], users[:, -1], items[:, -1])
        return apply

    def als_sweep(self, x: np.ndarray) -> np.ndarray:
        """One ALS sweep: every ``(p_u, b_u)`` exactly, then every ``(q_i, c_i)`` exactly.

        With the other side fixed, ``(p_u, b_u)`` solves the ridge problem
        ``min sum_i (z_i . (p_u, b_u) - t_ui)^2 + w_u (lam |p_u|^2 + lam_b b_u^2)`` with
        ``z_i = (q_i, 1)`` and ``t_ui = r_ui - mu - c_i``: the normal equations
        ``(sum_i z_i z_i^T + w_u D) y = sum_i t_ui z_i``, ``D = diag(lam, ..., lam, lam_b)``,
        a (k+1)-square system per user: solved in one batched call here, by Cholesky per row in a
        compiled parallel pass on the fast path (``mf_kernels.ridge_rows``). Each half-sweep is an exact
        block minimization, so ALS never increases the objective. Costs two passes over the ratings.
        """
        if self.kernel == "numba":  # the same normal equations, solved in one compiled parallel pass per side
            from pipeline.objectives import mf_kernels as K
            out = np.array(x, dtype=np.float64, copy=True)
            P, Q, b, c = self.unpack(out)
            _, indptr_i, users_i, ratings_i = self._item_order()
            bad = K.ridge_rows(self.indptr, self.items, self.ratings, self.mu, Q, c, self.w_user, self.reg,
                               self.reg_bias, P, b)
            bad += K.ridge_rows(indptr_i, users_i, ratings_i, self.mu, P, b, self.w_item, self.reg, self.reg_bias, Q, c)
            if bad:  # as np.linalg.solve on the reference path
                raise np.linalg.LinAlgError(f"ALS: {bad} singular per-row systems (a zero penalty with too few ratings)")
            return out
        P, Q, b, c = (a.copy() for a in self.unpack(np.asarray(x, dtype=np.float64)))
        P, b = self._ridge_side(self.users, self.items, self.indptr, Q, c, self.w_user, np.arange(self.n_ratings))
        order, indptr_i, users_i, _ = self._item_order()
        Q, c = self._ridge_side(self.items[order], users_i, indptr_i, P, b, self.w_item, order)
        return self.pack(P, Q, b, c)

    def _ridge_side(self, rows, cols, indptr, F, f_bias, w, order):
        k = self.rank
        n_rows = len(indptr) - 1
        Z = np.empty((len(rows), k + 1))
        Z[:, :k] = F[cols]
        Z[:, k] = 1.0
        t = self.ratings[order] - self.mu - f_bias[cols]
        counts = np.diff(indptr)
        has = counts > 0
        A = np.zeros((n_rows, k + 1, k + 1))
        rhs = np.zeros((n_rows, k + 1))
        for r in np.flatnonzero(has):  # one small Gram matrix per user (item): memory O(k^2) each
            Zr = Z[indptr[r]:indptr[r + 1]]
            A[r] = Zr.T @ Zr
            rhs[r] = Zr.T @ t[indptr[r]:indptr[r + 1]]
        diag = np.r_[np.full(k, self.reg), self.reg_bias]
        A += w[:, None, None] * np.diag(diag)[None]
        A[~has] = np.eye(k + 1)  # no ratings: the solution is 0 (rhs is 0)
        sol = np.linalg.solve(A, rhs[..., None])[..., 0]
        return sol[:, :k], sol[:, k]

    def sgd_epoch(self, x: np.ndarray, lr: float, rng: np.random.Generator) -> np.ndarray:
        """One epoch of per-rating SGD (Surprise's SVD update) in a random order.

        For each rating: ``e = rhat - r``; ``p_u -= lr (e q_i + lam p_u)``,
        ``q_i -= lr (e p_u + lam q_i)``, ``b_u -= lr (e + lam_b b_u)``, ``c_i -= lr (e + lam_b c_i)``.
        These are stochastic gradient steps on ``sum_(u,i) [1/2 e^2 + lam/2 (|p_u|^2 + |q_i|^2)
        + lam_b/2 (b_u^2 + c_i^2)] = N L`` with ``weighting="count"`` (each user's penalty counted
        once per rating): SGD minimizes this objective only under count weighting.
        """
        if self.weighting != "count":
            raise ValueError("sgd minimizes the count-weighted objective only: run it with --weighting count")
        x = np.array(x, dtype=np.float64, copy=True)
        P, Q, b, c = self.unpack(x)
        lam, lam_b, mu = self.reg, self.reg_bias, self.mu
        users, items, ratings = self.users, self.items, self.ratings
        order = rng.permutation(self.n_ratings)
        if self.kernel == "numba":  # the same steps in the same order, compiled
            from pipeline.objectives import mf_kernels as K
            K.sgd_epoch(order, users, items, ratings, mu, float(lr), lam, lam_b, P, Q, b, c)
            return x
        for j in order:
            u, i = users[j], items[j]
            pu, qi = P[u], Q[i]
            e = mu + b[u] + c[i] + pu @ qi - ratings[j]
            pu_old = pu.copy()
            pu -= lr * (e * qi + lam * pu)
            qi -= lr * (e * pu_old + lam * qi)
            b[u] -= lr * (e + lam_b * b[u])
            c[i] -= lr * (e + lam_b * c[i])
        return x

    # -- compilation, outside any clock ----------------------------------------------------------
    @staticmethod
    def compile_kernels() -> float:
        """Compile every kernel into numba's on-disk cache (``make install`` runs this, so no
        command of a fresh clone compiles); returns the seconds it took."""
        import time
        t0 = time.perf_counter()
        BiasedMF(_tiny_ratings(), rank=2, kernel="numba").warm_up()
        return time.perf_counter() - t0

    def warm_up(self) -> None:
        """Compile (or load from numba's on-disk cache) every kernel this objective's methods call,
        by running each once on a tiny problem of the same kind (same rank, weighting, kernel and
        argument types). A comparison calls this before any optimizer's clock starts, so the first
        iteration of the first method costs what the tenth does. A no-op on the numpy path."""
        if self.kernel != "numba":
            return
        from pipeline.objectives import mf_kernels as K
        K.with_sound_cache(K.loss_grad, self._run_every_kernel)
        self.tune_threads()

    def _run_every_kernel(self) -> None:
        rng = np.random.default_rng(0)
        tiny = _tiny_ratings()
        mf = BiasedMF(tiny, rank=self.rank, reg=max(self.reg, 0.1), reg_bias=max(self.reg_bias, 0.1),
                      weighting=self.weighting, kernel="numba")
        x = mf.init(rng)
        mf.loss_grad(x)
        mf.loss(x + 0.1)
        mf.hessp(x, x)
        mf.gnvp(x + 0.2, x)  # at a new point: the residual pass alone
        mf.als_sweep(x)
        mf.precondition(x)(x)
        if self.weighting == "count":
            mf.sgd_epoch(x, 0.01, rng)
        mf.predict(x, tiny.users, tiny.items)

    def tune_threads(self) -> int:
        """Run the kernels on as many threads as pay on this problem and machine, measured now
        (``mf_kernels.choose_threads``; results do not depend on it). Called before each fit,
        outside its clock: a machine that got busy since the last fit is seen."""
        if self.kernel != "numba":
            return 1
        from pipeline.objectives import mf_kernels as K
        x = self.init(np.random.default_rng(0))
        self.kernel_threads = K.choose_threads(lambda: self.loss_grad(x + 0.0))
        return self.kernel_threads

    # -- prediction -----------------------------------------------------------------------------
    def predict(self, x: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``mu + b_u + c_i + p_u . q_i``, using only what training saw.

        A user (item) with no training rating contributes no bias and no factor term, so a cold
        pair gets the global mean plus whatever bias is known. Not clipped; see ``evaluate``.
        """
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        known_u = np.where(self.user_counts[users] > 0, users, -1)
        known_i = np.where(self.item_counts[items] > 0, items, -1)
        return FactorScorer(self.mu, *self.unpack(np.asarray(x, dtype=np.float64))).predict(known_u, known_i)

    def residuals(self, x: np.ndarray) -> np.ndarray:
        """``e / sqrt(N)`` over the training ratings: the loss is ``1/2 |residuals|^2`` plus the penalty."""
        return (self.predict(x, self.users, self.items) - self.ratings) / np.sqrt(self.n_ratings)

    def scorer(self, x: np.ndarray) -> FactorScorer:
        """What a fit serves: its factors and biases (copies)."""
        return FactorScorer(self.mu, *(a.copy() for a in self.unpack(np.asarray(x, dtype=np.float64))))

    def describe(self) -> dict:
        return {"model": "biased-mf", "kernel": self.kernel, "rank": self.rank, "reg": self.reg, "reg_bias": self.reg_bias,
                "weighting": self.weighting, "init_scale": self.init_scale, "n_params": self.n_params}


def _tiny_ratings() -> Ratings:
    """4 users x 3 items, every pair rated: the problem the kernels are compiled on."""
    users, items = np.divmod(np.arange(12), 3)
    return Ratings(users=users.astype(np.int32), items=items.astype(np.int32), ratings=np.arange(12) % 5 + 1.0,
                   user_ids=np.arange(4), item_ids=np.arange(3), rating_scale=(1.0, 5.0), name="warm-up")


DERIVATION = """\
For N training ratings, residuals `e_ui = mu + b_u + c_i + p_u.q_i - r_ui` and weights `w` (rating counts, or 1):

    L = (1/N) [ 1/2 sum e_ui^2 + lam/2 (sum_u w_u |p_u|^2 + sum_i w_i |q_i|^2) + lam_b/2 (sum_u w_u b_u^2 + sum_i w_i c_i^2) ]

Gradient: `dL/dp_u = (1/N)[sum_i e_ui q_i + lam w_u p_u]`, `dL/db_u = (1/N)[sum_i e_ui + lam_b w_u b_u]`, and likewise for items.
Hessian-vector product along `(dP, dQ, db, dc)`: with `de_ui = db_u + dc_i + dp_u.q_i + p_u.dq_i`,
`(Hv)_p_u = (1/N)[sum_i (de_ui q_i + e_ui dq_i) + lam w_u dp_u]` and symmetrically for `q_i`; the `e_ui dq_i`
terms are the residual curvature that Gauss-Newton drops. On the numpy path the exact product is four sparse matrix
products over the ratings (two with `de`, two with `e`; Gauss-Newton's two), on the compiled path one fused pass:
O(N k) either way, and the Hessian is never formed (full derivation: docs/derivation.md).
"""


def _build(train: Ratings, h: MFHyper) -> BiasedMF:
    return BiasedMF(train, rank=h.rank, reg=h.reg, reg_bias=h.reg_bias, weighting=h.weighting,
                    init_scale=h.init_scale, kernel=h.kernel)


def rating_baselines(train: Ratings, reg_bias: float, weighting: str) -> dict:
    """The global mean and the fitted biases ``mu + b_u + c_i``: what any rating model must beat."""
    from pipeline import evaluate
    return {"global-mean": evaluate.global_mean_baseline(train),
            "biases-only": evaluate.biases_baseline(train, reg_bias, weighting)}


SPEC = ModelSpec(
    name="mf", summary="biased matrix factorization", hyper=MFHyper, build=_build,
    baselines=lambda train, h: rating_baselines(train, h.reg_bias, h.weighting),
    title="biased matrix factorization", derivation=DERIVATION, headline=("rank", "reg"))
