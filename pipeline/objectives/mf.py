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

The sums over the ratings (loss, gradient, the two products, the per-row ALS systems, the block
factorization, the SGD epoch) are computed by a *sums* object chosen once, when the model is built,
by its engine (``pipeline.objectives.mf_sums``): the readable numpy reference (sparse products,
gathered N x k rows: with ``E`` the sparse m x n matrix of residuals the sums are ``E @ Q`` and
``E.T @ P``), the compiled kernels (``mf_kernels.py``, one fused pass per call, memory
O(parameters + ratings), parallel over blocks of users), or shards on Dask workers
(``pipeline.distributed``). Every call costs O(N k) time; the state that depends on ``x`` alone is
cached, so the inner CG steps of Newton-CG at one ``x`` pay only for the direction. Tests hold the
implementations equal to 1e-10 relative. This class holds the rest of the math: the layout of
``x``, the penalty, ``init``, ``predict``, and how ALS and the preconditioner are assembled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from pipeline.data.ratings import Ratings
from pipeline.objectives.base import PredictsRatings, check_size
from pipeline.objectives.engine import LocalEngine
from pipeline.objectives.mf_sums import ITEMS, OPTIONAL, USERS, Layout, Penalty
from pipeline.objectives.serving import FactorScorer
from pipeline.objectives.spec import ModelSpec, hyperparameter

WEIGHTINGS = ("none", "count")


@dataclass(frozen=True)
class MFHyper:
    """Hyperparameters of biased MF: the one place their defaults are said (the CLI options
    ``--rank`` ..., the MLflow params and ``BiasedMF``'s defaults are made from these)."""

    rank: int = hyperparameter(10, "Number of latent factors k.", low=1)
    reg: float = hyperparameter(0.1, "Factor penalty lambda (see --weighting).", low=0)
    reg_bias: float = hyperparameter(0.1, "Bias penalty lambda_b.", low=0)
    weighting: str = hyperparameter("count", "Penalty weights: 'count' weights each user/item by its number of "
                                             "training ratings (what SGD and ALS-WR minimize); 'none' is plain L2.",
                                    choices=WEIGHTINGS)
    init_scale: float = hyperparameter(0.1, "Standard deviation of the random starting factors.", low=0,
                                       low_open=True)


def hyper_of(hyper: MFHyper | None, values: dict) -> MFHyper:
    """``hyper`` (default: ``MFHyper()``) with ``values`` over it, checked: the constructors'
    keyword form (``BiasedMF(train, rank=2)``) and the spec's form (``BiasedMF(train, hyper)``)."""
    h = replace(hyper or MFHyper(), **values)
    if h.rank < 1:
        raise ValueError(f"rank must be a positive integer, got {h.rank}")
    if h.reg < 0 or h.reg_bias < 0:
        raise ValueError(f"penalties must be non-negative, got reg={h.reg}, reg_bias={h.reg_bias}")
    if h.weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {h.weighting!r}")
    return h


