"""The Hessian's extreme eigenvalues at a point, measured from ``hessp`` alone (no MLflow here).

Why: gradient descent's rate is set by the condition number ``kappa = lambda_max / lambda_min``
(``(kappa - 1)/(kappa + 1)`` per step at best), CG's iterations grow like ``sqrt(kappa)``, and the
sign of ``lambda_min`` says what kind of point a method ended at. These are measured here rather
than asserted.

The symmetry. Where the model declares it (``symmetry_directions``, an optional capability), the
objective is unchanged along a family of directions at every point: for matrix factorization
``f(P R, Q R) = f(P, Q)`` for every orthogonal ``R`` (the predictions ``P Q^T`` and the penalty
``sum_u w_u |p_u|^2 + ...`` are unchanged), so ``d/dt f(P e^{tA}, Q e^{tA}) = 0`` for every
antisymmetric ``A``: the ``k(k-1)/2`` directions ``(P A, Q A)``. Differentiating the invariance
twice, at a stationary point each such direction ``u`` has ``H u = 0``: ``k(k-1)/2`` eigenvalues
are exactly zero there, whatever the data. They carry no information about the problem (no method
needs to move along them), so a condition number is taken on their orthogonal complement: the
operator measured is ``H`` restricted to ``U^perp`` (``U`` an orthonormal basis of the directions).
Likewise the parameters no training rating touches (``inactive_parameters``, an optional
capability: the factors and biases of users and items without a training rating), which start at
zero and never leave it, and whose rows of ``H`` are zero under the count-weighted penalty: they
are deflated too (on MovieLens 100K they put ``lambda_min`` at 4e-14 and ``kappa`` at 2e11).

Methods. ``lambda_max``: Lanczos (``scipy.sparse.linalg.eigsh``, ``which="LA"``) on the projected
operator ``(I - U U^T) H (I - U U^T)``. ``lambda_min``: LOBPCG (``scipy.sparse.linalg.lobpcg``)
constrained to ``U^perp``, preconditioned by ``M^-1`` when the model offers its block-diagonal
preconditioner (``precondition``, positive definite), else Lanczos ``which="SA"``. Each figure is
checked by its residual ``|H v - lambda v| / |lambda_max|``; every product is counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator, eigsh, lobpcg

from pipeline import limits
from pipeline.objectives.base import offers


class NotMeasured(Exception):
    """The eigensolvers did not converge at this point (a comparison goes on without the figure)."""


@dataclass(frozen=True)
class Curvature:
    """The Hessian's extreme eigenvalues at one point, on the complement of the model's symmetry."""

    lambda_min: float
    lambda_max: float
    grad_norm: float
    symmetry_dim: int        # directions deflated (k(k-1)/2 for MF; 0 where none is declared)
    n_hessp: int             # Hessian-vector products the measurement cost
    residual: float          # lambda_min's relative residual |H v - lambda v| / lambda_max (its error bound)
    other_passes: int = 0    # passes besides the products: the gradient, the preconditioner's build
    inactive: int = 0        # parameters no rating touches, deflated too
    residual_max: float = 0.0  # lambda_max's relative residual

    @property
    def passes(self) -> int:
        """The measurement's cost in data passes (a Hessian-vector product reads every rating once,
        as in the race's budget)."""
        return self.n_hessp + self.other_passes

    @property
    def condition(self) -> float:
        """``lambda_max / lambda_min`` on the complement; inf where ``lambda_min <= 0``."""
        return self.lambda_max / self.lambda_min if self.lambda_min > 0 else math.inf

    @property
    def error(self) -> float:
        """A bound on ``lambda_min``'s error: a symmetric matrix has an eigenvalue within the
        residual norm ``|H v - lambda v|`` (unit ``v``) of every Ritz value ``lambda``."""
        return self.residual * abs(self.lambda_max)

    def describe(self, stationary_tol: float) -> str:
        """The kind of point with its smallest eigenvalue, for a table's note:
        "a local minimum, lambda_min 2.5e-07", "a saddle point, lambda_min -3.3e-08"..."""
        kind = self.kind(stationary_tol).split(":")[0]
        return f"{'a ' if kind in ('local minimum', 'saddle point') else ''}{kind}, lambda_min {self.lambda_min:.1e}"

    def kind(self, stationary_tol: float) -> str:
        """What the point is: "not stationary" (``|g| > stationary_tol``), else "local minimum"
        (``lambda_min`` above its error bound), "saddle point: lambda_min = ..." (below minus it),
        or "undetermined" (``|lambda_min|`` within its error: flatter than the measurement)."""
        if self.grad_norm > stationary_tol:
            return "not stationary"
        if self.lambda_min > self.error:
            return "local minimum"
        if self.lambda_min < -self.error:
            return f"saddle point: lambda_min = {self.lambda_min:.2e}"
        return "undetermined"


