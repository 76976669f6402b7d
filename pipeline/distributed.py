"""The Dask engine: biased MF's sums on shards of ratings on workers, the optimizer on the driver.

``DaskEngine(client, kernel)`` is an engine (``pipeline.objectives.engine``): ``BiasedMF(train,
hyper, engine=DaskEngine(client))`` is the same objective as on this machine with every sum over
the ratings computed by :class:`DaskSums`. ``session(...)`` opens a cluster (or connects to a
scheduler) for the length of a ``with`` block and yields the engine.

The pattern of distributed truncated-Newton solvers (Spark LIBLINEAR's TRON): the optimizer
runs on the driver unchanged; each ``loss_grad`` / ``hessp`` broadcasts the parameters (and the
direction), every worker computes the partial sums over its shard of ratings, and the driver adds
them up.

Partitioning: by **user blocks** (contiguous user ranges with about equal rating counts). A user's
ratings all live on one shard, so the user-side gradient rows ``sum_i e q_i`` are complete on
that shard and come back as a block (no reduction); only the item side (``n x k`` factor sums
and ``n`` bias sums) is summed across shards. Each call moves ``params x 8`` bytes out per
worker (the broadcast) and ``(user block + items) x (k + 1) x 8`` bytes back per shard.
The penalty terms are computed on the driver. Shards keep the residuals of the last ``x``, so
Newton-CG's many ``hessp`` calls at one point pay only for the direction. An ALS sweep and the
block preconditioner: the user side is solved or factored on the shards (complete there); for
the item side each shard returns its part of every item's normal equations, which the driver adds
and solves or factors (``(n, k+1, k+1)`` floats back per shard). Each shard computes with a
:class:`LocalEngine` of the kernel given (numba by default).

Shards are scattered once (``client.scatter``) and stay on their workers. A worker that dies
mid-fit: Dask recomputes its shard elsewhere if it can (the shard data is held by the driver's
future); if not, the call raises and the run is marked FAILED.

Needs the optional extra: ``pip install .[dask]``.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from pipeline.objectives.engine import LocalEngine
from pipeline.objectives.mf_sums import ITEMS, LOCAL, SGD_EPOCH, USERS, Layout, Penalty, factor_blocks, solve_ridge


class BackendError(RuntimeError):
    """The cluster could not be reached or failed during a fit (one-line message)."""


class NoCluster(BackendError):
    """No cluster to run on: the scheduler does not answer, or the extra is not installed."""


class DaskEngine:
    """The sums on the workers of ``client``, each worker computing over its shard with
    ``LocalEngine(kernel)``; the driver adds the shards' parts, the penalty, and solves the per-item
    systems of ALS and the preconditioner (``pipeline.objectives.engine``)."""

    backend = "dask"

    def __init__(self, client, kernel: str = "auto", n_shards: int | None = None):
        self.client, self.kernel, self.n_shards = client, LocalEngine(kernel).kernel, n_shards

    def mf_sums(self, layout: Layout) -> "DaskSums":
        return DaskSums(layout, self.client, self.kernel, self.n_shards)

    def params(self) -> dict:
        return {"backend": self.backend, "kernel": self.kernel}


class _Shard:
    """One block of users ``lo .. hi-1`` and all their ratings, on a worker: its own sums
    (``LocalEngine(kernel)``) over its part of the ratings, with the global shape and mean."""

    def __init__(self, layout: Layout, lo: int, hi: int, kernel: str):
        self.kernel, self.rank = kernel, layout.rank
        self.sums = LocalEngine(kernel).mf_sums(layout)
        self.n = layout.n_ratings
        self.lo, self.hi = lo, hi
        self.free = Penalty(0.0, 0.0, np.ones(layout.n_users), np.ones(layout.n_items))  # data sums alone

    def _split(self, full: np.ndarray):
        P, Q, b, c = self.sums.layout.unpack(full)
        return P[self.lo:self.hi], Q, b[self.lo:self.hi], c

    def loss_grad(self, x):
        f, g = self.sums.loss_grad(x, self.free)
        return (f * self.n, *(part * self.n for part in self._split(g)))

    def hessp(self, x, v, exact: bool):
        h = self.sums.hessp(x, v, exact, self.free)
        return tuple(part * self.n for part in self._split(h))

    def ridge_users(self, x, pen: Penalty):
        """This block's users solved exactly (their ratings are all here)."""
        F, bias = self.sums.ridge(USERS, x, pen)
        return F[self.lo:self.hi], bias[self.lo:self.hi]

    def user_blocks(self, x, pen: Penalty):
        """Cholesky factors of this block's users' diagonal blocks."""
        return self.sums.block_factors(USERS, x, pen)[self.lo:self.hi]

    def user_normal_equations(self, x):
        A, rhs = self.sums.normal_equations(USERS, x)
        return A[self.lo:self.hi], rhs[self.lo:self.hi]

    def item_normal_equations(self, x):
        """What this shard's ratings add to every item's normal equations (unpenalized)."""
        return self.sums.normal_equations(ITEMS, x)

    def warm_up(self):
        from pipeline.objectives.mf import BiasedMF, tiny_ratings
        BiasedMF(tiny_ratings(), rank=self.rank, kernel=self.kernel).warm_up()
        return 0


