"""Compiled kernels for :class:`pipeline.objectives.mf.BiasedMF` (numba, both cores).

Same math as the numpy reference in ``mf.py`` (its docstring has the formulas), fused so that
memory stays O(parameters + ratings): no gathered N x k arrays. Ratings are kept in two orders,
by user (CSR: ``u_ptr``, ``u_items``) and by item (``i_ptr``, ``i_users``, ``i_pos`` = position of
the rating in user order), so each output row is written by exactly one thread:

* ``residuals``: one pass by user, ``e = mu + b_u + c_i + p_u . q_i - r`` (the floor benchmark);
* ``user_side``: one pass by user: residuals, ``sum_i e q_i``, ``sum_i e`` and the data loss;
* ``item_side``: one pass by item: ``sum_u e p_u``, ``sum_u e``;
* ``hessp_user_side`` / ``hessp_item_side``: the same two passes for ``H v`` (the directional
  residuals ``de`` are formed in the user pass and reused by the item pass).

Each pass is ``prange`` over users or items; numba splits the rows across threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=False, cache=True)
def residuals(u_ptr, u_items, r, mu, P, Q, b, c, e):
    m, k = P.shape
    for u in prange(m):
        for j in range(u_ptr[u], u_ptr[u + 1]):
            i = u_items[j]
            s = mu + b[u] + c[i] - r[j]
            for f in range(k):
                s += P[u, f] * Q[i, f]
            e[j] = s


@njit(parallel=True, fastmath=False, cache=True)
def user_side(u_ptr, u_items, r, mu, P, Q, b, c, e, gP, gb):
    """Residuals into ``e``; ``gP[u] = sum_i e q_i``, ``gb[u] = sum_i e``; returns 1/2 sum e^2."""
    m, k = P.shape
    part = np.zeros(m)
    for u in prange(m):
        acc_b = 0.0
        acc_l = 0.0
        for f in range(k):
            gP[u, f] = 0.0
        for j in range(u_ptr[u], u_ptr[u + 1]):
            i = u_items[j]
            s = mu + b[u] + c[i] - r[j]
            for f in range(k):
                s += P[u, f] * Q[i, f]
            e[j] = s
            acc_b += s
            acc_l += s * s
            for f in range(k):
                gP[u, f] += s * Q[i, f]
        gb[u] = acc_b
        part[u] = acc_l
    return 0.5 * part.sum()


@njit(parallel=True, fastmath=False, cache=True)
def item_side(i_ptr, i_users, i_pos, e, P, gQ, gc):
    """``gQ[i] = sum_u e p_u``, ``gc[i] = sum_u e`` (ratings visited in item order)."""
    n, k = gQ.shape
    for i in prange(n):
        acc = 0.0
        for f in range(k):
            gQ[i, f] = 0.0
        for t in range(i_ptr[i], i_ptr[i + 1]):
            u = i_users[t]
            s = e[i_pos[t]]
            acc += s
            for f in range(k):
                gQ[i, f] += s * P[u, f]
        gc[i] = acc


@njit(parallel=True, fastmath=False, cache=True)
def hessp_user_side(u_ptr, u_items, e, P, Q, dP, dQ, db, dc, exact, de, hP, hb):
    """``de = db_u + dc_i + dp_u.q_i + p_u.dq_i`` into ``de``;
    ``hP[u] = sum_i (de q_i + [exact] e dq_i)``, ``hb[u] = sum_i de``."""
    m, k = P.shape
    for u in prange(m):
        acc = 0.0
        for f in range(k):
            hP[u, f] = 0.0
        for j in range(u_ptr[u], u_ptr[u + 1]):
            i = u_items[j]
            d = db[u] + dc[i]
            for f in range(k):
                d += dP[u, f] * Q[i, f] + P[u, f] * dQ[i, f]
            de[j] = d
            acc += d
            ej = e[j] if exact else 0.0
            for f in range(k):
                hP[u, f] += d * Q[i, f] + ej * dQ[i, f]
        hb[u] = acc


@njit(parallel=True, fastmath=False, cache=True)
def hessp_item_side(i_ptr, i_users, i_pos, e, de, P, dP, exact, hQ, hc):
    """``hQ[i] = sum_u (de p_u + [exact] e dp_u)``, ``hc[i] = sum_u de``."""
    n, k = hQ.shape
    for i in prange(n):
        acc = 0.0
        for f in range(k):
            hQ[i, f] = 0.0
        for t in range(i_ptr[i], i_ptr[i + 1]):
            u = i_users[t]
            j = i_pos[t]
            d = de[j]
            ej = e[j] if exact else 0.0
            acc += d
            for f in range(k):
                hQ[i, f] += d * P[u, f] + ej * dP[u, f]
        hc[i] = acc
