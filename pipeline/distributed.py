"""The MF objective's sums on Dask: shards of ratings on workers, scipy on the driver.

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
Newton-CG's many ``hessp`` calls at one point pay only for the direction.

Shards are scattered once (``client.scatter``) and stay on their workers. A worker that dies
mid-fit: Dask recomputes its shard elsewhere if it can (the shard data is held by the driver's
future); if not, the call raises and the run is marked FAILED.

Needs the optional extra: ``pip install .[dask]``.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.ratings import Ratings
from pipeline.objectives.mf import BiasedMF


class BackendError(RuntimeError):
    """The cluster could not be reached or failed during a fit (one-line message)."""


def build(model_config, train: Ratings, client):
    """The objective ``model_config`` names with its sums on the cluster of ``client``: the models
    this backend implements are in :data:`MODELS`; any other is a one-line ``ValueError``."""
    if model_config.model not in MODELS:
        raise ValueError(f"the dask backend runs the model(s) {', '.join(MODELS)}; "
                         f"run --model {model_config.model} on --backend local")
    return MODELS[model_config.model](train, model_config.hyper, client)


class _Shard:
    """One user block of the ratings, as a penalty-free BiasedMF with the global mean."""

    def __init__(self, ratings: Ratings, rows: np.ndarray, rank: int, mu: float, user_lo: int, user_hi: int,
                 kernel: str):
        self.obj = BiasedMF(ratings.subset(rows), rank=rank, reg=0.0, reg_bias=0.0, weighting="none", mu=mu,
                            kernel=kernel)
        self.n = len(rows)
        self.lo, self.hi = user_lo, user_hi

    def _split(self, full: np.ndarray):
        P, Q, b, c = self.obj.unpack(full)
        return P[self.lo:self.hi], Q, b[self.lo:self.hi], c

    def loss_grad(self, x):
        f, g = self.obj.loss_grad(x)
        return (f * self.n, *(part * self.n for part in self._split(g)))

    def hessp(self, x, v, exact: bool):
        h = self.obj.hessp(x, v) if exact else self.obj.gnvp(x, v)
        return tuple(part * self.n for part in self._split(h))


def _call(shard, method, *args):
    return getattr(shard, method)(*args)


class DaskMF(BiasedMF):
    """The same objective as :class:`BiasedMF`, with the data sums computed on a Dask cluster.

    The driver keeps a data-free copy for the layout, the penalty, ``init`` and ``predict``.
    """

    def __init__(self, train: Ratings, client, n_shards: int | None = None, **kw):
        super().__init__(train, **{**kw, "kernel": "numpy"})
        self.client = client
        workers = list(client.scheduler_info()["workers"])
        n_shards = n_shards or max(1, len(workers))
        bounds = np.searchsorted(np.concatenate([[0], np.cumsum(self.user_counts)]),
                                 np.linspace(0, self.n_ratings, n_shards + 1)).astype(np.int64)
        bounds[0], bounds[-1] = 0, self.n_users
        bounds = np.unique(bounds)
        users = train.users
        shards = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            rows = np.flatnonzero((users >= lo) & (users < hi))
            shards.append(_Shard(train, rows, self.rank, self.mu, int(lo), int(hi), kw.get("kernel", "auto")))
        self.user_bounds = bounds
        try:
            self.shards = client.scatter(shards, workers=None, broadcast=False)
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
        self.bytes_received += sum(sum(np.asarray(p).nbytes for p in part) for part in parts)
        return parts

    def _assemble(self, parts, with_value: bool):
        off = 1 if with_value else 0
        P = np.zeros((self.n_users, self.rank))
        b = np.zeros(self.n_users)
        Q = np.zeros((self.n_items, self.rank))
        c = np.zeros(self.n_items)
        for (lo, hi), part in zip(zip(self.user_bounds[:-1], self.user_bounds[1:]), parts):
            P[lo:hi] = part[off]
            Q += part[off + 1]
            b[lo:hi] = part[off + 2]
            c += part[off + 3]
        return self.pack(P, Q, b, c)

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        parts = self._gather("loss_grad", x)
        data = sum(p[0] for p in parts)
        g = self._assemble(parts, with_value=True)
        P, Q, b, c = self.unpack(x)
        self._add_penalty(g, x)
        return float(data + self._penalty(P, Q, b, c) * 1.0) / self.n_ratings, g / self.n_ratings

    def loss(self, x: np.ndarray) -> float:
        return self.loss_grad(x)[0]

    def _hessp(self, x: np.ndarray, v: np.ndarray, exact: bool) -> np.ndarray:
        parts = self._gather("hessp", np.ascontiguousarray(x, dtype=np.float64),
                             np.ascontiguousarray(v, dtype=np.float64), exact)
        h = self._assemble(parts, with_value=False)
        self._add_penalty(h, np.asarray(v, dtype=np.float64))
        return h / self.n_ratings

    als_sweep = None  # model-specific solvers stay single-machine: als and sgd say so and stop
    sgd_epoch = None


def connect(scheduler: str | None = None, workers: int = 2, threads_per_worker: int = 1):
    """A Dask client: to ``scheduler`` if given (one-line error if it does not answer), else a
    ``LocalCluster`` with ``workers`` processes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise BackendError("the dask backend needs the optional extra: pip install '.[dask]'") from None
    if scheduler:
        try:
            return Client(scheduler, timeout=5)
        except Exception as exc:
            raise BackendError(f"no Dask scheduler answers at {scheduler} ({type(exc).__name__})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                           dashboard_address=None)
    return Client(cluster)


# The models this backend implements (model name -> builder from its hyperparameters).
MODELS = {
    "mf": lambda train, h, client: DaskMF(train, client, rank=h.rank, reg=h.reg, reg_bias=h.reg_bias,
                                          weighting=h.weighting, init_scale=h.init_scale, kernel=h.kernel),
}
