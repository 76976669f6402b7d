r"""Biased MF's sums over the ratings, behind one interface, with several implementations.

The model (:class:`pipeline.objectives.mf.BiasedMF`) owns the math that does not read the
ratings: the layout of ``x``, the penalty, ``init``, ``predict``, the scorer, and how an ALS sweep
and the block preconditioner are put together from per-row solves. Everything that streams the
ratings is a *sums* object, chosen once when the model is built (by an engine:
:class:`pipeline.objectives.engine.LocalEngine` here, ``pipeline.distributed.DaskEngine`` on a
cluster), never asked for by name afterwards:

=====================  ===========================================================================
``loss(x, pen)``       ``L(x)``; ``pen`` is the :class:`Penalty` (weights and lambdas)
``loss_grad(x, pen)``  ``(L, grad L)``
``hessp(x, v, exact,   ``H v`` (``exact``) or the Gauss-Newton product ``J^T J v / N + D v``
pen)``
``ridge(side, x,       one ALS half-sweep: every row of ``side`` (0 users, 1 items) minimized
pen)``                 exactly with the other side of ``x`` fixed; returns ``(F, bias)``
``block_factors(side,  Cholesky factors of the Hessian's diagonal blocks of ``side`` times N
x, pen)``
``block_solve(L, r)``  ``(L L^T)^-1 r`` per row
``normal_equations(    the unpenalized per-row ALS systems ``(A, rhs)`` of ``side`` (what a shard
side, x)``             adds to a row whose ratings are spread over shards)
``sgd_epoch(x, order,  per-rating SGD in ``order``, in place
lr, pen)``
``OFFERS``             the optional operations this implementation computes (``gnvp``,
                       ``als_sweep``, ``precondition``, ``sgd_epoch``): the model offers those
=====================  ===========================================================================

Two implementations here: :class:`NumpySums`, the readable reference (sparse products, gathered
N x k rows), and :class:`NumbaSums`, one fused compiled pass per call (``mf_kernels``), memory
O(parameters + ratings). Tests hold every implementation equal to the reference to 1e-10 and run
the objective contract over each (``tests/test_mf_sums.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipeline.data.ratings import Ratings

USERS, ITEMS = 0, 1  # the two sides of the ratings matrix
OPTIONAL = frozenset({"gnvp", "als_sweep", "precondition", "sgd_epoch"})  # what an implementation may offer


@dataclass(frozen=True)
class Penalty:
    """``lam/2 sum w |f|^2 + lam_b/2 sum w bias^2`` over users and items (times N in the loss)."""

    reg: float
    reg_bias: float
    w_user: np.ndarray
    w_item: np.ndarray

    def weights(self, side: int) -> np.ndarray:
        return (self.w_user, self.w_item)[side]

    def value(self, P, Q, b, c) -> float:
        lam, lam_b, wu, wi = self.reg, self.reg_bias, self.w_user, self.w_item
        return float(0.5 * lam * (wu @ np.einsum("uk,uk->u", P, P) + wi @ np.einsum("ik,ik->i", Q, Q))
                     + 0.5 * lam_b * (wu @ (b * b) + wi @ (c * c)))

    def add_times(self, out, v) -> None:
        """``out += D v`` for the unpacked blocks ``out`` and ``v`` (``D`` the diagonal penalty Hessian)."""
        (oP, oQ, ob, oc), (vP, vQ, vb, vc) = out, v
        oP += (self.reg * self.w_user)[:, None] * vP
        oQ += (self.reg * self.w_item)[:, None] * vQ
        ob += self.reg_bias * self.w_user * vb
        oc += self.reg_bias * self.w_item * vc

    def diagonal(self, rank: int) -> np.ndarray:
        """``D = diag(lam, ..., lam, lam_b)`` of one row's block."""
        return np.r_[np.full(rank, self.reg), self.reg_bias]


