"""Compiled kernels for :class:`pipeline.objectives.mf.BiasedMF` (numba, all cores).

Same math as the numpy reference in ``mf.py`` (its docstring has the formulas), fused so that
each call streams the ratings once and memory stays O(parameters + ratings): no gathered N x k
arrays. Ratings are in user order (CSR: ``u_ptr``, ``u_items``). The users are cut into one
contiguous block per thread, balanced by rating count (``blocks``); a thread owns the user-side
outputs of its block outright and accumulates the item-side sums into its own buffer
(``threads x n x k``, parameter-sized), which are added up at the end. So there are no races and
no atomics, and the item side costs no second pass.

* ``residuals``: ``e = mu + b_u + c_i + p_u . q_i - r`` (the floor of the benchmarks);
* ``loss_grad``: residuals, data loss, ``sum_i e q_i``, ``sum_i e`` per user and
  ``sum_u e p_u``, ``sum_u e`` per item, in one pass;
* ``hessp``: at cached residuals ``e``, ``de = db_u + dc_i + dp_u.q_i + p_u.dq_i`` and the
  Hessian-vector sums (with or without the residual terms ``e dq_i``, ``e dp_u``), in one pass.

``fastmath`` lets LLVM vectorize the length-k dot products and updates (re-association only:
results differ from the numpy reference by about 1e-16 relative; tests hold them to 1e-10).
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

_FLAGS = dict(parallel=True, fastmath=True, cache=True, nogil=True)


def blocks(u_ptr: np.ndarray, n_blocks: int | None = None) -> np.ndarray:
    """User-block boundaries with about the same number of ratings in each block."""
    n_blocks = n_blocks or get_num_threads()
    targets = np.linspace(0, u_ptr[-1], n_blocks + 1)
    cuts = np.searchsorted(u_ptr, targets).astype(np.int64)
    cuts[0], cuts[-1] = 0, len(u_ptr) - 1
    return np.unique(cuts)


@njit(**_FLAGS)
def residuals(u_ptr, u_items, r, mu, P, Q, b, c, e):
    m, k = P.shape
    for u in prange(m):
        for j in range(u_ptr[u], u_ptr[u + 1]):
            i = u_items[j]
            s = mu + b[u] + c[i] - r[j]
            for f in range(k):
                s += P[u, f] * Q[i, f]
            e[j] = s


@njit(**_FLAGS)
def loss_grad(bounds, u_ptr, u_items, r, mu, P, Q, b, c, e, gP, gb, gQ_buf, gc_buf):
    """Fills ``e``, ``gP``, ``gb``; per-block ``gQ_buf[t]``, ``gc_buf[t]``; returns 1/2 sum e^2.

    The user's row and its gradient live in small local arrays while the user's ratings stream
    by (LLVM can then keep them in cache lines of their own and vectorize the length-k loops).
    """
    k = P.shape[1]
    n_blocks = len(bounds) - 1
    part = np.zeros(n_blocks)
    for t in prange(n_blocks):
        gQ = gQ_buf[t]
        gc = gc_buf[t]
        gQ[:, :] = 0.0
        gc[:] = 0.0
        pu = np.empty(k)
        gpu = np.empty(k)
        acc_l = 0.0
        for u in range(bounds[t], bounds[t + 1]):
            for f in range(k):
                pu[f] = P[u, f]
                gpu[f] = 0.0
            acc_b = 0.0
            base = mu + b[u]
            for j in range(u_ptr[u], u_ptr[u + 1]):
                i = u_items[j]
                qi = Q[i]
                gqi = gQ[i]
                s = base + c[i] - r[j]
                for f in range(k):
                    s += pu[f] * qi[f]
                e[j] = s
                acc_b += s
                acc_l += s * s
                gc[i] += s
                for f in range(k):
                    gpu[f] += s * qi[f]
                for f in range(k):
                    gqi[f] += s * pu[f]
            for f in range(k):
                gP[u, f] = gpu[f]
            gb[u] = acc_b
        part[t] = acc_l
    return 0.5 * part.sum()


@njit(**_FLAGS)
def hessp(bounds, u_ptr, u_items, e, P, Q, dP, dQ, db, dc, exact, hP, hb, hQ_buf, hc_buf):
    """``H v`` sums at cached residuals ``e`` (``exact=False``: Gauss-Newton, no ``e`` terms)."""
    k = P.shape[1]
    n_blocks = len(bounds) - 1
    for t in prange(n_blocks):
        hQ = hQ_buf[t]
        hc = hc_buf[t]
        hQ[:, :] = 0.0
        hc[:] = 0.0
        pu = np.empty(k)
        dpu = np.empty(k)
        hpu = np.empty(k)
        for u in range(bounds[t], bounds[t + 1]):
            for f in range(k):
                pu[f] = P[u, f]
                dpu[f] = dP[u, f]
                hpu[f] = 0.0
            acc = 0.0
            dbu = db[u]
            for j in range(u_ptr[u], u_ptr[u + 1]):
                i = u_items[j]
                qi = Q[i]
                dqi = dQ[i]
                hqi = hQ[i]
                d = dbu + dc[i]
                for f in range(k):
                    d += dpu[f] * qi[f] + pu[f] * dqi[f]
                ej = e[j] if exact else 0.0
                acc += d
                hc[i] += d
                for f in range(k):
                    hpu[f] += d * qi[f] + ej * dqi[f]
                for f in range(k):
                    hqi[f] += d * pu[f] + ej * dpu[f]
            for f in range(k):
                hP[u, f] = hpu[f]
            hb[u] = acc