def _call(shard, method, *args):
    return getattr(shard, method)(*args)


class DaskSums:
    """Biased MF's sums (``pipeline.objectives.mf_sums``) over shards of users on a Dask cluster.

    ``loss_grad`` and the products: every shard's partial sums (user rows complete, item rows
    summed over shards), the penalty added on the driver. ALS's user half-sweep: each shard solves
    its users; the item half-sweep and the item blocks of the preconditioner: each shard returns its
    part of every item's normal equations, ``sum z z^T`` and ``sum t z`` over its ratings
    (``(n, k+1, k+1)`` floats), the driver adds them up, adds the penalty and solves or factors.
    The per-rating SGD epoch is sequential by nature (each step reads what the last one wrote):
    it runs on the driver, over the driver's copy of the ratings, with the local kernel, so it gives
    the local result and does not scale with the workers."""

    OFFERS = frozenset({"gnvp", "als_sweep", "precondition", "sgd_epoch"})

    def __init__(self, layout: Layout, client, kernel: str, n_shards: int | None = None):
        self.layout, self.client, self.kernel = layout, client, kernel
        self.local = LOCAL[kernel]  # the driver's own solves (the preconditioner's application)
        workers = list(client.scheduler_info()["workers"])
        n_shards = n_shards or max(1, len(workers))
        bounds = np.searchsorted(layout.indptr, np.linspace(0, layout.n_ratings, n_shards + 1)).astype(np.int64)
        bounds[0], bounds[-1] = 0, layout.n_users
        self.user_bounds = bounds = np.unique(bounds)
        shards = [_Shard(layout.user_rows(lo, hi), int(lo), int(hi), kernel) for lo, hi in self._blocks()]
        try:
            self.shards = client.scatter(shards, broadcast=False, hash=False)  # once, own keys: they stay there
        except Exception as exc:  # pragma: no cover - depends on the cluster
            raise BackendError(f"cannot send the ratings to the cluster: {exc}") from None
        self.bytes_sent = 0
        self.bytes_received = 0

    def _gather(self, method: str, *args):
        try:
            payload = [self.client.scatter(a, broadcast=True, hash=False) if isinstance(a, np.ndarray) else a
                       for a in args]
            futures = [self.client.submit(_call, shard, method, *payload, pure=False) for shard in self.shards]
            parts = self.client.gather(futures)
        except Exception as exc:
            raise BackendError(f"the Dask cluster failed during {method}: {type(exc).__name__}: {exc}") from None
        self.bytes_sent += sum(a.nbytes for a in args if isinstance(a, np.ndarray)) * len(self.shards)
        self.bytes_received += sum(sum(np.asarray(p).nbytes for p in part) if isinstance(part, tuple)
                                   else np.asarray(part).nbytes for part in parts)
        return parts

    def _blocks(self):
        return zip(self.user_bounds[:-1], self.user_bounds[1:])

    def _assemble(self, parts, with_value: bool) -> np.ndarray:
        L, off = self.layout, 1 if with_value else 0
        P, b = np.zeros((L.n_users, L.rank)), np.zeros(L.n_users)
        Q, c = np.zeros((L.n_items, L.rank)), np.zeros(L.n_items)
        for (lo, hi), part in zip(self._blocks(), parts):
            P[lo:hi] = part[off]
            Q += part[off + 1]
            b[lo:hi] = part[off + 2]
            c += part[off + 3]
        return L.pack(P, Q, b, c)

    def loss_grad(self, x: np.ndarray, pen: Penalty):
        L = self.layout
        x = np.ascontiguousarray(x, dtype=np.float64)
        parts = self._gather("loss_grad", x)
        data = sum(p[0] for p in parts)
        g = self._assemble(parts, with_value=True)
        pen.add_times(L.unpack(g), L.unpack(x))
        return float(data + pen.value(*L.unpack(x))) / L.n_ratings, g / L.n_ratings

    def loss(self, x: np.ndarray, pen: Penalty) -> float:
        return self.loss_grad(x, pen)[0]

    def hessp(self, x: np.ndarray, v: np.ndarray, exact: bool, pen: Penalty) -> np.ndarray:
        L = self.layout
        v = np.ascontiguousarray(v, dtype=np.float64)
        parts = self._gather("hessp", np.ascontiguousarray(x, dtype=np.float64), v, exact)
        h = self._assemble(parts, with_value=False)
        pen.add_times(L.unpack(h), L.unpack(v))
        return h / L.n_ratings

    def _item_normal_equations(self, x: np.ndarray, pen: Penalty | None = None):
        parts = self._gather("item_normal_equations", np.ascontiguousarray(x, dtype=np.float64))
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def _user_normal_equations(self, x, pen=None):
        parts = self._gather("user_normal_equations", np.ascontiguousarray(x, dtype=np.float64))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def normal_equations(self, side: int, x: np.ndarray):
        return (self._user_normal_equations, self._item_normal_equations)[side](x, None)

    def _ridge_users(self, x, pen):
        parts = self._gather("ridge_users", np.ascontiguousarray(x, dtype=np.float64), pen)
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(2))

    def _ridge_items(self, x, pen):
        A, rhs = self._item_normal_equations(x, pen)
        L = self.layout
        return solve_ridge(A, rhs, pen.w_item, pen, L.rank, L.item_counts > 0)

    def ridge(self, side: int, x: np.ndarray, pen: Penalty):
        return (self._ridge_users, self._ridge_items)[side](x, pen)

    def _user_blocks(self, x, pen):
        parts = self._gather("user_blocks", np.ascontiguousarray(x, dtype=np.float64), pen)
        return np.concatenate(parts)

    def _item_blocks(self, x, pen):
        A, _ = self._item_normal_equations(x, pen)
        return factor_blocks(A, pen.w_item, pen, self.layout.rank)

    def block_factors(self, side: int, x: np.ndarray, pen: Penalty) -> np.ndarray:
        return (self._user_blocks, self._item_blocks)[side](x, pen)

    def block_solve(self, L: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        return self.local.block_solve(L, rhs)

    def sgd_epoch(self, x: np.ndarray, order: np.ndarray, lr: float, pen: Penalty) -> None:
        SGD_EPOCH[self.kernel](self.layout, x, order, lr, pen)  # on the driver: sequential (see the class)

    def warm_up(self, run_every_kernel) -> None:
        """The driver's kernels here, each shard's on its worker (before any clock starts)."""
        self.local.warm_up(run_every_kernel)
        self._gather("warm_up")

    def tune_threads(self, one_pass) -> None:
        return None  # the workers' threads are the cluster's to set


@contextmanager
def session(scheduler: str | None = None, workers: int = 2, kernel: str = "auto", note=None):
    """A :class:`DaskEngine` on a cluster for the length of a ``with`` block: the scheduler at
    ``scheduler``, or a ``LocalCluster`` of ``workers`` processes that is stopped on the way out
    (a shared scheduler is left running). ``note`` receives one line saying what it connected to."""
    client = connect(scheduler, workers)
    cluster = None if scheduler else client.cluster  # ours to stop, not a shared one
    try:
        if note:
            note(f"dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
        yield DaskEngine(client, kernel)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


HANDSHAKE_SECONDS = 5.0  # the most a scheduler may take to connect (then 1.5x that to answer Dask's handshake)


def _client_within(make, scheduler: str, deadline: float):
    """``make()`` on a daemon thread, waited for at most ``deadline`` seconds; a client that comes
    later is closed by that thread, so nothing is left connected."""
    import threading
    box: dict = {}
    late = threading.Event()

    def attempt() -> None:
        try:
            box["client"] = make()
        except BaseException as exc:  # noqa: BLE001 - reported below, on the caller's thread
            box["error"] = exc
        if late.is_set() and "client" in box:
            box["client"].close()

    thread = threading.Thread(target=attempt, daemon=True, name="dask-connect")
    thread.start()
    wait = 1.5 * deadline + 0.5  # Client's own timeout (``deadline``) reports a refused connection first
    thread.join(wait)
    if thread.is_alive():
        late.set()
        raise NoCluster(f"{scheduler} did not complete a Dask handshake within {wait:g} s: is a Dask "
                        "scheduler listening there?")
    if "error" in box:
        raise NoCluster(f"no Dask scheduler answers at {scheduler} ({type(box['error']).__name__})")
    return box["client"]


def connect(scheduler: str | None = None, workers: int = 2, threads_per_worker: int = 1,
            deadline: float = HANDSHAKE_SECONDS):
    """A Dask client: to ``scheduler`` if given (one-line error if it does not answer, or does not
    finish Dask's handshake within ``deadline`` seconds: something else listening there, such as an
    HTTP server, made ``Client`` wait forever), else a ``LocalCluster`` with ``workers`` processes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise NoCluster("the dask backend needs the optional extra: pip install '.[dask]'") from None
    if scheduler:
        return _client_within(lambda: Client(scheduler, timeout=deadline), scheduler, deadline)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster)