def _symmetry_count(objective) -> int:
    """How many symmetry directions the objective declares (k(k-1)/2 for a rank-k factorization)."""
    if not offers(objective, "symmetry_directions"):
        return 0
    k = int(getattr(objective, "rank", 0))
    return k * (k - 1) // 2


def symmetry_basis(objective, x: np.ndarray) -> np.ndarray:
    """An orthonormal basis (columns) of the directions the objective declares it is invariant
    along at ``x``; an empty ``(n, 0)`` array for a model that declares none. Dependent directions
    (a rank-deficient ``P``) are dropped by the QR's diagonal."""
    n = len(x)
    if not offers(objective, "symmetry_directions"):
        return np.zeros((n, 0))
    D = np.asarray(objective.symmetry_directions(x), dtype=np.float64)
    if D.shape[1] == 0:
        return np.zeros((n, 0))
    Q, R = np.linalg.qr(D)
    keep = np.abs(np.diag(R)) > 1e-10 * max(np.abs(np.diag(R)).max(), 1e-300)
    return Q[:, keep]


def inactive_mask(objective, n: int) -> np.ndarray:
    """True for the parameters the objective declares no rating touches (none where undeclared)."""
    if not offers(objective, "inactive_parameters"):
        return np.zeros(n, bool)
    return np.asarray(objective.inactive_parameters(), bool)


