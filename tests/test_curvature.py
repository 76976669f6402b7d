"""The Hessian's extreme eigenvalues from hessp: against the dense Hessian's eigh on tiny problems,
the symmetry's null space, a known spectrum, the kind of a constructed saddle."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import curvature
from pipeline.objectives.mf import BiasedMF
from tests.conftest import tiny_ratings
from pipeline.optim import StoppingRule, minimize


def dense_hessian(obj, x):
    n = obj.n_params
    H = np.column_stack([obj.hessp(x, e) for e in np.eye(n)])
    return (H + H.T) / 2


def complement_eigenvalues(H, U):
    n = H.shape[0]
    B = np.linalg.qr(np.hstack([U, np.eye(n)]))[0][:, U.shape[1]:]
    return np.linalg.eigvalsh(B.T @ H @ B)


def converged(obj, seed=0):
    res = minimize("newton-cg", obj, obj.init(np.random.default_rng(seed)), StoppingRule(gtol=1e-12, max_iter=500))
    return res.x


@pytest.fixture(scope="module")
def small():
    return BiasedMF(tiny_ratings(n_users=9, n_items=7), rank=3, reg=0.1, reg_bias=0.05)


def test_the_symmetry_is_a_null_space_of_dimension_k_k_minus_1_over_2_at_a_stationary_point(small):
    x = converged(small)
    U = curvature.symmetry_basis(small, x)
    assert U.shape[1] == 3 * 2 // 2
    H = dense_hessian(small, x)
    w = np.linalg.eigvalsh(H)
    scale = np.abs(w).max()
    assert np.sum(np.abs(w) < 1e-9 * scale) == 3  # exactly k(k-1)/2 zero eigenvalues, the symmetry's
    assert np.linalg.norm(H @ U) <= 1e-8 * scale  # zero up to the gradient left (|H u| = O(|g|))
    g = small.loss_grad(x)[1]
    assert np.abs(U.T @ g).max() <= 1e-12 + 1e-9 * np.linalg.norm(g)  # the gradient never moves along them


@pytest.mark.parametrize("where", ["start", "optimum", "random"])
def test_extreme_eigenvalues_match_the_dense_hessian(small, where):
    rng = np.random.default_rng(4)
    x = {"start": small.init(rng), "optimum": converged(small),
         "random": rng.normal(0, 0.5, small.n_params)}[where]
    tight = curvature.measure(small, x, tol=1e-10)
    w = complement_eigenvalues(dense_hessian(small, x), curvature.symmetry_basis(small, x))
    assert abs(tight.lambda_min - w[0]) <= 1e-8 * abs(w[-1]) and abs(tight.lambda_max - w[-1]) <= 1e-8 * abs(w[-1])
    assert tight.symmetry_dim == 3 and tight.n_hessp > 0
    default = curvature.measure(small, x)  # the comparison's tolerance: within the error bound it reports
    assert abs(default.lambda_min - w[0]) <= default.error and default.n_hessp <= tight.n_hessp


def test_the_iterative_path_matches_the_dense_one():
    """Above 60 free directions the measurement is Lanczos + LOBPCG on hessp alone (with a cold
    user and item, deflated as inactive)."""
    from pipeline.data import Ratings
    base = tiny_ratings(n_users=20, n_items=15)
    obj = BiasedMF(Ratings(**{**base.__dict__, "user_ids": np.arange(21), "item_ids": np.arange(16)}), rank=3,
                   reg=0.1, reg_bias=0.05)
    x = converged(obj, seed=1)
    c = curvature.measure(obj, x, tol=1e-10)
    inactive = np.eye(obj.n_params)[:, curvature.inactive_mask(obj, obj.n_params)]
    w = complement_eigenvalues(dense_hessian(obj, x), np.hstack([curvature.symmetry_basis(obj, x), inactive]))
    assert obj.n_params - 3 > 60
    assert abs(c.lambda_max - w[-1]) <= 1e-8 * w[-1] and abs(c.lambda_min - w[0]) <= 1e-8 * w[-1], (c, w[[0, -1]])
    assert c.kind(1e-8) == "local minimum" and c.condition == pytest.approx(w[-1] / w[0], rel=1e-6)


def test_a_known_spectrum():
    """One user, one item, rating r, rank 1, penalties lam (reg) and lam_b: at p = q = 0 and the
    biases' optimum the Hessian is known in closed form."""
    from pipeline.data import from_raw
    r, lam, lam_b = 4.0, 0.5, 0.25
    data = from_raw(np.array([1, 2]), np.array([1, 2]), np.array([r, 2.0]), rating_scale=(1, 5))
    obj = BiasedMF(data, rank=1, reg=lam, reg_bias=lam_b, weighting="none")
    x = obj.pack(np.zeros((2, 1)), np.zeros((2, 1)), np.zeros(2), np.zeros(2))
    H = dense_hessian(obj, x)
    c = curvature.measure(obj, x)
    w = np.linalg.eigvalsh(H)
    assert c.symmetry_dim == 0  # rank 1: no antisymmetric direction
    assert c.lambda_min == pytest.approx(w[0], abs=1e-12) and c.lambda_max == pytest.approx(w[-1], abs=1e-12)