class Layout:
    """The training ratings as every implementation reads them: sorted by user, then item (CSR),
    with the counts, the mean ``mu`` (given for a shard, which uses the global one) and the
    parameter layout ``x = concat(P, Q, b, c)``."""

    def __init__(self, users, items, ratings, n_users: int, n_items: int, rank: int, mu: float | None = None):
        self.users, self.items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        self.ratings = np.asarray(ratings, np.float64)
        self.n_users, self.n_items, self.rank = int(n_users), int(n_items), int(rank)
        self.n_ratings = len(self.ratings)
        self.mu = float(self.ratings.mean()) if mu is None else float(mu)
        self.user_counts = np.bincount(self.users, minlength=self.n_users).astype(np.float64)
        self.item_counts = np.bincount(self.items, minlength=self.n_items).astype(np.float64)
        self.indptr = np.concatenate([[0], np.cumsum(self.user_counts)]).astype(np.int64)
        m, n, k = self.n_users, self.n_items, self.rank
        self._cuts = np.cumsum([m * k, n * k, m])
        self.n_params = (m + n) * (k + 1)
        self._sides: tuple | None = None

    @classmethod
    def of(cls, train: Ratings, rank: int, mu: float | None = None) -> "Layout":
        # CSR order: by user, then item (one int64 key; pairs are unique, so any sort gives one order)
        order = np.argsort(train.users.astype(np.int64) * train.n_items + train.items)
        return cls(train.users[order], train.items[order], train.ratings[order], train.n_users, train.n_items,
                   rank, mu)

    def user_rows(self, lo: int, hi: int) -> "Layout":
        """The ratings of users ``lo .. hi-1`` (a contiguous slice of the CSR order), same shape and mean."""
        s, e = self.indptr[lo], self.indptr[hi]
        return Layout(self.users[s:e], self.items[s:e], self.ratings[s:e], self.n_users, self.n_items, self.rank,
                      self.mu)

    def unpack(self, x: np.ndarray):
        """Views ``(P, Q, b, c)`` into ``x`` (no copies)."""
        P, Q, b, c = np.split(x, self._cuts)
        return P.reshape(self.n_users, self.rank), Q.reshape(self.n_items, self.rank), b, c

    def pack(self, P, Q, b, c) -> np.ndarray:
        return np.concatenate([np.ravel(P), np.ravel(Q), np.ravel(b), np.ravel(c)]).astype(np.float64)

    def side(self, side: int):
        """``(indptr, cols, ratings, order)`` of one side: users (CSR) or items (CSC, built on first
        use); ``order`` maps its ratings to the CSR order."""
        if self._sides is None:
            order = np.lexsort((self.users, self.items))
            indptr_i = np.concatenate([[0], np.cumsum(self.item_counts.astype(np.int64))]).astype(np.int64)
            self._sides = ((self.indptr, self.items, self.ratings, np.arange(self.n_ratings)),
                           (indptr_i, self.users[order], self.ratings[order], order))
        return self._sides[side]

    def fixed(self, x: np.ndarray, side: int):
        """The other side's ``(factors, biases)`` in ``x``: what the rows of ``side`` are solved against."""
        P, Q, b, c = self.unpack(x)
        return (Q, c) if side == USERS else (P, b)


@dataclass
class _State:
    """What depends on ``x`` alone, cached between calls at the same point (numpy path)."""

    x: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    b: np.ndarray
    c: np.ndarray
    Pu: np.ndarray  # P[users], N x k
    Qi: np.ndarray  # Q[items], N x k
    e: np.ndarray   # residuals, N
    E: sp.csr_matrix


def solve_ridge(A: np.ndarray, rhs: np.ndarray, w: np.ndarray, pen: Penalty, rank: int, has: np.ndarray):
    """``(A + w D) y = rhs`` per row (batched); a row without ratings gets 0. Returns ``(F, bias)``."""
    A = A + w[:, None, None] * np.diag(pen.diagonal(rank))[None]
    A[~has] = np.eye(rank + 1)  # no ratings: the solution is 0 (rhs is 0)
    sol = np.linalg.solve(A, rhs[..., None])[..., 0]
    return sol[:, :rank], sol[:, rank]


