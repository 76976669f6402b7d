"""The MF objective: derivatives against finite differences and a slow loop reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.objectives import BiasedMF
from pipeline.objectives.check import check_derivatives
from tests.conftest import tiny_ratings

CASES = [  # (rank, reg, reg_bias, weighting)
    (2, 0.1, 0.05, "none"),
    (3, 0.3, 0.0, "count"),
    (2, 0.0, 0.0, "none"),
    (3, 0.05, 0.2, "count"),
]


def loop_loss(f: BiasedMF, x: np.ndarray) -> float:
    """The objective written as plainly as possible, one rating at a time."""
    P, Q, b, c = f.unpack(x)
    total = 0.0
    for u, i, r in zip(f.users, f.items, f.ratings):
        e = f.mu + b[u] + c[i] + sum(P[u, k] * Q[i, k] for k in range(f.rank)) - r
        total += 0.5 * e * e
    for u in range(f.n_users):
        total += 0.5 * f.reg * f.w_user[u] * sum(p * p for p in P[u]) + 0.5 * f.reg_bias * f.w_user[u] * b[u] ** 2
    for i in range(f.n_items):
        total += 0.5 * f.reg * f.w_item[i] * sum(q * q for q in Q[i]) + 0.5 * f.reg_bias * f.w_item[i] * c[i] ** 2
    return total / f.n_ratings


def fd_gradient(fun, x, h=1e-6):
    g = np.zeros_like(x)
    for j in range(len(x)):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


def make(case, seed=0, kernel="auto"):
    rank, reg, reg_bias, weighting = case
    f = BiasedMF(tiny_ratings(seed=seed), rank=rank, reg=reg, reg_bias=reg_bias, weighting=weighting, kernel=kernel)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, f.n_params)  # a generic point: non-zero factors and biases
    return f, x, rng


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES)
def test_loss_matches_loop_reference(case, kernel):
    f, x, _ = make(case, kernel=kernel)
    assert f.loss(x) == pytest.approx(loop_loss(f, x), rel=1e-12)
    assert f.loss_grad(x)[0] == pytest.approx(loop_loss(f, x), rel=1e-12)


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_finite_differences_of_the_loop_loss(case, kernel):
    f, x, _ = make(case, kernel=kernel)
    g = f.loss_grad(x)[1]
    g_fd = fd_gradient(lambda z: loop_loss(f, z), x)
    np.testing.assert_allclose(g, g_fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES)
def test_hessp_matches_finite_differences_of_the_gradient(case, kernel):
    f, x, rng = make(case, kernel=kernel)
    for _ in range(3):
        v = rng.normal(size=f.n_params)
        h = 1e-6
        fd = (f.loss_grad(x + h * v)[1] - f.loss_grad(x - h * v)[1]) / (2 * h)
        np.testing.assert_allclose(f.hessp(x, v), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_full_hessian_from_hessp_is_symmetric_and_matches_fd(case):
    f, x, _ = make(case)
    n = f.n_params
    H = np.column_stack([f.hessp(x, e) for e in np.eye(n)])
    np.testing.assert_allclose(H, H.T, atol=1e-13)
    H_fd = np.column_stack([fd_gradient(lambda z: f.loss_grad(z)[1] @ e, x) for e in np.eye(n)])
    np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_hessp_is_linear(case):
    f, x, rng = make(case)
    u, v = rng.normal(size=(2, f.n_params))
    np.testing.assert_allclose(f.hessp(x, 2.0 * u - 3.0 * v), 2.0 * f.hessp(x, u) - 3.0 * f.hessp(x, v),
                               rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_gauss_newton_is_psd_and_differs_by_the_residual_terms(case):
    f, x, rng = make(case)
    n = f.n_params
    G = np.column_stack([f.gnvp(x, e) for e in np.eye(n)])
    np.testing.assert_allclose(G, G.T, atol=1e-13)
    assert np.linalg.eigvalsh(G).min() > -1e-12
    H = np.column_stack([f.hessp(x, e) for e in np.eye(n)])
    assert np.abs(H - G).max() > 1e-6  # the residual curvature is really there at a generic point


def test_exact_hessian_is_indefinite_at_the_zero_saddle():
    f, _, _ = make((2, 0.01, 0.01, "none"))
    x = np.zeros(f.n_params)  # factors zero, biases zero: a saddle when residuals are large
    H = np.column_stack([f.hessp(x, e) for e in np.eye(f.n_params)])
    assert np.linalg.eigvalsh(H).min() < 0


def test_cache_does_not_leak_between_points():
    f, x, rng = make(CASES[0])
    y = x + rng.normal(size=f.n_params)
    v = rng.normal(size=f.n_params)
    hx, hy = f.hessp(x, v), f.hessp(y, v)
    assert np.abs(f.hessp(x, v) - hx).max() == 0 and np.abs(hx - hy).max() > 0
    x_mut = x.copy()
    f.loss_grad(x_mut)
    x_mut += 1.0  # mutating the caller's array after the call must not fool the cache
    assert f.loss(x_mut) == pytest.approx(loop_loss(f, x_mut), rel=1e-12)


def test_check_derivatives_reports_small_errors_and_catches_a_wrong_hessp():
    f, x, rng = make(CASES[1])
    errors = check_derivatives(f, x, rng)
    assert max(errors.values()) < 1e-6

    class Broken(BiasedMF):
        def hessp(self, x, v):
            return self.gnvp(x, v)  # drops the residual terms: wrong
    g = Broken(tiny_ratings(), rank=3, reg=0.3, reg_bias=0.0, weighting="count")
    assert check_derivatives(g, x, np.random.default_rng(1))["hessp_rel_error"] > 1e-3


def test_predict_cold_users_and_items_fall_back_to_known_parts():
    r = tiny_ratings()
    train = r.subset(r.users != 0)  # user 0 has no training rating
    f = BiasedMF(train, rank=2)
    x = np.random.default_rng(0).normal(size=f.n_params)
    P, Q, b, c = f.unpack(x)
    item = int(train.items[0])
    got = f.predict(x, np.array([0, 1]), np.array([item, item]))
    assert got[0] == pytest.approx(f.mu + c[item])  # cold user: mean + item bias only
    assert got[1] == pytest.approx(f.mu + b[1] + c[item] + P[1] @ Q[item])


def test_init_is_seeded_and_zero_for_cold_entities():
    r = tiny_ratings()
    f = BiasedMF(r.subset(r.users != 0), rank=2)
    a, b = f.init(np.random.default_rng(5)), f.init(np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    P, Q, bu, ci = f.unpack(a)
    assert np.all(P[0] == 0) and np.all(bu == 0) and np.all(ci == 0) and np.abs(P[1:]).max() > 0


@pytest.mark.parametrize("bad", [dict(rank=0), dict(reg=-1.0), dict(reg_bias=-0.1), dict(weighting="squared")])
def test_bad_hyperparameters_are_rejected(bad):
    with pytest.raises(ValueError):
        BiasedMF(tiny_ratings(), **bad)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 4), reg=st.floats(0, 1), weighting=st.sampled_from(["none", "count"]))
def test_hessp_symmetry_and_fd_on_random_tiny_problems(seed, rank, reg, weighting):
    f = BiasedMF(tiny_ratings(n_users=4, n_items=3, seed=seed), rank=rank, reg=reg, reg_bias=reg / 2, weighting=weighting)
    rng = np.random.default_rng(seed)
    x, u, v = rng.normal(0, 0.7, size=(3, f.n_params))
    assert u @ f.hessp(x, v) == pytest.approx(v @ f.hessp(x, u), rel=1e-10, abs=1e-12)
    h = 1e-6
    fd = (f.loss_grad(x + h * v)[1] - f.loss_grad(x - h * v)[1]) / (2 * h)
    np.testing.assert_allclose(f.hessp(x, v), fd, rtol=1e-5, atol=1e-8)


def test_check_derivatives_catches_a_wrong_gradient():
    class OffByOnePercent(BiasedMF):
        def loss_grad(self, x):
            f, g = super().loss_grad(x)
            return f, 1.01 * g
    f = OffByOnePercent(tiny_ratings(), rank=2)
    x = f.init(np.random.default_rng(0)) + 0.3
    assert check_derivatives(f, x, np.random.default_rng(1))["grad_rel_error"] > 5e-3
