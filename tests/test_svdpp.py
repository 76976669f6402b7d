"""SVD++ (pipeline/objectives/svdpp.py): the contract suite, and what is particular to it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.objectives import BiasedMF
from pipeline.objectives.svdpp import SVDpp
from pipeline.testing import ObjectiveContract, tiny_training_set


def loop_prediction(f, x, u, i):
    """``mu + b_u + c_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)``, one pair at a time."""
    P, Q, Y, b, c = f.unpack(x)
    rated = f.data_term.items[f.data_term.users == u]
    z = P[u] + sum(Y[j] for j in rated) / np.sqrt(len(rated))
    return f.mu + b[u] + c[i] + sum(Q[i, t] * z[t] for t in range(f.rank))


class TestSVDppContract(ObjectiveContract):
    optimizers = ("newton-cg", "lbfgs", "trust-ncg")
    agree_atol = 1e-9
    kernel = "numba"

    def make_train(self):
        return tiny_training_set(n_users=6, n_items=5)

    def make_objective(self, train):
        return SVDpp(train, rank=2, reg=0.3, reg_bias=0.1, kernel=self.kernel)

    loop_prediction = staticmethod(loop_prediction)


class TestSVDppNumpyContract(TestSVDppContract):
    kernel = "numpy"


@pytest.mark.parametrize("weighting", ["count", "none"])
def test_with_no_implicit_factors_it_is_biased_mf(weighting):
    """Y = 0 gives MF's model, and the penalty on Y vanishes: the same loss and the same
    gradient in (P, Q, b, c) as BiasedMF."""
    train = tiny_training_set(n_users=7, n_items=6, seed=3)
    svd = SVDpp(train, rank=3, reg=0.2, reg_bias=0.05, weighting=weighting)
    mf = BiasedMF(train, rank=3, reg=0.2, reg_bias=0.05, weighting=weighting)
    x = svd.init(np.random.default_rng(0))
    P, Q, Y, b, c = svd.unpack(x)
    Y[:] = 0.0
    f, g = svd.loss_grad(x)
    f_mf, g_mf = mf.loss_grad(mf.pack(P, Q, b, c))
    gP, gQ, _, gb, gc = svd.unpack(g)
    assert f == pytest.approx(f_mf, rel=1e-13)
    np.testing.assert_allclose(np.concatenate([gP.ravel(), gQ.ravel(), gb, gc]), g_mf, rtol=1e-12, atol=1e-15)


def test_the_implicit_gradient_is_the_user_gradient_spread_over_rated_items():
    """dL/dy_j = (1/N)[sum_{u rated j} s_u G_u + lam w_j y_j], with G_u = N dL/dp_u - lam w_u p_u."""
    train = tiny_training_set(n_users=6, n_items=5, seed=1)
    f = SVDpp(train, rank=2, reg=0.3, reg_bias=0.1, weighting="none")
    x = f.init(np.random.default_rng(2)) + 0.2
    P, Q, Y, b, c = f.unpack(x)
    gP, _, gY, _, _ = f.unpack(f.loss_grad(x)[1])
    G = f.n_ratings * gP - f.reg * P
    want = np.zeros_like(Y)
    for u, j in zip(f.data_term.users, f.data_term.items):
        want[j] += f.s[u] * G[u]
    np.testing.assert_allclose(gY, (want + f.reg * Y) / f.n_ratings, rtol=1e-11, atol=1e-14)


def test_kernels_agree_with_the_numpy_reference():
    from pipeline.data import SyntheticSpec, generate
    train = generate(SyntheticSpec(n_users=60, n_items=40, n_ratings=900, seed=2))
    fast, ref = (SVDpp(train, rank=4, reg=0.1, reg_bias=0.1, kernel=k) for k in ("numba", "numpy"))
    rng = np.random.default_rng(0)
    x, v = fast.init(rng) + 0.1, rng.normal(size=fast.n_params)
    np.testing.assert_allclose(fast.loss_grad(x)[1], ref.loss_grad(x)[1], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(fast.hessp(x, v), ref.hessp(x, v), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(fast.gnvp(x, v), ref.gnvp(x, v), rtol=1e-10, atol=1e-15)


def test_cold_users_and_items_stay_at_zero_and_get_the_fallback():
    from pipeline.data import Ratings
    train = tiny_training_set(n_users=5, n_items=4)
    # a vocabulary with one more user and item than training saw
    wide = Ratings(users=train.users, items=train.items, ratings=train.ratings,
                   user_ids=np.append(train.user_ids, 99), item_ids=np.append(train.item_ids, 98),
                   rating_scale=train.rating_scale, name="wide")
    f = SVDpp(wide, rank=2)
    x = f.init(np.random.default_rng(0))
    g = f.loss_grad(x)[1]
    for block, grad in zip(f.unpack(x), f.unpack(g)):
        assert not np.any(block[-1]) and not np.any(grad[-1])  # the cold row: zero, and no gradient
    pred = f.predict(x, np.array([5, 0]), np.array([0, 4]))
    b, c = f.unpack(x)[3:]
    assert pred[0] == pytest.approx(f.mu + c[0]) and pred[1] == pytest.approx(f.mu + b[0])