class BiasedMF(PredictsRatings):
    """The objective above on a training set. See the module docstring for the math.

    ``BiasedMF(train, hyper)`` or ``BiasedMF(train, rank=20, ...)`` (fields of :class:`MFHyper`
    over its defaults). ``engine`` chooses, once, what computes the sums over the ratings
    (``pipeline.objectives.engine``; default: this machine, numba where installed); ``kernel`` is
    the short form ``engine=LocalEngine(kernel)``. ``mu`` fixes the global mean (a shard's)."""

    BLOCKS = ("P", "Q", "b", "c")  # the parameter blocks, in ``unpack`` order

    def __init__(self, train: Ratings, hyper: MFHyper | None = None, *, engine=None, kernel: str = "auto",
                 mu: float | None = None, **values):
        self.hyper = h = hyper_of(hyper, values)
        if len(train) == 0:
            raise ValueError("the training set is empty")
        self.rank, self.reg, self.reg_bias, self.weighting = int(h.rank), float(h.reg), float(h.reg_bias), h.weighting
        self.init_scale = float(h.init_scale)
        check_size((train.n_users + train.n_items) * (self.rank + 1), f"rank {self.rank} on {train.n_users:,} users "
                   f"and {train.n_items:,} items (lower --rank)", block=self.rank)
        self.layout = L = Layout.of(train, self.rank, mu)
        self.n_users, self.n_items, self.n_ratings, self.mu = L.n_users, L.n_items, L.n_ratings, L.mu
        self.user_counts, self.item_counts, self.n_params = L.user_counts, L.item_counts, L.n_params
        self.users, self.items, self.ratings = L.users, L.items, L.ratings
        weights = (L.user_counts, L.item_counts) if h.weighting == "count" else (np.ones(L.n_users), np.ones(L.n_items))
        self.penalty = Penalty(self.reg, self.reg_bias, *weights)
        self.w_user, self.w_item = weights
        self.engine = engine or LocalEngine(kernel)
        self.sums = self.engine.mf_sums(L)  # chosen once: every sum over the ratings goes through it
        self.kernel = self.sums.kernel

    # -- layout ---------------------------------------------------------------------------
    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views ``(P, Q, b, c)`` into ``x`` (no copies)."""
        return self.layout.unpack(x)

    def pack(self, P, Q, b, c) -> np.ndarray:
        return self.layout.pack(P, Q, b, c)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Small random factors ``N(0, init_scale^2)`` (zero factors are a saddle), zero biases.

        Users and items with no training rating start (and, having zero gradient, stay) at zero.
        """
        P = rng.normal(0.0, self.init_scale, (self.n_users, self.rank)) * (self.user_counts > 0)[:, None]
        Q = rng.normal(0.0, self.init_scale, (self.n_items, self.rank)) * (self.item_counts > 0)[:, None]
        return self.pack(P, Q, np.zeros(self.n_users), np.zeros(self.n_items))

    def offers(self, capability: str) -> bool:
        """Whether this objective computes the optional operation ``capability`` (``gnvp``,
        ``als_sweep``, ``precondition``, ``sgd_epoch``): what its sums implementation offers."""
        if capability == "precondition_factor":  # built from the same blocks as the preconditioner
            capability = "precondition"
        return capability not in OPTIONAL or capability in self.sums.OFFERS

    # -- the protocol: the sums, with this model's penalty ---------------------------------------
    def loss(self, x: np.ndarray) -> float:
        """``L(x)`` alone (line searches)."""
        return self.sums.loss(x, self.penalty)

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        return self.sums.loss_grad(x, self.penalty)

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Exact ``H(x) v``; see the module docstring."""
        return self.sums.hessp(x, v, True, self.penalty)

    def gnvp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Gauss-Newton product (residual curvature dropped), positive semi-definite."""
        return self.sums.hessp(x, v, False, self.penalty)

    # -- model-specific solvers (optional capabilities: ALS, newton-pcg and SGD use them) ----------
    precondition_passes = 2  # building the preconditioner reads the ratings once per side

    def symmetry_directions(self, x: np.ndarray) -> np.ndarray:
        """The ``k(k-1)/2`` directions ``(P A, Q A, 0, 0)``, ``A = E_ab - E_ba`` for ``a < b``, along
        which ``L`` is constant (``L(P R, Q R) = L(P, Q)`` for orthogonal ``R``: ``P Q^T`` and the
        penalty are unchanged), as the columns of an ``n_params x k(k-1)/2`` matrix; at a
        stationary point each is in the Hessian's null space (``pipeline.curvature``)."""
        P, Q, _, _ = self.unpack(x)
        pairs = [(a, b) for a in range(self.rank) for b in range(a + 1, self.rank)]
        out = np.zeros((self.n_params, len(pairs)))
        for j, (a, b) in enumerate(pairs):
            dP, dQ = np.zeros_like(P), np.zeros_like(Q)
            dP[:, b], dP[:, a] = P[:, a], -P[:, b]
            dQ[:, b], dQ[:, a] = Q[:, a], -Q[:, b]
            out[:, j] = self.pack(dP, dQ, np.zeros(self.n_users), np.zeros(self.n_items))
        return out

    def inactive_parameters(self) -> np.ndarray:
        """True for the factors and bias of every user and item without a training rating: no
        term of ``L`` but their penalty reads them, they start at zero and stay there."""
        cold_u, cold_i = self.user_counts == 0, self.item_counts == 0
        return self.pack(np.repeat(cold_u[:, None], self.rank, 1), np.repeat(cold_i[:, None], self.rank, 1),
                         cold_u, cold_i) > 0

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
        factors = [self.sums.block_factors(side, x, self.penalty) for side in (USERS, ITEMS)]
        solve = self.sums.block_solve

        def apply(v: np.ndarray) -> np.ndarray:
            vP, vQ, vb, vc = self.unpack(np.asarray(v, dtype=np.float64))
            users = solve(factors[USERS], np.column_stack([vP, vb]))
            items = solve(factors[ITEMS], np.column_stack([vQ, vc]))
            return self.n_ratings * self.pack(users[:, :-1], items[:, :-1], users[:, -1], items[:, -1])
        return apply

    def precondition_factor(self, x: np.ndarray):
        """``(C, C^T, C^-1)`` as functions, with ``C C^T = M^-1`` for the preconditioner ``M`` of
        :meth:`precondition`: each block is ``M_r = L_r L_r^T / N`` (its Cholesky factor ``L_r``),
        so ``C = sqrt(N) diag(L_r^-T)`` and ``C^-1 = diag(L_r^T) / sqrt(N)``. ``C^T H C`` is the
        preconditioned Hessian, symmetric and with the eigenvalues of ``M^-1 H`` (it is similar to
        ``M^-1/2 H M^-1/2``): what CG inside newton-pcg meets (``pipeline.curvature.preconditioned``).
        Small dense products per row, no pass over the ratings after the blocks are built."""
        x = np.asarray(x, dtype=np.float64)
        factors = [self.sums.block_factors(side, x, self.penalty) for side in (USERS, ITEMS)]
        inverses = [np.linalg.inv(F) for F in factors]  # L_r^-1, lower triangular
        root = math.sqrt(self.n_ratings)

        def per_row(mats, v, transpose: bool, scale: float) -> np.ndarray:
            vP, vQ, vb, vc = self.unpack(np.asarray(v, dtype=np.float64))
            out = [scale * ((np.swapaxes(A, 1, 2) if transpose else A) @ rows[..., None])[..., 0]
                   for A, rows in zip(mats, (np.column_stack([vP, vb]), np.column_stack([vQ, vc])))]
            return self.pack(out[USERS][:, :-1], out[ITEMS][:, :-1], out[USERS][:, -1], out[ITEMS][:, -1])
        return (lambda v: per_row(inverses, v, True, root), lambda v: per_row(inverses, v, False, root),
                lambda v: per_row(factors, v, True, 1.0 / root))

    def als_sweep(self, x: np.ndarray) -> np.ndarray:
        """One ALS sweep: every ``(p_u, b_u)`` exactly, then every ``(q_i, c_i)`` exactly.

        With the other side fixed, ``(p_u, b_u)`` solves the ridge problem
        ``min sum_i (z_i . (p_u, b_u) - t_ui)^2 + w_u (lam |p_u|^2 + lam_b b_u^2)`` with
        ``z_i = (q_i, 1)`` and ``t_ui = r_ui - mu - c_i``: the normal equations
        ``(sum_i z_i z_i^T + w_u D) y = sum_i t_ui z_i``, ``D = diag(lam, ..., lam, lam_b)``,
        a (k+1)-square system per user (``sums.ridge``: batched on the reference path, by Cholesky
        per row in a compiled parallel pass on the fast path). Each half-sweep is an exact block
        minimization, so ALS never increases the objective. Costs two passes over the ratings.
        """
        out = np.array(x, dtype=np.float64, copy=True)
        P, Q, b, c = self.unpack(out)
        for side, (F, bias) in ((USERS, (P, b)), (ITEMS, (Q, c))):
            F[...], bias[...] = self.sums.ridge(side, out, self.penalty)
        return out

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
        self.sums.sgd_epoch(x, rng.permutation(self.n_ratings), lr, self.penalty)
        return x

    # -- compilation and threads, outside any clock ------------------------------------------------
    @staticmethod
    def compile_kernels() -> float:
        """Compile every kernel into numba's on-disk cache (``make install`` runs this, so no
        command of a fresh clone compiles); returns the seconds it took."""
        import time
        t0 = time.perf_counter()
        BiasedMF(tiny_ratings(), rank=2, kernel="numba").warm_up()
        return time.perf_counter() - t0

    def warm_up(self) -> None:
        """Compile (or load from numba's on-disk cache) every kernel this objective's methods call,
        by running each once on a tiny problem of the same kind (same rank, weighting, engine and
        argument types). A comparison calls this before any optimizer's clock starts, so the first
        iteration of the first method costs what the tenth does. A no-op where nothing compiles."""
        self.sums.warm_up(self._run_every_kernel)
        self.tune_threads()

    def _run_every_kernel(self) -> None:
        rng = np.random.default_rng(0)
        tiny = tiny_ratings()
        mf = BiasedMF(tiny, replace(self.hyper, reg=max(self.reg, 0.1), reg_bias=max(self.reg_bias, 0.1)),
                      kernel=self.kernel)
        x = mf.init(rng)
        mf.loss_grad(x)
        mf.loss(x + 0.1)
        mf.hessp(x, x)
        mf.gnvp(x + 0.2, x)  # at a new point: the residual pass alone
        mf.als_sweep(x)
        mf.precondition(x)(x)
        mf.sums.normal_equations(ITEMS, x)
        if self.weighting == "count":
            mf.sgd_epoch(x, 0.01, rng)
        mf.predict(x, tiny.users, tiny.items)

    def tune_threads(self) -> int | None:
        """Run the kernels on as many threads as pay on this problem and machine, measured now
        (``mf_kernels.choose_threads``; results do not depend on it). Called before each fit,
        outside its clock: a machine that got busy since the last fit is seen. None where the
        sums have no threads to choose."""
        x = self.init(np.random.default_rng(0))
        threads = self.sums.tune_threads(lambda: self.loss_grad(x + 0.0))
        if threads is not None:
            self.kernel_threads = threads
        return threads

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


def tiny_ratings() -> Ratings:
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


def rating_baselines(train: Ratings, reg_bias: float, weighting: str) -> dict:
    """The global mean and the fitted biases ``mu + b_u + c_i``: what any rating model must beat."""
    from pipeline import evaluate
    return {"global-mean": evaluate.global_mean_baseline(train),
            "biases-only": evaluate.biases_baseline(train, reg_bias, weighting)}


SPEC = ModelSpec(
    name="mf", summary="biased matrix factorization", hyper=MFHyper, build=lambda train, h, engine: BiasedMF(train, h, engine=engine),
    backends=("local", "dask"),
    baselines=lambda train, h: rating_baselines(train, h.reg_bias, h.weighting),
    title="biased matrix factorization", derivation=DERIVATION, headline=("rank", "reg"))
