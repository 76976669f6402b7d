"""Compiled kernels for :class:`pipeline.objectives.mf.BiasedMF` (numba, all cores).

Same math as the numpy reference in ``mf.py`` (its docstring has the formulas), fused so that
each call streams the ratings once and memory stays O(parameters + ratings): no gathered N x k
arrays. The users are cut into contiguous blocks, balanced by rating count (``blocks``); the
threads take whole blocks (``prange``). A block owns the user-side outputs of its range outright
and accumulates the item-side sums into its own buffer (``blocks x n x (k+1)``,
parameter-sized), which are added up at the end. So there are no races and no atomics, and the item side costs no second pass.

The same bits on any machine: the user blocks are cut by the data (``block_count``: a power of two
from the number of ratings per item, at most ``MAX_BLOCKS``), never by the thread count; the
threads share out whole blocks, each block sums its ratings in one fixed order, and the per-block
partial sums are combined in block order. So ``NUMBA_NUM_THREADS=1``, 2 or 8 give bit-identical
losses, gradients and products (tested), and an optimizer's path does not depend on the machine's
core count. A block visits its ratings as *runs* (stretches of one user's ratings) in the order
``schedule`` chooses: CSR order when the item rows fit in cache, cache-sized (user group x item
tile) pieces when they do not. The kernels take that plan as one tuple, ``sched``.

Item layout. The kernels see the items relabelled by popularity (``order[i]`` is the item with
label ``i``; hot rows are contiguous, so they share cache lines and pages) and each item's
parameters in one row: ``V[i] = (q_i, c_i)`` for the loss, ``V[i] = (q_i, c_i, dq_i, dc_i)`` for
``hessp``. One gather per rating then brings everything the rating needs from the item side
(``item_rows`` builds these rows, O(n k) per call). The accumulator rows have the same shape,
``(sum e p_u, sum e)``. ``finish_items`` adds the block buffers, the penalty and the ``1/N``
scale and writes the result back in the caller's item order; the user side does the same in the
main pass, so a call makes no O(parameters) numpy passes beyond building ``V``.

* ``residuals``: ``e = mu + b_u + c_i + p_u . q_i - r`` and ``1/2 sum e^2`` (the floor of the
  benchmarks; ``hessp`` at a point no ``loss_grad`` has seen);
* ``loss_grad``: residuals, data loss, ``sum_i e q_i``, ``sum_i e`` per user and
  ``sum_u e p_u``, ``sum_u e`` per item, in one pass;
* ``hessp``: at cached residuals ``e``, ``de = db_u + dc_i + dp_u.q_i + p_u.dq_i`` and the
  Hessian-vector sums (with or without the residual terms ``e dq_i``, ``e dp_u``), in one pass.

No ``fastmath``: every sum is in the order the code writes (``dot``: eight fixed lanes), so the
bits do not depend on the compile target (``NUMBA_CPU_NAME``) or the CPU (``pipeline.reproducible``,
tested in ``tests/test_reproducible.py``). Results differ from the numpy reference by about 1e-16
relative (another order of the same sums); tests hold them to 1e-10.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# No fastmath: it lets LLVM re-associate sums and contract a*b+c into an FMA as it likes for each
# compile target, so the bits followed the CPU the kernels were compiled for (NUMBA_CPU_NAME=generic
# gave other gradients than the host). Every sum below is in the order the code writes; LLVM may
# still vectorize loops whose lanes are independent (elementwise updates), which changes no bit.
_FLAGS = dict(parallel=True, fastmath=False, cache=True, nogil=True)
_SERIAL = dict(fastmath=False, cache=True, nogil=True)
AHEAD = 8  # ratings ahead whose item rows are prefetched (of 4, 8, 12, 16, 24 at 5M x 59k: 8 was fastest)


@intrinsic
def prefetch(typingctx, arr, i, f):
    """Hint the CPU to bring ``arr[i, f]``'s cache line in (LLVM ``llvm.prefetch``, read, keep in all
    levels); no effect on results. The row ``i`` of the next ratings is known ``AHEAD`` ratings before
    it is needed, but the hardware prefetcher cannot guess a random row: without this hint each new
    row is a cache miss the core waits for (at 25M ratings the item rows do not fit in cache)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    sig = types.void(arr, i, f)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        inds = [context.cast(builder, args[n], signature.args[n], types.intp) for n in (1, 2)]
        ptr = cgutils.get_item_pointer2(context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
                                        strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
                                        inds=inds, wraparound=False, boundscheck=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])  # read, high locality, data
        return context.get_dummy_value()
    return sig, codegen