def factor_blocks(A: np.ndarray, w: np.ndarray, pen: Penalty, rank: int) -> np.ndarray:
    """Cholesky factors (lower) of ``A + w D`` per row; a row that is not positive definite (no
    ratings and no penalty: its parameters never move) gets the identity."""
    M = A + w[:, None, None] * np.diag(pen.diagonal(rank))[None]
    L = np.empty_like(M)
    for row in range(len(M)):
        try:
            L[row] = np.linalg.cholesky(M[row])
        except np.linalg.LinAlgError:
            L[row] = np.eye(rank + 1)
    return L


class NumpySums:
    """The reference: sparse products over gathered rows. See ``mf.py`` for the formulas."""

    OFFERS = OPTIONAL
    kernel = "numpy"

    def __init__(self, layout: Layout):
        self.layout = layout
        self._state: _State | None = None

    def _csr(self, data: np.ndarray) -> sp.csr_matrix:
        L = self.layout
        return sp.csr_matrix((data, L.items, L.indptr), shape=(L.n_users, L.n_items))

    def _at(self, x: np.ndarray) -> _State:
        s = self._state
        if s is not None and (s.x is x or np.array_equal(s.x, x)):
            return s
        L = self.layout
        x = np.array(x, dtype=np.float64, copy=True)
        P, Q, b, c = L.unpack(x)
        Pu, Qi = P[L.users], Q[L.items]
        e = L.mu + b[L.users] + c[L.items] + np.einsum("nk,nk->n", Pu, Qi) - L.ratings
        self._state = _State(x, P, Q, b, c, Pu, Qi, e, self._csr(e))
        return self._state

    def loss(self, x: np.ndarray, pen: Penalty) -> float:
        s = self._at(x)
        lam, lam_b, wu, wi = pen.reg, pen.reg_bias, pen.w_user, pen.w_item
        data = 0.5 * float(s.e @ s.e)
        p = 0.5 * lam * (wu @ np.einsum("uk,uk->u", s.P, s.P) + wi @ np.einsum("ik,ik->i", s.Q, s.Q))
        p_b = 0.5 * lam_b * (wu @ (s.b * s.b) + wi @ (s.c * s.c))
        return float(data + p + p_b) / self.layout.n_ratings

    def loss_grad(self, x: np.ndarray, pen: Penalty):
        L, s = self.layout, self._at(x)
        lam, lam_b, wu, wi = pen.reg, pen.reg_bias, pen.w_user, pen.w_item
        gP = s.E @ s.Q + lam * wu[:, None] * s.P
        gQ = s.E.T @ s.P + lam * wi[:, None] * s.Q
        gb = np.bincount(L.users, s.e, L.n_users) + lam_b * wu * s.b
        gc = np.bincount(L.items, s.e, L.n_items) + lam_b * wi * s.c
        return self.loss(x, pen), L.pack(gP, gQ, gb, gc) / L.n_ratings

    def hessp(self, x: np.ndarray, v: np.ndarray, exact: bool, pen: Penalty) -> np.ndarray:
        L, s = self.layout, self._at(x)
        dP, dQ, db, dc = L.unpack(np.asarray(v, dtype=np.float64))
        de = (db[L.users] + dc[L.items]
              + np.einsum("nk,nk->n", dP[L.users], s.Qi)
              + np.einsum("nk,nk->n", s.Pu, dQ[L.items]))
        De = self._csr(de)
        lam, lam_b, wu, wi = pen.reg, pen.reg_bias, pen.w_user, pen.w_item
        hP = De @ s.Q + lam * wu[:, None] * dP
        hQ = De.T @ s.P + lam * wi[:, None] * dQ
        if exact:
            hP += s.E @ dQ
            hQ += s.E.T @ dP
        hb = np.bincount(L.users, de, L.n_users) + lam_b * wu * db
        hc = np.bincount(L.items, de, L.n_items) + lam_b * wi * dc
        return L.pack(hP, hQ, hb, hc) / L.n_ratings

    def normal_equations(self, side: int, x: np.ndarray):
        L = self.layout
        indptr, cols, ratings, _ = L.side(side)
        F, f_bias = L.fixed(np.asarray(x, dtype=np.float64), side)
        k, n_rows = L.rank, len(indptr) - 1
        Z = np.empty((len(cols), k + 1))
        Z[:, :k] = F[cols]
        Z[:, k] = 1.0
        t = ratings - L.mu - f_bias[cols]
        A = np.zeros((n_rows, k + 1, k + 1))
        rhs = np.zeros((n_rows, k + 1))
        for r in np.flatnonzero(np.diff(indptr) > 0):  # one small Gram matrix per row: memory O(k^2) each
            Zr = Z[indptr[r]:indptr[r + 1]]
            A[r] = Zr.T @ Zr
            rhs[r] = Zr.T @ t[indptr[r]:indptr[r + 1]]
        return A, rhs

    def ridge(self, side: int, x: np.ndarray, pen: Penalty):
        L = self.layout
        A, rhs = self.normal_equations(side, x)
        return solve_ridge(A, rhs, pen.weights(side), pen, L.rank, np.diff(L.side(side)[0]) > 0)

    def block_factors(self, side: int, x: np.ndarray, pen: Penalty) -> np.ndarray:
        L = self.layout
        indptr, cols, _, _ = L.side(side)
        F, _ = L.fixed(np.asarray(x, dtype=np.float64), side)
        k1, w = L.rank + 1, pen.weights(side)
        out = np.empty((len(indptr) - 1, k1, k1))
        for row in range(len(indptr) - 1):
            Z = np.column_stack([F[cols[indptr[row]:indptr[row + 1]]], np.ones(indptr[row + 1] - indptr[row])])
            A = Z.T @ Z + w[row] * np.diag(pen.diagonal(L.rank))
            try:
                out[row] = np.linalg.cholesky(A)
            except np.linalg.LinAlgError:  # no ratings and no penalty: never moves
                out[row] = np.eye(k1)
        return out

    @staticmethod
    def block_solve(L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        y = np.linalg.solve(L, rhs[..., None])
        return np.linalg.solve(np.swapaxes(L, 1, 2), y)[..., 0]

    def sgd_epoch(self, x: np.ndarray, order: np.ndarray, lr: float, pen: Penalty) -> None:
        sgd_epoch_numpy(self.layout, x, order, lr, pen)

    @staticmethod
    def warm_up(run_every_kernel) -> None:
        """Nothing to compile."""

    def tune_threads(self, one_pass) -> int | None:
        return None


def sgd_epoch_numpy(L: Layout, x: np.ndarray, order: np.ndarray, lr: float, pen: Penalty) -> None:
    """Per-rating SGD over ``L``'s ratings in ``order``, in place on ``x`` (the update in ``BiasedMF.sgd_epoch``)."""
    P, Q, b, c = L.unpack(x)
    lam, lam_b, mu = pen.reg, pen.reg_bias, L.mu
    for j in order:
        u, i = L.users[j], L.items[j]
        pu, qi = P[u], Q[i]
        e = mu + b[u] + c[i] + pu @ qi - L.ratings[j]
        pu_old = pu.copy()
        pu -= lr * (e * qi + lam * pu)
        qi -= lr * (e * pu_old + lam * qi)
        b[u] -= lr * (e + lam_b * b[u])
        c[i] -= lr * (e + lam_b * c[i])


def sgd_epoch_numba(L: Layout, x: np.ndarray, order: np.ndarray, lr: float, pen: Penalty) -> None:
    """The same steps in the same order as :func:`sgd_epoch_numpy`, compiled."""
    from pipeline.objectives import mf_kernels as K
    P, Q, b, c = L.unpack(x)
    K.sgd_epoch(order, L.users, L.items, L.ratings, L.mu, float(lr), pen.reg, pen.reg_bias, P, Q, b, c)


class NumbaSums:
    """One fused compiled pass per call (``mf_kernels``), parallel over blocks of users.

    Items are relabelled by popularity inside the kernels, so the rows most ratings touch are
    contiguous in memory (measured at 5M ratings x 59k items: loss_grad 20 % and hessp 39 %
    faster); Q, c and their directions are permuted per call (O(n k), not O(N)). ``sched`` is the
    order the kernels visit the ratings in (cache blocks on large data; ``mf_kernels.schedule``)."""

    OFFERS = NumpySums.OFFERS
    kernel = "numba"

    def __init__(self, layout: Layout):
        from pipeline.objectives import mf_kernels as K
        self.layout = L = layout
        self.item_order = np.argsort(-L.item_counts, kind="stable")  # new label -> item
        item_rank = np.empty(L.n_items, np.int64)
        item_rank[self.item_order] = np.arange(L.n_items)
        perm, self.sched = K.schedule(L.users, item_rank[L.items], L.indptr, L.n_items, L.rank)
        self.ratings = L.ratings[perm]                            # in the kernels' visiting order
        n_blocks = len(self.sched[0]) - 1
        self.buf = np.empty((n_blocks, L.n_items, L.rank + 1))    # per-block item sums
        self.V = np.empty((L.n_items, L.rank + 1))                # (q_i, c_i) at x_seen
        self.HV = np.empty((L.n_items, 2 * (L.rank + 1)))         # (q_i, c_i, dq_i, dc_i)
        self.x_seen: np.ndarray | None = None                     # the point e holds the residuals of
        self.e = np.empty(L.n_ratings)

    def _remember(self, x: np.ndarray) -> None:
        if self.x_seen is None:
            self.x_seen = np.empty_like(x)
        np.copyto(self.x_seen, x)

    def _residuals_at(self, x: np.ndarray) -> None:
        """Item rows ``V`` and residuals ``e`` at ``x`` (kept while ``x`` does not change)."""
        from pipeline.objectives import mf_kernels as K
        if self.x_seen is not None and np.array_equal(self.x_seen, x):
            return
        L = self.layout
        P, Q, b, c = L.unpack(x)
        K.item_rows(self.item_order, Q, c, Q, c, self.V)
        K.residuals(self.sched, self.ratings, L.mu, P, b, self.V, self.e)
        self._remember(x)

    def loss_grad(self, x: np.ndarray, pen: Penalty, with_grad: bool = True):
        """Value (and gradient). ``loss`` alone runs the same pass: a residual-only pass would be
        cheaper, but its sums, re-associated differently, differ from these in the last bits, and
        line searches compare values from both (gradient descent then stopped early in a test)."""
        from pipeline.objectives import mf_kernels as K
        L = self.layout
        x = np.ascontiguousarray(x, dtype=np.float64)
        P, Q, b, c = L.unpack(x)
        V, order, scale = self.V, self.item_order, 1.0 / L.n_ratings
        K.item_rows(order, Q, c, Q, c, V)
        g = np.empty(L.n_params)
        gP, gQ, gb, gc = L.unpack(g)  # the kernels write straight into the gradient vector
        data = K.loss_grad(self.sched, self.ratings, L.mu, P, b, V, pen.w_user, pen.reg, pen.reg_bias, scale,
                           self.e, gP, gb, self.buf)
        data += K.finish_items(order, self.buf, V, 0, pen.w_item, pen.reg, pen.reg_bias, scale, gQ, gc)
        self._remember(x)
        return data * scale, (g if with_grad else None)

    def loss(self, x: np.ndarray, pen: Penalty) -> float:
        return self.loss_grad(x, pen, with_grad=False)[0]

    def hessp(self, x: np.ndarray, v: np.ndarray, exact: bool, pen: Penalty) -> np.ndarray:
        from pipeline.objectives import mf_kernels as K
        L = self.layout
        x = np.ascontiguousarray(x, dtype=np.float64)
        self._residuals_at(x)
        P, Q, b, c = L.unpack(x)
        dP, dQ, db, dc = L.unpack(np.ascontiguousarray(v, dtype=np.float64))
        HV, order, scale = self.HV, self.item_order, 1.0 / L.n_ratings
        K.item_rows(order, Q, c, dQ, dc, HV)
        h = np.empty(L.n_params)
        hP, hQ, hb, hc = L.unpack(h)
        K.hessp(self.sched, self.e, P, dP, db, HV, exact, pen.w_user, pen.reg, pen.reg_bias, scale, hP, hb, self.buf)
        K.finish_items(order, self.buf, HV, L.rank + 1, pen.w_item, pen.reg, pen.reg_bias, scale, hQ, hc)
        return h

    def normal_equations(self, side: int, x: np.ndarray):
        from pipeline.objectives import mf_kernels as K
        L = self.layout
        indptr, cols, ratings, _ = L.side(side)
        F, f_bias = L.fixed(np.asarray(x, dtype=np.float64), side)
        k1 = L.rank + 1
        A, rhs = np.empty((len(indptr) - 1, k1, k1)), np.empty((len(indptr) - 1, k1))
        K.normal_rows(indptr, cols, ratings, L.mu, np.ascontiguousarray(F), np.ascontiguousarray(f_bias), A, rhs)
        return A, rhs

    def ridge(self, side: int, x: np.ndarray, pen: Penalty):
        """The normal equations solved in one compiled parallel pass (``mf_kernels.ridge_rows``)."""
        from pipeline.objectives import mf_kernels as K
        L = self.layout
        indptr, cols, ratings, _ = L.side(side)
        F, f_bias = L.fixed(np.asarray(x, dtype=np.float64), side)
        n_rows = len(indptr) - 1
        out_F, out_b = np.empty((n_rows, L.rank)), np.empty(n_rows)
        bad = K.ridge_rows(indptr, cols, ratings, L.mu, np.ascontiguousarray(F), np.ascontiguousarray(f_bias),
                           pen.weights(side), pen.reg, pen.reg_bias, out_F, out_b)
        if bad:  # as np.linalg.solve on the reference path
            raise np.linalg.LinAlgError(f"ALS: {bad} singular per-row systems (a zero penalty with too few ratings)")
        return out_F, out_b

    def block_factors(self, side: int, x: np.ndarray, pen: Penalty) -> np.ndarray:
        from pipeline.objectives import mf_kernels as K
        L = self.layout
        indptr, cols, _, _ = L.side(side)
        F, _ = L.fixed(np.asarray(x, dtype=np.float64), side)
        out = np.empty((len(indptr) - 1, L.rank + 1, L.rank + 1))
        K.block_cholesky(indptr, cols, np.ascontiguousarray(F), pen.weights(side), pen.reg, pen.reg_bias, out)
        return out

    @staticmethod
    def block_solve(L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        from pipeline.objectives import mf_kernels as K
        out = np.empty_like(rhs)
        K.block_solve(L, np.ascontiguousarray(rhs), out)
        return out

    def sgd_epoch(self, x: np.ndarray, order: np.ndarray, lr: float, pen: Penalty) -> None:
        sgd_epoch_numba(self.layout, x, order, lr, pen)

    @staticmethod
    def warm_up(run_every_kernel) -> None:
        """Compile (or load from numba's cache) by running ``run_every_kernel``; a damaged cache entry
        is rebuilt (``mf_kernels.with_sound_cache``)."""
        from pipeline.objectives import mf_kernels as K
        K.with_sound_cache(K.loss_grad, run_every_kernel)

    def tune_threads(self, one_pass) -> int:
        from pipeline.objectives import mf_kernels as K
        return K.choose_threads(one_pass)


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a declared dependency
        return False
    return True


LOCAL = {"numba": NumbaSums, "numpy": NumpySums}  # kernel name -> implementation on this machine
SGD_EPOCH = {"numba": sgd_epoch_numba, "numpy": sgd_epoch_numpy}  # kernel name -> the sequential epoch
KERNELS = ("auto", *LOCAL)


def resolve_kernel(kernel: str) -> str:
    """``auto`` -> ``numba`` where installed, else ``numpy``; an unknown name is a ValueError."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return ("numba" if _numba_available() else "numpy") if kernel == "auto" else kernel