class _Counted:
    """``H`` (projected on the complement of ``U`` and of the inactive coordinates) as a
    LinearOperator that counts its products. Every vector the solvers give it lies in the
    complement (their starts are projected, their iterates combine its outputs), so only the
    output is projected on ``U^perp``: ``P H v = P H P v`` for such ``v`` up to rounding, which
    the next output's projection removes again; that halves the projections' cost, which
    reading the ``n x k(k-1)/2`` basis makes as large as a product's."""

    def __init__(self, objective, x, U, inactive):
        self.objective, self.x, self.U, self.count = objective, x, U, 0
        self.active = (~inactive).astype(np.float64)

    def project(self, v: np.ndarray) -> np.ndarray:
        v = v * self.active if v.ndim == 1 else v * self.active[:, None]
        return v - self.U @ (self.U.T @ v) if self.U.shape[1] else v

    def __call__(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        cols = V.reshape(len(self.x), -1)
        out = np.empty_like(cols)
        for j in range(cols.shape[1]):
            self.count += 1
            out[:, j] = self.project(self.objective.hessp(self.x, cols[:, j] * self.active))
        return out.reshape(V.shape)

    def operator(self) -> LinearOperator:
        n = len(self.x)
        return LinearOperator((n, n), matvec=self, matmat=self, dtype=np.float64)


# Eigenpairs' relative residual |Hv - lambda v| / lambda_max, refined down to MIN_TOL while the sign
# of lambda_min is within its error bound. 1e-6 puts lambda_min at the optima of the default data and
# MovieLens 100K within 1 % of its value at 1e-10; 1e-4 does not (MovieLens 100K: 1.25e-6 for 3.26e-7,
# a Ritz value of another eigenvalue in the cluster above the smallest). START_TOL serves the start,
# where lambda_min is negative and far below the rest: 1e-4 gives it to 4 digits on both.
TOL, START_TOL, MIN_TOL = 1e-6, 1e-4, 1e-10


def measure(objective, x: np.ndarray, tol: float = TOL, seed: int = 0, max_products: int = 20_000,
            lambda_max: float | None = None, max_residual: float = math.nan) -> Curvature:
    """The extreme eigenvalues of ``objective``'s Hessian at ``x`` on the complement of its
    symmetry (see the module docstring), to relative residual about ``tol``; ``NotMeasured`` when
    an eigensolver does not converge within ``max_products``. With ``lambda_max`` given (a nearby
    point's, or a Lanczos run's with its relative residual ``max_residual``), only ``lambda_min``
    is measured and ``lambda_max`` is that value."""
    from scipy.sparse.linalg import ArpackError, ArpackNoConvergence
    try:
        return _measure(objective, x, tol, seed, max_products, lambda_max, max_residual)
    except (ArpackNoConvergence, ArpackError, np.linalg.LinAlgError) as exc:
        raise NotMeasured(" ".join(str(exc).split())[:160]) from None


def _measure(objective, x: np.ndarray, tol: float, seed: int, max_products: int,
             known_max: float | None, known_residual: float = math.nan) -> Curvature:
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    need = 3 * 8 * n * _symmetry_count(objective)  # the directions, their QR, the projections' workspace
    if need > limits.memory_limit() // 8:
        raise NotMeasured(f"the symmetry's basis would take {need / 2**30:.1f} GiB, more than an eighth of the memory "
                          "this process may use")
    inactive = inactive_mask(objective, n)
    U = symmetry_basis(objective, x)
    if inactive.any() and U.shape[1]:  # the symmetry within the active coordinates (it is zero off them)
        U = np.linalg.qr(U * (~inactive)[:, None])[0]
    H = _Counted(objective, x, U, inactive)
    rng = np.random.default_rng(seed)
    free = n - U.shape[1] - int(inactive.sum())
    if free <= 0:
        raise ValueError("the symmetry spans every direction: nothing to measure")
    start = H.project(rng.normal(size=n))
    other = 1  # the gradient below
    if free <= 60:  # tiny problems: the projected Hessian in full, exact eigenvalues
        lam_max, lam_min, residual = _dense(H, np.hstack([U, np.eye(n)[:, inactive]]), n)
        residual_max = 0.0
    else:
        other += getattr(objective, "precondition_passes", 0) if offers(objective, "precondition") else 0
        if known_max is None:
            top, vec = eigsh(H.operator(), k=1, which="LA", v0=start, tol=tol, maxiter=max(20, max_products // 20))
            lam_max = float(top[0])
            residual_max = _residual(H, lam_max, vec[:, 0], lam_max)
        else:  # given (a nearby point's): the scale of the error bound, not measured again
            lam_max, residual_max = float(known_max), float(known_residual)
        while True:  # refined while lambda_min is within its error bound of zero (its sign unknown)
            lam_min, low = _smallest(objective, x, H, U, lam_max, rng, tol, max_products)
            residual = _residual(H, lam_min, low, lam_max)
            if abs(lam_min) > residual * abs(lam_max) or tol <= MIN_TOL:
                break
            tol = max(tol / 100, MIN_TOL)
    g = objective.loss_grad(x)[1]
    return Curvature(float(lam_min), float(lam_max), float(np.linalg.norm(g)), int(U.shape[1]), H.count,
                     float(residual), other, int(inactive.sum()), float(residual_max))


def _dense(H: _Counted, U: np.ndarray, n: int) -> tuple[float, float, float]:
    """Every eigenvalue of ``H`` on ``U^perp`` from the dense matrix ``B^T H B`` (``B`` an
    orthonormal basis of the complement): exact up to rounding."""
    full = np.linalg.qr(np.hstack([U, np.eye(n)]))[0]
    B = full[:, U.shape[1]:n]
    A = B.T @ H(B)
    w = np.linalg.eigvalsh((A + A.T) / 2)
    return float(w[-1]), float(w[0]), 0.0


def _smallest(objective, x, H: _Counted, U, lam_max: float, rng, tol: float, max_products: int):
    """``lambda_min`` on ``U^perp``: LOBPCG preconditioned by the model's ``M^-1`` where offered,
    else Lanczos on the smallest algebraic end."""
    n = len(x)
    if offers(objective, "precondition"):
        apply = objective.precondition(x)
        M = LinearOperator((n, n), matvec=lambda v: apply(np.ravel(v)) * H.active, dtype=np.float64)  # LOBPCG
        # applies the constraints (U) to what M returns; the inactive coordinates are kept at zero here
        X = H.project(rng.normal(size=(n, 1))[:, 0])[:, None]
        # the iterates stay off the inactive coordinates (every product and M^-1 is projected)
        vals, vecs = lobpcg(H.operator(), X, M=M, Y=U if U.shape[1] else None, largest=False,
                            tol=tol * abs(lam_max), maxiter=max(50, max_products // 4))
        return float(vals[0]), vecs[:, 0]
    # the symmetry directions have eigenvalue 0 in H's projection: lift them above lambda_max
    shift = 2.0 * abs(lam_max) + 1.0
    lifted = LinearOperator((n, n), dtype=np.float64,  # its vectors have U parts: projected before H
                            matvec=lambda v: H(H.project(v)) + shift * (U @ (U.T @ v)) if U.shape[1] else H(v))
    vals, vecs = eigsh(lifted, k=1, which="SA", v0=H.project(rng.normal(size=n)), tol=tol,
                       maxiter=max(20, max_products // 20))
    return float(vals[0]), vecs[:, 0]


def _residual(H: _Counted, lam: float, v: np.ndarray, scale: float) -> float:
    v = H.project(v)
    v = v / max(np.linalg.norm(v), 1e-300)
    return float(np.linalg.norm(H(v) - lam * v) / max(abs(scale), 1e-300))


# -- the spectral density: stochastic Lanczos quadrature ---------------------------------------------
# Lanczos steps per probe and probes. The quadrature's m = 60 nodes resolve the density's shape (a
# share below a value to about 1/m). One Rademacher probe's estimate of a share p has a standard
# deviation of about sqrt(2 p (1 - p) / dim): under 0.5 % on the 28,875 free directions of the default
# data. Probes are added on small problems to keep that spread below 2 %.
STEPS, PROBES, SHARE_SD = 60, 1, 0.02


@dataclass(frozen=True)
class Spectrum:
    """The distribution of the Hessian's eigenvalues on the complement of the symmetry (and of the
    inactive parameters), by stochastic Lanczos quadrature: for a unit random probe ``z``,
    ``z^T f(H) z ~= sum_j tau_j^2 f(theta_j)`` with ``theta_j`` the eigenvalues of the
    ``m``-step Lanczos tridiagonal ``T_m`` from ``z`` and ``tau_j`` the first components of its
    eigenvectors (Gauss quadrature for the probe's spectral measure); ``E[z^T f(H) z] =
    tr f(H) / dim``, so averaged over probes the nodes and weights are a discrete estimate of the
    eigenvalue density. Exact for a polynomial ``f`` of degree below ``2m``.

    The same run gives the extreme Ritz values with their residuals ``|H y - theta y| =
    beta_m |s_m|`` (``s_m`` the last component of the tridiagonal's eigenvector): where a residual
    is within the tolerance, that extreme eigenvalue is measured at no further cost."""

    nodes: np.ndarray      # Ritz values, every probe's
    weights: np.ndarray    # their weights, summing to 1 over all probes
    dim: int               # how many eigenvalues the distribution describes
    n_hessp: int
    other_passes: int = 0
    lowest: tuple[float, float] = (math.nan, math.inf)   # the smallest Ritz value and its residual |Hy - theta y|
    highest: tuple[float, float] = (math.nan, math.inf)  # the largest, likewise

    @property
    def passes(self) -> int:
        return self.n_hessp + self.other_passes

    def share_below(self, value: float) -> float:
        """The estimated share of the eigenvalues at or below ``value``."""
        return float(self.weights[self.nodes <= value].sum())


def _lanczos(apply, z: np.ndarray, steps: int, project=lambda w: w) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``steps`` Lanczos steps from ``z`` with full reorthogonalization (twice, classical
    Gram-Schmidt): the tridiagonal's diagonal ``alpha`` (length m) and off-diagonal ``beta``
    (length m, its last entry the residual's norm ``beta_m``); fewer steps where the Krylov space
    closes (an invariant subspace: the quadrature is then exact and ``beta_m`` is 0). ``project``
    is applied after the reorthogonalization: what is left of a closed space is rounding, and
    normalized it would bring back the deflated directions."""
    n = len(z)
    V = np.empty((steps, n))
    alpha, beta = [], []
    v = z / np.linalg.norm(z)
    for j in range(steps):
        V[j] = v
        w = apply(v)
        alpha.append(float(v @ w))
        for _ in range(2):
            w = w - V[: j + 1].T @ (V[: j + 1] @ w)
        w = project(w)
        b = float(np.linalg.norm(w))
        closed = b <= 1e-10 * max(float(np.abs(alpha).max()), 1e-300)
        beta.append(0.0 if closed else b)
        if closed:
            break
        v = w / b
    return np.array(alpha), np.array(beta)


def spectral_density(objective, x: np.ndarray, steps: int = STEPS, probes: int | None = None,
                     seed: int = 0) -> Spectrum:
    """The Hessian's eigenvalue distribution at ``x`` on the complement of the symmetry and of the
    inactive parameters (see :class:`Spectrum`): Rademacher probes projected on the complement
    (``PROBES``, more on small problems), ``steps`` Lanczos steps each."""
    from scipy.linalg import eigh_tridiagonal
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if 8 * n * (steps + 3) > limits.memory_limit() // 8:
        raise NotMeasured(f"the Lanczos basis would take {8 * n * steps / 2**30:.1f} GiB, more than an eighth of "
                          "the memory this process may use")
    inactive = inactive_mask(objective, n)
    U = symmetry_basis(objective, x)
    if inactive.any() and U.shape[1]:
        U = np.linalg.qr(U * (~inactive)[:, None])[0]
    H = _Counted(objective, x, U, inactive)
    dim = n - U.shape[1] - int(inactive.sum())
    if dim <= 0:
        raise ValueError("the symmetry spans every direction: nothing to measure")
    probes = probes or max(PROBES, math.ceil(0.5 / (SHARE_SD ** 2 * dim)))  # sd of a share <= SHARE_SD
    rng = np.random.default_rng(seed)
    nodes, weights, low, high = [], [], (math.inf, math.inf), (-math.inf, math.inf)
    for _ in range(probes):
        z = H.project(rng.choice([-1.0, 1.0], size=n))
        alpha, beta = _lanczos(H, z, min(steps, dim), H.project)
        theta, S = eigh_tridiagonal(alpha, beta[:-1]) if len(alpha) > 1 else (alpha, np.ones((1, 1)))
        residuals = np.abs(beta[-1] * S[-1])
        nodes.append(theta)
        weights.append(S[0] ** 2 / probes)
        if theta[0] < low[0]:
            low = (float(theta[0]), float(residuals[0]))
        if theta[-1] > high[0]:
            high = (float(theta[-1]), float(residuals[-1]))
    return Spectrum(np.concatenate(nodes), np.concatenate(weights), dim, H.count, lowest=low, highest=high)


def measure_with_density(objective, x: np.ndarray, tol: float = TOL, seed: int = 0) -> tuple[Curvature, Spectrum]:
    """The eigenvalue density (:func:`spectral_density`) and the extreme eigenvalues at ``x``: each
    extreme taken from the density's Lanczos run where its residual is within ``tol`` (relative
    to ``lambda_max``), measured by :func:`measure` where it is not. On the default data and
    MovieLens 100K the top converges in the 60 steps at the start and at the optimum (relative
    residuals below 1e-16); the bottom does not (1e-3 and 2e-4 at the starts, 2e-3 and 8e-4 at the
    optima, where the smallest eigenvalues cluster near zero): LOBPCG measures it. ``n_hessp``
    counts both runs' products."""
    s = spectral_density(objective, x, seed=seed)
    (top, top_res), (low, low_res) = s.highest, s.lowest
    scale = max(abs(top), 1e-300)
    if top_res <= tol * scale and low_res <= tol * scale and abs(low) > low_res:
        g = objective.loss_grad(x)[1]
        c = Curvature(low, top, float(np.linalg.norm(g)), _deflated(objective, x), s.n_hessp, low_res / scale, 1,
                      int(inactive_mask(objective, len(x)).sum()), top_res / scale)
        return c, s
    c = measure(objective, x, tol=tol, seed=seed, lambda_max=top if top_res <= tol * scale else None,
                max_residual=top_res / scale)
    return Curvature(**{**c.__dict__, "n_hessp": c.n_hessp + s.n_hessp}), s


def _deflated(objective, x) -> int:
    return int(symmetry_basis(objective, x).shape[1])


# -- the preconditioned Hessian --------------------------------------------------------------------
class Preconditioned:
    """The Hessian as the CG inside newton-pcg meets it: ``C^T H C`` with ``C C^T = M^-1`` (the
    model's ``precondition_factor``), symmetric, with the eigenvalues of ``M^-1 H``. The same
    measurements apply to it (:func:`measure`, :func:`spectral_density`): its symmetry directions
    are ``C^-1 d`` for each of the model's ``d`` (``C^T H C (C^-1 d) = C^T H d = 0`` where ``H d = 0``),
    its inactive parameters the model's. Building the factor costs ``precondition_passes``."""

    def __init__(self, objective, x: np.ndarray):
        self.objective, self.rank = objective, getattr(objective, "rank", 0)
        self.C, self.Ct, self.C_inv = objective.precondition_factor(np.asarray(x, dtype=np.float64))
        self.build_passes = int(getattr(objective, "precondition_passes", 0))
        if offers(objective, "symmetry_directions"):
            self.symmetry_directions = lambda at: np.column_stack(
                [self.C_inv(d) for d in np.asarray(objective.symmetry_directions(at)).T]) \
                if _symmetry_count(objective) else np.zeros((len(at), 0))
        if offers(objective, "inactive_parameters"):
            self.inactive_parameters = objective.inactive_parameters

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.Ct(self.objective.hessp(x, self.C(v)))

    def loss_grad(self, x: np.ndarray):
        f, g = self.objective.loss_grad(x)
        return f, self.Ct(g)


def preconditioned(objective, x: np.ndarray, tol: float = TOL, seed: int = 0) -> tuple[Curvature, Spectrum]:
    """The extreme eigenvalues and the eigenvalue density of the preconditioned Hessian
    ``C^T H C`` at ``x`` (:class:`Preconditioned`, :func:`measure_with_density`); ``NotMeasured``
    where the model offers no factor. Its ``grad_norm`` is ``|C^T g|``; its kind means nothing
    (the point's kind is the Hessian's)."""
    if not offers(objective, "precondition_factor"):
        raise NotMeasured("the model offers no preconditioner factor")
    view = Preconditioned(objective, x)
    c, s = measure_with_density(view, x, tol=tol, seed=seed)
    return Curvature(**{**c.__dict__, "other_passes": c.other_passes + view.build_passes}), s
