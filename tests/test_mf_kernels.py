"""The compiled fast path equals the numpy reference (to 1e-10 relative) on every entry point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.data import SyntheticSpec, generate
from pipeline.objectives import BiasedMF
from tests.conftest import tiny_ratings


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticSpec(n_users=120, n_items=90, n_ratings=3000, min_per_user=5, seed=11))


@pytest.mark.parametrize("rank, weighting, reg, reg_bias", [(1, "count", 0.1, 0.1), (7, "none", 0.3, 0.0),
                                                           (16, "count", 0.0, 0.05)])
def test_fast_path_equals_reference(data, rank, weighting, reg, reg_bias):
    fast = BiasedMF(data, rank=rank, reg=reg, reg_bias=reg_bias, weighting=weighting, kernel="numba")
    ref = BiasedMF(data, rank=rank, reg=reg, reg_bias=reg_bias, weighting=weighting, kernel="numpy")
    rng = np.random.default_rng(rank)
    for _ in range(3):
        x = rng.normal(0, 0.3, fast.n_params)
        v = rng.normal(size=fast.n_params)
        (ff, gf), (fr, gr) = fast.loss_grad(x), ref.loss_grad(x)
        assert abs(ff - fr) <= 1e-10 * abs(fr)
        assert rel(gf, gr) <= 1e-10
        assert fast.loss(x) == pytest.approx(fr, rel=1e-10)
        assert rel(fast.hessp(x, v), ref.hessp(x, v)) <= 1e-10
        assert rel(fast.gnvp(x, v), ref.gnvp(x, v)) <= 1e-10


def test_fast_hessp_recomputes_residuals_at_a_new_point(data):
    fast = BiasedMF(data, rank=4, kernel="numba")
    ref = BiasedMF(data, rank=4, kernel="numpy")
    rng = np.random.default_rng(0)
    x, y, v = rng.normal(0, 0.3, (3, fast.n_params))
    fast.loss_grad(x)
    assert rel(fast.hessp(y, v), ref.hessp(y, v)) <= 1e-10  # hessp at y without a loss_grad at y first
    y[0] += 1.0  # the caller mutates its array: the cached copy must not be fooled
    assert rel(fast.hessp(y, v), ref.hessp(y, v)) <= 1e-10


def test_default_kernel_is_the_compiled_one(tiny):
    assert BiasedMF(tiny, rank=2).kernel == "numba"
    with pytest.raises(ValueError, match="kernel"):
        BiasedMF(tiny, rank=2, kernel="cuda")


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 5))
def test_fast_path_on_random_tiny_problems(seed, rank):
    r = tiny_ratings(n_users=7, n_items=6, seed=seed)
    fast = BiasedMF(r, rank=rank, kernel="numba")
    ref = BiasedMF(r, rank=rank, kernel="numpy")
    rng = np.random.default_rng(seed)
    x, v = rng.normal(0, 0.5, (2, fast.n_params))
    assert rel(fast.loss_grad(x)[1], ref.loss_grad(x)[1]) <= 1e-10
    assert rel(fast.hessp(x, v), ref.hessp(x, v)) <= 1e-10
