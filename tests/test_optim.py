"""Optimizers: agreement on a tiny problem, the shared stopping rule, cost accounting."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.objectives import BiasedMF
from pipeline.optim import REGISTRY, StoppingRule, minimize
from pipeline.optim.base import CountedObjective
from pipeline.optim.scipy_methods import curvature_scale
from tests.conftest import tiny_ratings


def tiny_objective(seed=0):
    return BiasedMF(tiny_ratings(n_users=6, n_items=5, seed=seed), rank=2, reg=0.3, reg_bias=0.1, weighting="count")


@pytest.fixture(scope="module")
def solved():
    """Every optimizer on one tiny strongly-regularized problem, from one starting point."""
    f = tiny_objective()
    x0 = f.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=1e-7, max_iter=20_000, max_seconds=60)
    return f, {name: minimize(name, f, x0, rule) for name in REGISTRY}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_optimizer_converges_on_the_tiny_problem(solved, name):
    _, results = solved
    assert results[name].reason == "converged", results[name].message
    assert results[name].final.rel_grad_norm <= 1e-7


def test_optimizers_reach_the_same_loss_and_predictions(solved):
    f, results = solved
    losses = {n: r.final.loss for n, r in results.items()}
    best = min(losses.values())
    # |f - f*| <= ||g||^2 / (2 mu) near a minimum: at ||g|| ~ 1e-7 * ||g0|| the losses agree to ~1e-12
    assert max(losses.values()) - best < 1e-10, losses
    users, items = np.meshgrid(np.arange(f.n_users), np.arange(f.n_items), indexing="ij")
    preds = {n: f.predict(r.x, users.ravel(), items.ravel()) for n, r in results.items()}
    ref = preds["newton-cg"]
    for n, p in preds.items():
        np.testing.assert_allclose(p, ref, atol=1e-5, err_msg=n)  # compare predictions, never factors


def test_history_is_cumulative_and_starts_at_x0(solved):
    f, results = solved
    for name, res in results.items():
        h = res.history
        assert h[0].iteration == 0 and h[0].rel_grad_norm == pytest.approx(1.0)
        for a, b in zip(h, h[1:]):
            assert b.iteration == a.iteration + 1
            assert b.n_fun >= a.n_fun and b.n_grad >= a.n_grad and b.n_hessp >= a.n_hessp
            assert b.seconds >= a.seconds
        assert (res.final.n_hessp > 0) == REGISTRY[name].uses_hessp
        assert f.loss(res.x) == pytest.approx(res.final.loss, rel=1e-12)


def test_monitor_reuses_evaluated_points(solved):
    _, results = solved
    for name, res in results.items():
        assert res.n_monitor_evals <= 1, (name, res.n_monitor_evals)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_max_iter_is_reported(name):
    f = tiny_objective()
    res = minimize(name, f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0.0, max_iter=3))
    assert res.reason == "max_iter" and res.final.iteration == 3


def test_max_seconds_is_reported():
    f = tiny_objective()
    res = minimize("gd", f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0.0, max_iter=10**9, max_seconds=0.2))
    assert res.reason == "max_seconds" and 0.2 <= res.final.seconds < 5


def test_converged_beats_max_iter_when_both_hold():
    f = tiny_objective()
    res = minimize("newton-cg", f, f.init(np.random.default_rng(1)), StoppingRule(gtol=1e-3, max_iter=10**6))
    assert res.reason == "converged" and res.final.rel_grad_norm <= 1e-3


def test_zero_budget_stops_at_the_start():
    f = tiny_objective()
    x0 = f.init(np.random.default_rng(1))
    res = minimize("lbfgs", f, x0, StoppingRule(max_iter=0))
    assert res.reason == "max_iter" and len(res.history) == 1
    np.testing.assert_array_equal(res.x, x0)


def test_fixed_step_too_large_diverges_with_a_reason():
    f = tiny_objective()
    res = minimize("gd", f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0, max_iter=500), step=1e4)
    assert res.reason == "diverged"


def test_fixed_small_step_decreases_the_loss():
    f = tiny_objective()
    res = minimize("gd", f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0, max_iter=50), step=0.5)
    losses = [r.loss for r in res.history]
    assert losses[-1] < losses[0] and res.reason == "max_iter"


def test_counts_match_the_objective_calls():
    f = tiny_objective()
    calls = {"lg": 0, "hp": 0}

    class Spy(BiasedMF):
        def loss_grad(self, x):
            calls["lg"] += 1
            return super().loss_grad(x)

        def hessp(self, x, v):
            calls["hp"] += 1
            return super().hessp(x, v)

    spy = Spy(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.3, reg_bias=0.1, weighting="count")
    res = minimize("newton-cg", spy, spy.init(np.random.default_rng(0)), StoppingRule(gtol=1e-6, max_iter=100))
    assert res.final.n_grad + res.n_monitor_evals == calls["lg"]
    assert res.final.n_hessp == calls["hp"]


def test_curvature_scale_makes_unit_curvature_along_the_gradient():
    f = tiny_objective()
    x0 = f.init(np.random.default_rng(0))
    counted = CountedObjective(f)
    s = curvature_scale(counted, x0)
    g = f.loss_grad(x0)[1]
    assert s * (g @ f.hessp(x0, g)) / (g @ g) == pytest.approx(1.0)
    assert counted.n_hessp == 1


def test_newton_cg_passes_the_saddle_near_zero_factors():
    f = BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.05, reg_bias=0.05, weighting="none", init_scale=1e-4)
    x0 = f.init(np.random.default_rng(0))
    res = minimize("newton-cg", f, x0, StoppingRule(gtol=1e-7, max_iter=500))
    P, Q, _, _ = f.unpack(res.x)
    assert res.reason == "converged"
    assert np.abs(P).max() > 1e-2 and np.abs(Q).max() > 1e-2  # it left the saddle, not converged onto it


def test_unknown_optimizer_is_a_key_error():
    f = tiny_objective()
    with pytest.raises(KeyError, match="unknown optimizer"):
        minimize("adam", f, f.init(np.random.default_rng(0)))


@pytest.mark.parametrize("bad", [dict(gtol=-1), dict(max_iter=-1), dict(max_seconds=0)])
def test_bad_rules_are_rejected(bad):
    with pytest.raises(ValueError):
        StoppingRule(**bad)