def test_the_kind_of_a_constructed_saddle():
    """Zero factors with the biases at their optimum: a stationary point (the factors' gradient is
    zero there) whose Hessian has negative curvature where the residuals' matrix has a singular
    value above the penalty: a saddle, said as one."""
    obj = BiasedMF(tiny_ratings(n_users=9, n_items=7), rank=2, reg=0.01, reg_bias=0.01)
    x = obj.pack(np.zeros((obj.n_users, 2)), np.zeros((obj.n_items, 2)), np.zeros(obj.n_users), np.zeros(obj.n_items))
    bias_only = minimize("lbfgs", obj, x, StoppingRule(gtol=1e-13, max_iter=2000)).x  # factors stay at 0
    assert np.abs(obj.unpack(bias_only)[0]).max() == 0
    c = curvature.measure(obj, bias_only)
    assert c.grad_norm < 1e-8 and c.lambda_min < 0
    assert c.kind(1e-8).startswith("saddle point: lambda_min = -")
    assert curvature.measure(obj, converged(obj)).kind(1e-8) == "local minimum"
    assert curvature.measure(obj, obj.init(np.random.default_rng(0))).kind(1e-8) == "not stationary"


def test_parameters_no_rating_touches_are_deflated_too():
    """An item and a user without a training rating: their rows of H are zero (count weighting),
    which put lambda_min at 4e-14 on MovieLens 100K; deflated, the measurement matches the dense
    Hessian restricted to the parameters the data touches."""
    from pipeline.data import Ratings
    base = tiny_ratings(n_users=9, n_items=7)
    data = Ratings(**{**base.__dict__, "user_ids": np.arange(10), "item_ids": np.arange(8)})  # user 9, item 7 cold
    obj = BiasedMF(data, rank=2, reg=0.1, reg_bias=0.05)
    inactive = curvature.inactive_mask(obj, obj.n_params)
    assert inactive.sum() == 2 * (2 + 1)
    x = converged(obj)
    c = curvature.measure(obj, x)
    H = dense_hessian(obj, x)
    assert np.abs(H[inactive]).max() == 0
    U = curvature.symmetry_basis(obj, x)
    w = complement_eigenvalues(H, np.hstack([U, np.eye(obj.n_params)[:, inactive]]))
    assert c.inactive == 6 and abs(c.lambda_min - w[0]) <= 1e-8 * w[-1] and c.lambda_min > 1e-6 * w[-1]