# -- numba's on-disk cache, never trusted blindly ---------------------------------------------------
def with_sound_cache(kernel, run_kernels) -> None:
    """``run_kernels()`` (which compiles or loads the kernels of ``kernel``'s module); if that
    fails while the module has entries in numba's cache folder (``__pycache__``, or under
    ``NUMBA_CACHE_DIR``), the entries are deleted and the kernels compiled again, once.

    Why any exception: a damaged entry is a pickle, and a truncated or garbled pickle can raise
    almost anything (``UnpicklingError``, ``EOFError``, ``ValueError: unsupported pickle protocol``,
    ``KeyError``, ``ImportError``... an empty index gave click's bare "Aborted!"), so no list of
    types holds. Nothing is lost by the retry: with the entries gone the kernels are compiled from
    source, and an error that is not the cache's (a kernel that does not compile) is raised by
    that second attempt, as it would be without a cache."""
    try:
        run_kernels()
    except Exception:
        from pathlib import Path
        folder = Path(kernel._cache._cache_path)
        stem = kernel.py_func.__module__.rsplit(".", 1)[-1]
        entries = list(folder.glob(f"{stem}.*.nb[ic]"))
        if not entries:
            raise
        for entry in entries:
            entry.unlink(missing_ok=True)
        run_kernels()


# -- threads where they pay ------------------------------------------------------------------------
PAYS = 0.9        # more threads are used only where they make a pass at least 10 % faster
LONG_PASS = 0.05  # seconds: a pass this long pays for its parallel region on any machine; not measured


def choose_threads(one_pass, rounds: int = 7) -> int:
    """Measure, then set, how many threads the kernels run on (numba's ``set_num_threads``, for the
    calling thread): all of numba's pool where ``one_pass`` (a callable doing one data pass) is
    at least ``1 - PAYS`` faster on them than on one thread, else one. Timed alternately, the
    median of ``rounds`` calls each. Results do not depend on the choice (the blocks are cut by
    the data), only seconds do.

    Why measure: a pass over 80,000 ratings takes about a millisecond, and a parallel region waits
    for its slowest thread. On a quiet 2-core machine two threads made a loss+gradient and a
    Hessian-vector product 1.8x faster; with one CPU-bound job beside them, 5.8x slower (19.6
    against 3.4 ms), the worker sharing its core while the main thread spun. So the choice is
    made on the machine as it is when the comparison starts, and ``GOMP_SPINCOUNT`` (set in
    ``pipeline.reproducible``) bounds what a job that starts later costs: docs/performance.md."""
    import time
    import numba
    most = numba.config.NUMBA_NUM_THREADS
    if most <= 1:
        return 1
    numba.set_num_threads(most)
    t0 = time.perf_counter()
    one_pass()
    if time.perf_counter() - t0 >= LONG_PASS:
        return most
    times: dict[int, list[float]] = {1: [], most: []}
    for _ in range(rounds):
        for n in (1, most):
            numba.set_num_threads(n)
            t0 = time.perf_counter()
            one_pass()
            times[n].append(time.perf_counter() - t0)
    best = most if np.median(times[most]) < PAYS * np.median(times[1]) else 1
    numba.set_num_threads(best)
    return best


MAX_BLOCKS = 8  # user blocks at most: up to 8 threads share the work; more would only buy buffer memory


