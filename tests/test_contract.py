"""The objective contract (pipeline.testing) on every model we ship, and on a toy model that
exists only here: a new model gets the whole suite by subclassing one class."""

from __future__ import annotations

import numpy as np

from pipeline.objectives import BiasedMF, LogisticRatings
from pipeline.testing import ObjectiveContract
from tests.conftest import tiny_ratings


class ItemMeans:
    """A toy model in one screen: one number per item, ridge-shrunk towards zero.

    ``L(t) = (1/N) [ 1/2 sum_(u,i) (t_i - r_ui)^2 + lam/2 |t|^2 ]``;
    ``dL/dt_i = (1/N)[ sum_u (t_i - r_ui) + lam t_i ]``; ``H = (1/N) diag(n_i + lam)``.
    """

    def __init__(self, train, lam=0.5):
        self.items, self.r, self.lam = train.items.astype(np.int64), train.ratings, lam
        self.n_params, self.N = train.n_items, len(train)
        self.counts = np.bincount(self.items, minlength=self.n_params).astype(float)

    def init(self, rng):
        return rng.normal(0.0, 0.1, self.n_params)

    def loss_grad(self, x):
        e = x[self.items] - self.r
        return (0.5 * e @ e + 0.5 * self.lam * x @ x) / self.N, (np.bincount(self.items, e, self.n_params) + self.lam * x) / self.N

    def hessp(self, x, v):
        return (self.counts + self.lam) * v / self.N

    def predict(self, x, users, items):
        return x[items]


class TestToyModelContract(ObjectiveContract):
    def make_objective(self):
        return ItemMeans(tiny_ratings())


class TestBiasedMFContract(ObjectiveContract):
    optimizers = ("newton-cg", "lbfgs", "trust-ncg", "als")
    agree_atol = 1e-9

    def make_objective(self):
        return BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.3, reg_bias=0.1)


class TestLogisticRatingsContract(ObjectiveContract):
    def make_objective(self):
        return LogisticRatings(tiny_ratings(n_users=6, n_items=5), reg=0.5, threshold=4.0)


def test_a_broken_model_fails_the_contract():
    """The suite can fail: a model with a wrong Hessian does not pass it."""
    class Wrong(ItemMeans):
        def hessp(self, x, v):
            return self.counts * v / self.N  # forgot the penalty

    class TestWrong(ObjectiveContract):
        def make_objective(self):
            return Wrong(tiny_ratings())

    import pytest
    with pytest.raises(AssertionError):
        TestWrong().test_hessp_matches_differences_of_the_gradient()


class TestLogisticWithSideFeaturesContract(ObjectiveContract):
    def make_objective(self):
        import pandas as pd
        r = tiny_ratings(n_users=6, n_items=5)
        rng = np.random.default_rng(0)
        users = pd.DataFrame(rng.normal(size=(6, 3)), index=[str(u) for u in r.user_ids], columns=["age", "g", "o"])
        items = pd.DataFrame((rng.random((5, 4)) < 0.5).astype(float), index=[str(i) for i in r.item_ids],
                             columns=["g1", "g2", "g3", "g4"])
        r = r.__class__(**{**r.__dict__, "extra": {"user_features": users, "item_features": items}})
        f = LogisticRatings(r, reg=0.5, threshold=4.0)
        assert f.U.shape == (6, 3) and f.G.shape == (5, 4) and f.n_params == 1 + 6 + 5 + 3 + 4
        return f