def test_the_hessian_along_a_symmetry_direction_is_the_rotated_gradient_at_every_point(small):
    """docs/derivation.md: H(x) (P A, Q A, 0, 0) = (G_P A, G_Q A, 0, 0) exactly, for antisymmetric A,
    at any point (so it vanishes at a stationary one)."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 0.4, small.n_params)
    A = rng.normal(size=(3, 3))
    A = A - A.T
    P, Q, b, c = small.unpack(x)
    GP, GQ, _, _ = small.unpack(small.loss_grad(x)[1])
    u = small.pack(P @ A, Q @ A, np.zeros_like(b), np.zeros_like(c))
    rotated = small.pack(GP @ A, GQ @ A, np.zeros_like(b), np.zeros_like(c))
    Hu = small.hessp(x, u)
    assert np.linalg.norm(Hu - rotated) <= 1e-12 * np.linalg.norm(Hu) + 1e-15
    assert np.linalg.norm(Hu) > 1e-3 * np.linalg.norm(small.hessp(x, rng.normal(size=small.n_params)))  # not trivially 0
    assert abs(small.loss_grad(x)[1] @ u) <= 1e-13 * np.linalg.norm(u) * np.linalg.norm(small.loss_grad(x)[1])


@pytest.mark.parametrize("lam_min, residual, grad, kind", [
    (2e-7, 1e-6, 0.0, "local minimum"),          # above its error bound 1e-6 * 1e-2 = 1e-8
    (-3e-8, 1e-6, 0.0, "saddle point: lambda_min = -3.00e-08"),
    (-3e-8, 1e-5, 0.0, "undetermined"),          # within its error bound 1e-7: the sign is not known
    (5e-9, 1e-6, 0.0, "undetermined"),
    (2e-7, 1e-6, 1.0, "not stationary"),
])
def test_the_kind_of_point_respects_the_error_bound(lam_min, residual, grad, kind):
    c = curvature.Curvature(lam_min, 1e-2, grad, 0, 1, residual)
    assert c.kind(1e-3) == kind
    assert c.describe(1e-3).endswith(f"lambda_min {lam_min:.1e}")


def test_svdpp_declares_its_rotation_symmetry_and_it_is_a_null_space_at_its_optimum():
    from pipeline.objectives.svdpp import SVDpp
    obj = SVDpp(tiny_ratings(n_users=8, n_items=6), rank=3, reg=0.1, reg_bias=0.05)
    x = converged(obj)
    U = curvature.symmetry_basis(obj, x)
    H = dense_hessian(obj, x)
    assert U.shape[1] == 3 and np.linalg.norm(H @ U) <= 1e-7 * np.abs(np.linalg.eigvalsh(H)).max()
    c = curvature.measure(obj, x, tol=1e-10)
    w = complement_eigenvalues(H, np.hstack([U, np.eye(obj.n_params)[:, curvature.inactive_mask(obj, obj.n_params)]]))
    assert abs(c.lambda_min - w[0]) <= 1e-8 * w[-1] and abs(c.lambda_max - w[-1]) <= 1e-8 * w[-1]


def test_a_symmetry_basis_too_big_for_memory_is_not_measured_rather_than_allocated(small, monkeypatch):
    """ML-25M at rank 10: 2.4M parameters x 45 directions would be gigabytes; the comparison goes
    on without the figure."""
    monkeypatch.setattr("pipeline.limits.memory_limit", lambda: 8 * 3 * 8 * small.n_params * 3 - 1)
    with pytest.raises(curvature.NotMeasured, match="the symmetry's basis would take"):
        curvature.measure(small, small.init(np.random.default_rng(0)))
    monkeypatch.setattr("pipeline.limits.memory_limit", lambda: 8 * 3 * 8 * small.n_params * 3)
    curvature.measure(small, small.init(np.random.default_rng(0)))


# -- the eigenvalue density (stochastic Lanczos quadrature) and the preconditioned Hessian ----------
class _Diagonal:
    """A model with a known spectrum: ``H = diag(d)`` everywhere, no symmetry declared."""
    def __init__(self, d):
        self.d, self.n_params = np.asarray(d, float), len(d)

    def hessp(self, x, v):
        return self.d * v

    def loss_grad(self, x):
        return 0.5 * float(x @ (self.d * x)), self.d * x


def test_the_density_of_a_known_spectrum_and_its_extremes():
    """Eigenvalues spread over four decades (2,000 of them): the share below each decade's bound
    matches the exact share within four of its standard deviations plus one node's weight; the
    extreme Ritz values lie inside the spectrum, each within its residual of an eigenvalue."""
    d = np.logspace(-4, 0, 2000)
    s = curvature.spectral_density(_Diagonal(d), np.zeros(len(d)))
    assert s.dim == 2000 and s.n_hessp == curvature.STEPS and s.weights.sum() == pytest.approx(1.0)
    for bound in (1e-3, 1e-2, 1e-1):
        p = float(np.mean(d <= bound))
        assert abs(s.share_below(bound) - p) <= 4 * np.sqrt(2 * p * (1 - p) / len(d)) + 1 / curvature.STEPS
    (low, low_res), (top, top_res) = s.lowest, s.highest
    assert d[0] <= low and top <= d[-1]
    assert np.abs(d - low).min() <= low_res + 1e-15 and np.abs(d - top).min() <= top_res + 1e-15
    assert top_res <= 1e-3 * d[-1] and low_res > 1e-3 * d[0]  # the top converges first, the bottom far from it


def test_the_quadrature_is_exact_where_the_krylov_space_closes(small):
    """As many steps as free directions: the nodes are the eigenvalues of H on the complement (the
    dense Hessian's), the extremes exact."""
    x = converged(small)
    w = complement_eigenvalues(dense_hessian(small, x), curvature.symmetry_basis(small, x))
    s = curvature.spectral_density(small, x, steps=len(w) + 5)
    assert s.dim == len(w)
    scale = abs(w).max()
    heavy = s.nodes[s.weights > 1e-12]
    assert all(np.abs(w - t).min() <= 1e-9 * scale for t in heavy)
    assert abs(s.lowest[0] - w[0]) <= 1e-9 * scale and abs(s.highest[0] - w[-1]) <= 1e-9 * scale
    c, _ = curvature.measure_with_density(small, x)
    assert abs(c.lambda_min - w[0]) <= 1e-8 * scale and abs(c.lambda_max - w[-1]) <= 1e-8 * scale


@pytest.mark.parametrize("where", ["start", "optimum"])
def test_measure_with_density_agrees_with_measure_on_the_iterative_path(where):
    from pipeline.data import Ratings
    base = tiny_ratings(n_users=20, n_items=15)
    obj = BiasedMF(Ratings(**{**base.__dict__, "user_ids": np.arange(21), "item_ids": np.arange(16)}), rank=3,
                   reg=0.1, reg_bias=0.05)
    x = converged(obj, seed=1) if where == "optimum" else obj.init(np.random.default_rng(1))
    both, s = curvature.measure_with_density(obj, x, tol=1e-10)
    alone = curvature.measure(obj, x, tol=1e-10)
    scale = alone.lambda_max
    assert abs(both.lambda_min - alone.lambda_min) <= 1e-8 * scale and abs(both.lambda_max - scale) <= 1e-8 * scale
    assert both.n_hessp >= s.n_hessp and both.inactive == alone.inactive and both.symmetry_dim == alone.symmetry_dim


def test_the_preconditioner_factor_gives_the_preconditioner(small):
    x = small.init(np.random.default_rng(3))
    C, Ct, C_inv = small.precondition_factor(x)
    v = np.random.default_rng(5).normal(size=small.n_params)
    M_inv = small.precondition(x)
    assert np.allclose(C(Ct(v)), M_inv(v), rtol=1e-12, atol=1e-14)
    assert np.allclose(C_inv(C(v)), v, rtol=1e-12, atol=1e-14)


def test_the_preconditioned_spectrum_is_m_inverse_h_on_the_symmetrys_complement(small):
    """The eigenvalues of C^T H C on the complement of C^-1 U are the generalized eigenvalues of
    (H, M) off the symmetry: checked against the dense C^T H C; lambda_max is 2 there (the block
    Jacobi split of a two-block matrix pairs each eigenvalue 1 - s with 1 + s, the symmetry's zeros
    with 2s)."""
    x = converged(small)
    c, s = curvature.preconditioned(small, x, tol=1e-10)
    view = curvature.Preconditioned(small, x)
    n = small.n_params
    B = np.column_stack([view.hessp(x, e) for e in np.eye(n)])
    W = curvature.symmetry_basis(view, x)
    w = complement_eigenvalues((B + B.T) / 2, W)
    assert W.shape[1] == 3 and abs(c.lambda_min - w[0]) <= 1e-8 * w[-1] and abs(c.lambda_max - w[-1]) <= 1e-8 * w[-1]
    Minv = np.column_stack([small.precondition(x)(e) for e in np.eye(n)])
    general = np.sort(np.linalg.eigvals(Minv @ dense_hessian(small, x)).real)
    assert np.abs(general - np.sort(np.linalg.eigvalsh((B + B.T) / 2))).max() <= 1e-8 * general.max()
    assert c.lambda_max == pytest.approx(2.0, abs=1e-8) and c.condition == pytest.approx(w[-1] / w[0])
    assert c.other_passes >= small.precondition_passes and s.dim == len(w)