def block_count(n_ratings: int, n_items: int) -> int:
    """How many user blocks the kernels cut ``n_ratings`` into: a function of the data alone.

    The largest power of two (at most ``MAX_BLOCKS``) that leaves at least 8 ratings per item row
    of each block's item buffer, so that adding up the buffers (``finish_items``, O(blocks n k))
    stays small beside the pass itself (O(N k)). MovieLens 100K: 4 blocks; 1M ratings: 8. Powers of
    two split evenly over 1, 2, 4 or 8 threads."""
    room = max(1, n_ratings // (8 * max(n_items, 1)))
    count = 1
    while count * 2 <= min(room, MAX_BLOCKS):
        count *= 2
    return count


def blocks(u_ptr: np.ndarray, n_blocks: int) -> np.ndarray:
    """User-block boundaries with about the same number of ratings in each block."""
    targets = np.linspace(0, u_ptr[-1], n_blocks + 1)
    cuts = np.searchsorted(u_ptr, targets).astype(np.int64)
    cuts[0], cuts[-1] = 0, len(u_ptr) - 1
    return np.unique(cuts)


# Rows of one user group or one item tile. At 5M ratings x 59k items x 32k users, rank 32, hessp took
# 41.7 / 39.2 / 33.7 / 26.2 / 28.7 ns per rating unblocked / 8 / 4 / 2 / 1 MB (2 cores, 512 KB L2 each,
# 32 MB L3); at 1M ratings (3.7k items) it makes no difference.
BLOCK_BYTES = 2 << 20


def schedule(users: np.ndarray, labels: np.ndarray, u_ptr: np.ndarray, n_items: int, rank: int,
             block_bytes: int | None = None, n_blocks: int | None = None):
    """The order the kernels visit the ratings in, and the tuple they take.

    ``users`` (sorted, CSR order) and ``labels`` (popularity labels) of every rating. Each block
    owns a contiguous range of users (``blocks``; ``n_blocks`` defaults to ``block_count`` of the
    data, never to the thread count). When the item rows a pass touches (``V`` and a
    block's accumulator: ``3 (k+1)`` doubles per item) exceed ``block_bytes`` (default
    ``BLOCK_BYTES``), the block's ratings are visited tile by tile: users in groups of
    ``block_bytes / (3 k 8)`` (their rows ``p, dp, hp``), items in tiles of
    ``block_bytes / (3 (k+1) 8)``, and inside a (user group, item tile) block by user, in CSR
    order. The rows of one block stay in cache while its ratings stream by, instead of every rating
    fetching a random item row from memory. A *run* is a stretch of one user's ratings; a user has
    at most one run per tile it has ratings in. Small problems (every item row fits) keep CSR
    order: one run per user.

    Returns ``(perm, (block_runs, run_ptr, run_user, user_bounds, items))``: ``perm[j]`` is the
    CSR position of the kernels' ``j``-th rating.
    """
    block_bytes = block_bytes or BLOCK_BYTES
    n_ratings = len(users)
    user_bounds = blocks(u_ptr, n_blocks or block_count(n_ratings, n_items))
    items_per_tile = max(1, block_bytes // (24 * (rank + 1)))
    n_tiles = -(-n_items // items_per_tile)
    if n_tiles == 1:
        perm = np.arange(n_ratings)
    else:
        users_per_group = max(1, block_bytes // (24 * rank))
        m = len(u_ptr) - 1
        owner = np.searchsorted(user_bounds, np.arange(m), side="right") - 1
        local = np.arange(m) - user_bounds[owner]
        groups_before = np.concatenate([[0], np.cumsum(-(-np.diff(user_bounds) // users_per_group))])
        group = (groups_before[owner] + local // users_per_group)[users]
        block = group * n_tiles + labels // items_per_tile
        # A stable sort by block keeps CSR order (by user) inside each block; 16-bit keys take
        # numpy's radix sort (25M ratings: well under a second).
        perm = np.argsort(block.astype(np.uint16 if block.max() < 2 ** 16 else np.int64), kind="stable")
    k_users = users[perm]
    starts = np.flatnonzero(np.diff(k_users)) + 1 if n_ratings else np.empty(0, np.int64)
    run_ptr = np.concatenate([[0], starts, [n_ratings]]).astype(np.int64)
    run_user = k_users[run_ptr[:-1]].astype(np.int64)
    block_runs = np.searchsorted(run_ptr, u_ptr[user_bounds]).astype(np.int64)
    items = np.ascontiguousarray(labels[perm], dtype=np.int32)
    return perm, (block_runs, run_ptr, run_user, user_bounds.astype(np.int64), items)


@njit(inline="always", **_SERIAL)
def dot(a, b, k):
    """``sum_f a[f] b[f]`` for ``f < k`` in an order written here, the same on every CPU.

    Eight partial sums: lane ``l`` adds the terms ``f = l, l + 8, l + 16, ...`` in that order, and
    the lanes are combined as ``((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))``. The lanes are
    independent chains, so LLVM's SLP vectorizer (switched on in ``pipeline/__init__``) runs them as
    vector registers (one AVX-512 register, two AVX2 ones) without changing a bit: vectorizing
    independent lanes needs no re-association. Measured at 1M ratings, rank 32: 6.0 ns per rating
    for the residual pass against 13.3 with one chain and 5.0 with fastmath's re-association
    (docs/performance.md)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    body = k - k % 8
    for f in range(0, body, 8):
        s0 += a[f] * b[f]
        s1 += a[f + 1] * b[f + 1]
        s2 += a[f + 2] * b[f + 2]
        s3 += a[f + 3] * b[f + 3]
        s4 += a[f + 4] * b[f + 4]
        s5 += a[f + 5] * b[f + 5]
        s6 += a[f + 6] * b[f + 6]
        s7 += a[f + 7] * b[f + 7]
    rest = k - body
    if rest > 0:
        s0 += a[body] * b[body]
    if rest > 1:
        s1 += a[body + 1] * b[body + 1]
    if rest > 2:
        s2 += a[body + 2] * b[body + 2]
    if rest > 3:
        s3 += a[body + 3] * b[body + 3]
    if rest > 4:
        s4 += a[body + 4] * b[body + 4]
    if rest > 5:
        s5 += a[body + 5] * b[body + 5]
    if rest > 6:
        s6 += a[body + 6] * b[body + 6]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(cache=True, nogil=True)  # no fastmath: the order of the additions is the point
def in_order_sum(a):
    """``a[0] + a[1] + ...`` left to right. Not ``a.sum()``: inside a ``parallel=True`` kernel numba
    turns that into a parallel reduction whose association follows the thread count."""
    total = 0.0
    for j in range(len(a)):
        total += a[j]
    return total


@njit(**_FLAGS)
def item_rows(order, Q, c, dQ, dc, V):
    """``V[i] = (Q[order[i]], c[order[i]])``, then ``(dQ[order[i]], dc[order[i]])`` if ``V`` has room."""
    k = Q.shape[1]
    with_direction = V.shape[1] == 2 * (k + 1)
    for i in prange(len(order)):
        o = order[i]
        row = V[i]
        for f in range(k):
            row[f] = Q[o, f]
        row[k] = c[o]
        if with_direction:
            for f in range(k):
                row[k + 1 + f] = dQ[o, f]
            row[2 * k + 1] = dc[o]


@njit(**_FLAGS)
def residuals(sched, r, mu, P, b, V, e):
    """Fills ``e``; returns ``1/2 sum e^2``."""
    block_runs, run_ptr, run_user, user_bounds, items = sched
    k = P.shape[1]
    n_r = len(items)
    n_blocks = len(block_runs) - 1
    part = np.zeros(n_blocks)
    for t in prange(n_blocks):
        acc = 0.0
        for q in range(block_runs[t], block_runs[t + 1]):
            u = run_user[q]
            pu = P[u]
            base = mu + b[u]
            for j in range(run_ptr[q], run_ptr[q + 1]):
                if j + AHEAD < n_r:
                    nxt = items[j + AHEAD]
                    for f in range(0, k + 1, 8):
                        prefetch(V, nxt, f)
                vi = V[items[j]]
                s = (base + vi[k] - r[j]) + dot(pu, vi, k)
                e[j] = s
                acc += s * s
        part[t] = acc
    return 0.5 * in_order_sum(part)


@njit(**_FLAGS)
def loss_grad(sched, r, mu, P, b, V, w, lam, lam_b, scale, e, gP, gb, buf):
    """Fills ``e``, ``gP = scale (sum_i e q_i + lam w p)``, ``gb`` likewise, and the per-block item
    sums ``buf[t, i] = (sum_u e p_u, sum_u e)``; returns ``1/2 sum e^2`` plus the user penalty.

    The user's row and its gradient live in small local arrays while a run of the user's ratings
    streams by (LLVM keeps them in L1 and vectorizes the length-k loops).
    """
    block_runs, run_ptr, run_user, user_bounds, items = sched
    k = P.shape[1]
    n_r = len(items)
    n_blocks = len(block_runs) - 1
    part = np.zeros(n_blocks)
    for t in prange(n_blocks):
        acc_buf = buf[t]
        acc_buf[:, :] = 0.0
        for u in range(user_bounds[t], user_bounds[t + 1]):
            gP[u, :] = 0.0
            gb[u] = 0.0
        pu = np.empty(k)
        gpu = np.empty(k)
        acc_l = 0.0
        for q in range(block_runs[t], block_runs[t + 1]):
            u = run_user[q]
            for f in range(k):
                pu[f] = P[u, f]
                gpu[f] = 0.0
            acc_b = 0.0
            base = mu + b[u]
            for j in range(run_ptr[q], run_ptr[q + 1]):
                if j + AHEAD < n_r:
                    nxt = items[j + AHEAD]
                    for f in range(0, k + 1, 8):
                        prefetch(V, nxt, f)
                        prefetch(acc_buf, nxt, f)
                i = items[j]
                vi = V[i]
                ai = acc_buf[i]
                s = (base + vi[k] - r[j]) + dot(pu, vi, k)
                e[j] = s
                acc_b += s
                acc_l += s * s
                for f in range(k):
                    gpu[f] += s * vi[f]
                for f in range(k):
                    ai[f] += s * pu[f]
                ai[k] += s
            gu = gP[u]
            for f in range(k):
                gu[f] += gpu[f]
            gb[u] += acc_b
        for u in range(user_bounds[t], user_bounds[t + 1]):
            wl = lam * w[u]
            norm = 0.0
            for f in range(k):
                x = P[u, f]
                norm += x * x
                gP[u, f] = scale * (gP[u, f] + wl * x)
            gb[u] = scale * (gb[u] + lam_b * w[u] * b[u])
            acc_l += w[u] * (lam * norm + lam_b * b[u] * b[u])
        part[t] = acc_l
    return 0.5 * in_order_sum(part)


@njit(**_FLAGS)
def hessp(sched, e, P, dP, db, V, exact, w, lam, lam_b, scale, hP, hb, buf):
    """``H v`` on the user side, ``hP``, ``hb`` (scaled, penalty added), and the per-block item sums
    ``buf[t, i] = (sum_u de p_u + e dp_u, sum_u de)`` at cached residuals ``e``
    (``exact=False``: Gauss-Newton, no ``e`` terms). ``V[i] = (q_i, c_i, dq_i, dc_i)``."""
    block_runs, run_ptr, run_user, user_bounds, items = sched
    k = P.shape[1]
    n_r = len(items)
    n_blocks = len(block_runs) - 1
    for t in prange(n_blocks):
        acc_buf = buf[t]
        acc_buf[:, :] = 0.0
        for u in range(user_bounds[t], user_bounds[t + 1]):
            hP[u, :] = 0.0
            hb[u] = 0.0
        pu = np.empty(k)
        dpu = np.empty(k)
        hpu = np.empty(k)
        for q in range(block_runs[t], block_runs[t + 1]):
            u = run_user[q]
            for f in range(k):
                pu[f] = P[u, f]
                dpu[f] = dP[u, f]
                hpu[f] = 0.0
            acc = 0.0
            dbu = db[u]
            for j in range(run_ptr[q], run_ptr[q + 1]):
                if j + AHEAD < n_r:
                    nxt = items[j + AHEAD]
                    for f in range(0, 2 * k + 2, 8):
                        prefetch(V, nxt, f)
                    for f in range(0, k + 1, 8):
                        prefetch(acc_buf, nxt, f)
                i = items[j]
                vi = V[i]
                ai = acc_buf[i]
                d = dbu + vi[2 * k + 1]
                # Indexing vi here and slicing it below is what LLVM vectorized best: against slices in
                # both loops, hessp took 12.4 / 20.1 / 34.7 ns per rating at rank 10 / 32 / 50 (1M
                # ratings), against 21.7 / 20.1 / 49.0.
                d += dot(dpu, vi, k) + dot(pu, vi[k + 1:], k)
                ej = e[j] if exact else 0.0
                acc += d
                qi = vi[:k]
                dqi = vi[k + 1:2 * k + 1]
                for f in range(k):
                    hpu[f] += d * qi[f] + ej * dqi[f]
                for f in range(k):
                    ai[f] += d * pu[f] + ej * dpu[f]
                ai[k] += d
            hu = hP[u]
            for f in range(k):
                hu[f] += hpu[f]
            hb[u] += acc
        for u in range(user_bounds[t], user_bounds[t + 1]):
            wl = lam * w[u]
            for f in range(k):
                hP[u, f] = scale * (hP[u, f] + wl * dP[u, f])
            hb[u] = scale * (hb[u] + lam_b * w[u] * db[u])


@njit(**_FLAGS)
def finish_items(order, buf, V, col, w, lam, lam_b, scale, outQ, outc):
    """``outQ[order[i]] = scale (sum_t buf[t, i, :k] + lam w_i V[i, col:col+k])``, ``outc`` likewise
    from column ``k``; returns the item penalty ``1/2 sum_i w_i (lam |.|^2 + lam_b .^2)`` of
    ``V[:, col:col+k+1]``."""
    n_blocks, n, k1 = buf.shape
    k = k1 - 1
    part = np.zeros(n)
    for i in prange(n):
        o = order[i]
        wi = w[o]
        norm = 0.0
        for f in range(k):
            s = 0.0
            for t in range(n_blocks):
                s += buf[t, i, f]
            x = V[i, col + f]
            norm += x * x
            outQ[o, f] = scale * (s + lam * wi * x)
        s = 0.0
        for t in range(n_blocks):
            s += buf[t, i, k]
        x = V[i, col + k]
        outc[o] = scale * (s + lam_b * wi * x)
        part[i] = wi * (lam * norm + lam_b * x * x)
    return 0.5 * in_order_sum(part)


@njit(**_SERIAL)
def cholesky_lower(A) -> bool:
    """``A = L L^T`` in place, ``L`` in the lower triangle (the upper one is left as it was). A
    pivot that is not positive is taken as 1 and the factorization goes on: False says so."""
    n = A.shape[0]
    ok = True
    for a in range(n):
        s = A[a, a]
        for bb in range(a):
            s -= A[a, bb] * A[a, bb]
        if s <= 0.0:
            ok = False
            s = 1.0
        d = np.sqrt(s)
        A[a, a] = d
        for i in range(a + 1, n):
            s = A[i, a]
            for bb in range(a):
                s -= A[i, bb] * A[a, bb]
            A[i, a] = s / d
    return ok


@njit(**_SERIAL)
def cholesky_solve(L, y) -> None:
    """``y <- (L L^T)^-1 y`` in place: the forward then the backward triangular solve."""
    n = L.shape[0]
    for a in range(n):
        s = y[a]
        for bb in range(a):
            s -= L[a, bb] * y[bb]
        y[a] = s / L[a, a]
    for a in range(n - 1, -1, -1):
        s = y[a]
        for bb in range(a + 1, n):
            s -= L[bb, a] * y[bb]
        y[a] = s / L[a, a]


@njit(**_FLAGS)
def ridge_rows(indptr, cols, r, mu, F, f_bias, w, lam, lam_b, out_F, out_b):
    """One ALS half-sweep: for every row ``u`` (a user, or an item with the roles swapped) the exact
    minimizer ``y = (p_u, b_u)`` of ``sum_j (z_j . y - t_j)^2 + w_u (lam |p_u|^2 + lam_b b_u^2)`` with
    ``z_j = (F[c_j], 1)`` and ``t_j = r_j - mu - f_bias[c_j]`` over the row's ratings ``j``:
    the normal equations ``(sum_j z_j z_j^T + w_u D) y = sum_j t_j z_j`` solved by Cholesky
    (positive definite when ``w_u lam > 0`` or the ``z_j`` span; a row without ratings gets 0).
    Memory per thread O(k^2); no N x k temporaries. Returns the number of rows whose system was
    not positive definite (their solution is garbage; the caller raises)."""
    n_rows = len(indptr) - 1
    k = F.shape[1]
    k1 = k + 1
    singular = np.zeros(n_rows, np.int64)
    for row in prange(n_rows):
        start, stop = indptr[row], indptr[row + 1]
        if start == stop:
            out_F[row, :] = 0.0
            out_b[row] = 0.0
            continue
        A = np.zeros((k1, k1))
        y = np.zeros(k1)
        z = np.empty(k1)
        for j in range(start, stop):
            c = cols[j]
            for f in range(k):
                z[f] = F[c, f]
            z[k] = 1.0
            t = r[j] - mu - f_bias[c]
            for a in range(k1):
                za = z[a]
                y[a] += t * za
                for bb in range(a + 1):
                    A[a, bb] += za * z[bb]
        for a in range(k):
            A[a, a] += w[row] * lam
        A[k, k] += w[row] * lam_b
        # Cholesky A = L L^T in the lower triangle, then two triangular solves.
        if not cholesky_lower(A):
            singular[row] = 1
        cholesky_solve(A, y)
        for f in range(k):
            out_F[row, f] = y[f]
        out_b[row] = y[k]
    return singular.sum()


@njit(**_SERIAL)
def sgd_epoch(order, users, items, r, mu, lr, lam, lam_b, P, Q, b, c):
    """One epoch of per-rating SGD in the given order, in place (the update in ``BiasedMF.sgd_epoch``).
    Serial: each step reads what the previous one wrote, as in Surprise's SVD."""
    k = P.shape[1]
    for j in order:
        u = users[j]
        i = items[j]
        e = mu + b[u] + c[i] - r[j]
        for f in range(k):
            e += P[u, f] * Q[i, f]
        for f in range(k):
            pf = P[u, f]
            qf = Q[i, f]
            P[u, f] = pf - lr * (e * qf + lam * pf)
            Q[i, f] = qf - lr * (e * pf + lam * qf)
        b[u] -= lr * (e + lam_b * b[u])
        c[i] -= lr * (e + lam_b * c[i])


@njit(**_FLAGS)
def block_cholesky(indptr, cols, F, w, lam, lam_b, L):
    """Per row (a user, or an item with the roles swapped): the Cholesky factor, lower, of
    ``A = sum_j z_j z_j^T + w_row D`` with ``z_j = (F[c_j], 1)`` and ``D = diag(lam, ..., lam, lam_b)``:
    ALS's normal matrix, the Hessian's diagonal block times N. Written into ``L[row]``; a row whose
    ``A`` is not positive definite (no ratings and no penalty: its parameters never move) gets the
    identity. One thread per row; each row's sums in stored order."""
    k = F.shape[1]
    k1 = k + 1
    for row in prange(len(indptr) - 1):
        A = L[row]
        A[:, :] = 0.0
        z = np.empty(k1)
        for j in range(indptr[row], indptr[row + 1]):
            c = cols[j]
            for f in range(k):
                z[f] = F[c, f]
            z[k] = 1.0
            for a in range(k1):
                za = z[a]
                for bb in range(a + 1):
                    A[a, bb] += za * z[bb]
        for a in range(k):
            A[a, a] += w[row] * lam
        A[k, k] += w[row] * lam_b
        ok = cholesky_lower(A)
        for a in range(k1):
            for bb in range(a + 1, k1):
                A[a, bb] = 0.0
            if not ok:
                for bb in range(k1):
                    A[a, bb] = 1.0 if a == bb else 0.0


@njit(**_FLAGS)
def block_solve(L, rhs, out):
    """``out[row] = (L[row] L[row]^T)^-1 rhs[row]`` for every row: two triangular solves."""
    for row in prange(L.shape[0]):
        out[row, :] = rhs[row, :]
        cholesky_solve(L[row], out[row])


@njit(**_FLAGS)
def normal_rows(indptr, cols, r, mu, F, f_bias, A, y):
    """Per row, the unpenalized normal equations of ``ridge_rows``: ``A[row] = sum_j z_j z_j^T``
    (both triangles) and ``y[row] = sum_j t_j z_j``, ``z_j = (F[c_j], 1)``, ``t_j = r_j - mu -
    f_bias[c_j]``, summed in stored order. What one shard of ratings adds to an item's ALS system or
    preconditioner block (``pipeline.distributed``: the shards' parts are added on the driver)."""
    k = F.shape[1]
    k1 = k + 1
    for row in prange(len(indptr) - 1):
        Ar = A[row]
        yr = y[row]
        Ar[:, :] = 0.0
        yr[:] = 0.0
        z = np.empty(k1)
        for j in range(indptr[row], indptr[row + 1]):
            c = cols[j]
            for f in range(k):
                z[f] = F[c, f]
            z[k] = 1.0
            t = r[j] - mu - f_bias[c]
            for a in range(k1):
                za = z[a]
                yr[a] += t * za
                for bb in range(a + 1):
                    Ar[a, bb] += za * z[bb]
        for a in range(k1):
            for bb in range(a + 1, k1):
                Ar[a, bb] = Ar[bb, a]
