"""Optimizers: agreement on a tiny problem, the shared stopping rule, cost accounting."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import SyntheticSpec, generate
from pipeline.objectives import BiasedMF
from pipeline.optim import REGISTRY, StoppingRule, minimize
from pipeline.optim.base import CountedObjective
from pipeline.optim.scipy_methods import curvature_scale
from tests.conftest import tiny_ratings


def tiny_objective(seed=0):
    return BiasedMF(tiny_ratings(n_users=6, n_items=5, seed=seed), rank=2, reg=0.3, reg_bias=0.1, weighting="count")


# SGD's steps decay as 1/t: it approaches the minimizer but cannot reach 1e-7 in a test's time.
EXACT = [n for n in REGISTRY if n != "sgd"]
GRADIENT_AT_ITERATES = ["gd", "gd-bb", "gd-momentum", "newton-cg", "newton-cg-gn", "trust-ncg", "trust-krylov", "lbfgs", "cg"]


@pytest.fixture(scope="module")
def solved():
    """Every optimizer on one tiny strongly-regularized problem, from one starting point."""
    f = tiny_objective()
    x0 = f.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=1e-7, max_iter=20_000, max_seconds=60)
    results = {name: minimize(name, f, x0, rule) for name in EXACT}
    results["sgd"] = minimize("sgd", f, x0, StoppingRule(gtol=1e-7, max_iter=400), lr=0.05)
    return f, results


@pytest.mark.parametrize("name", EXACT)
def test_each_optimizer_converges_on_the_tiny_problem(solved, name):
    _, results = solved
    assert results[name].reason == "converged", results[name].message
    assert results[name].final.rel_grad_norm <= 1e-7


def test_sgd_approaches_the_same_minimum(solved):
    _, results = solved
    best = min(r.final.loss for n, r in results.items() if n != "sgd")
    sgd = results["sgd"]
    assert sgd.reason == "max_iter"
    assert sgd.final.loss - best < 1e-3 * best
    assert sgd.final.loss < sgd.history[0].loss


def test_sgd_refuses_the_plain_l2_objective():
    f = BiasedMF(tiny_ratings(), rank=2, weighting="none")
    with pytest.raises(ValueError, match="count-weighted objective only"):  # the method fails alone, saying why
        minimize("sgd", f, f.init(np.random.default_rng(0)), StoppingRule(max_iter=5))


def test_sgd_epoch_is_an_unbiased_step_on_the_count_weighted_objective():
    """Summed over one epoch at a tiny step, the SGD updates equal -lr * N * gradient to first order."""
    f = tiny_objective()
    x = f.init(np.random.default_rng(3)) + 0.1
    lr = 1e-7
    moved = f.sgd_epoch(x, lr, np.random.default_rng(0)) - x
    g = f.loss_grad(x)[1]
    np.testing.assert_allclose(moved, -lr * f.n_ratings * g, rtol=1e-4, atol=1e-12)


def test_als_sweep_never_increases_the_objective_and_is_exact_per_block():
    f = tiny_objective()
    x = f.init(np.random.default_rng(4))
    losses = [f.loss(x)]
    for _ in range(10):
        x = f.als_sweep(x)
        losses.append(f.loss(x))
    assert all(b <= a + 1e-15 for a, b in zip(losses, losses[1:]))
    _, gQ, _, gc = f.unpack(f.loss_grad(x)[1])
    assert np.abs(gQ).max() < 1e-12 and np.abs(gc).max() < 1e-12  # the item half-sweep is exact


def test_optimizers_reach_the_same_loss_and_predictions(solved):
    f, results = solved
    results = {n: r for n, r in results.items() if n != "sgd"}
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
        assert res.final.data_passes >= res.final.n_fun + res.final.n_hessp
        assert f.loss(res.x) == pytest.approx(res.final.loss, rel=1e-12)


def test_monitor_reuses_evaluated_points(solved):
    _, results = solved
    for name in GRADIENT_AT_ITERATES:
        res = results[name]
        assert res.n_monitor_evals <= 1, (name, res.n_monitor_evals)


def test_gauss_newton_meets_no_negative_curvature_and_exact_newton_does_near_the_saddle():
    f = BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.01, reg_bias=0.01, weighting="none", init_scale=1e-3)
    x0 = f.init(np.random.default_rng(0))
    gn = minimize("newton-cg-gn", f, x0, StoppingRule(gtol=1e-6, max_iter=300))
    exact = minimize("trust-ncg", f, x0, StoppingRule(gtol=1e-6, max_iter=300))
    assert gn.n_negative_curvature == 0
    assert exact.n_negative_curvature > 0


@pytest.mark.parametrize("name", list(REGISTRY))
def test_max_iter_is_reported(name):
    f = tiny_objective()
    res = minimize(name, f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0.0, max_iter=3))
    assert res.reason == "max_iter" and res.final.iteration == 3


def test_max_seconds_is_reported():
    f = tiny_objective()
    res = minimize("gd", f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0.0, max_iter=10**9, max_seconds=0.2, max_passes=None))
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


@pytest.mark.parametrize("name", ["newton-cg", "trust-ncg", "trust-krylov"])
def test_second_order_methods_pass_the_saddle_near_zero_factors(name):
    f = BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.05, reg_bias=0.05, weighting="none", init_scale=1e-4)
    x0 = f.init(np.random.default_rng(0))
    res = minimize(name, f, x0, StoppingRule(gtol=1e-7, max_iter=500))
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


def test_early_stopping_restores_the_best_validation_iterate():
    f = tiny_objective()
    x0 = f.init(np.random.default_rng(1))
    scores = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 3.9] + [4.0] * 100)
    res = minimize("gd", f, x0, StoppingRule(gtol=0, max_iter=100, patience=3), validate=lambda x: next(scores))
    assert res.reason == "early_stopped"
    assert res.final.iteration == 2 and res.final.val_rmse == 3.0
    assert f.loss(res.x) == pytest.approx(res.final.loss, rel=1e-12)


@pytest.mark.parametrize("name", ["gd", "newton-cg", "als"])
def test_data_pass_budget_is_shared(name):
    f = tiny_objective()
    res = minimize(name, f, f.init(np.random.default_rng(1)), StoppingRule(gtol=0, max_iter=10**6, max_passes=40))
    assert res.reason == "max_passes"
    assert 40 <= res.final.data_passes
    assert res.history[-2].data_passes < 40  # it stopped at the first iterate past the budget


# -- no wasted passes ---------------------------------------------------------------------------------
def _armijo_gd_evaluating_twice(f, x0, iterations):
    """The old gradient descent: value-only trials, then loss_grad again at the accepted point."""
    x, (fx, g), t, passes = x0, f.loss_grad(x0), 1.0, 1
    for _ in range(iterations):
        gg, t = float(g @ g), 2.0 * t
        while True:
            trial, passes = x - t * g, passes + 1
            if f.loss(trial) <= fx - 1e-4 * t * gg:
                break
            t *= 0.5
        x, passes = trial, passes + 1
        fx, g = f.loss_grad(x)
    return x, passes


def test_gd_keeps_the_accepted_trials_gradient():
    """Same iterates, bit for bit, as evaluating the accepted point again; one pass fewer per iteration."""
    f = tiny_objective()
    x0 = f.init(np.random.default_rng(0))
    res = minimize("gd", f, x0, StoppingRule(gtol=0.0, max_iter=40))
    x_old, passes_old = _armijo_gd_evaluating_twice(f, x0, 40)
    assert np.array_equal(res.x, x_old)
    assert res.final.data_passes == passes_old - 40
    assert res.n_monitor_evals == 1  # x0, by the shared rule before the method starts (not charged)


def test_barzilai_borwein_beats_armijo_gd_per_pass():
    """On an ill-conditioned problem (count weighting, spread-out counts) BB reaches a far smaller
    gradient than Armijo gradient descent in the same number of data passes."""
    f = BiasedMF(generate(SyntheticSpec(n_users=60, n_items=40, n_ratings=900, min_per_user=3, seed=4)),
                 rank=3, reg=0.05, reg_bias=0.05)
    x0 = f.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=0.0, max_iter=None, max_passes=300)
    gd, bb = (minimize(n, f, x0, rule) for n in ("gd", "gd-bb"))
    assert gd.reason == bb.reason == "max_passes"
    assert bb.final.rel_grad_norm < 0.1 * gd.final.rel_grad_norm
    assert bb.final.data_passes <= 300 + 60  # the budget, plus at most one iteration's trials


def test_barzilai_borwein_step_is_exact_on_a_quadratic():
    """On f = 1/2 a |x|^2 the BB step s.s/s.y is 1/a: the second step lands on the minimizer."""
    class Quadratic:
        n_params, a = 3, 4.0
        def loss_grad(self, x):
            return 0.5 * self.a * float(x @ x), self.a * x
        def init(self, rng):
            return np.ones(3)
    q = Quadratic()
    res = minimize("gd-bb", q, q.init(None), StoppingRule(gtol=1e-14, max_iter=5), step0=0.1)
    assert res.reason == "converged" and res.final.iteration == 2


def test_mf_preconditioner_inverts_the_hessian_block_diagonal_on_both_kernels():
    """MF's precondition(x) applies exactly the inverse of the Hessian's per-user and per-item
    (k+1)-square blocks (dense Hessian built column by column on a tiny problem)."""
    train = tiny_ratings(n_users=6, n_items=5)
    for kernel in ("numba", "numpy"):
        f = BiasedMF(train, rank=2, reg=0.3, reg_bias=0.1, kernel=kernel)
        x = f.init(np.random.default_rng(0)) + 0.3
        n, m, ni, k = f.n_params, f.n_users, f.n_items, 2
        H = np.column_stack([f.hessp(x, e) for e in np.eye(n)])
        apply = f.precondition(x)
        M_inv = np.column_stack([apply(e) for e in np.eye(n)])
        blocks = [list(range(u * k, (u + 1) * k)) + [(m + ni) * k + u] for u in range(m)]
        blocks += [list(range((m + i) * k, (m + i + 1) * k)) + [(m + ni) * k + m + i] for i in range(ni)]
        B = np.zeros_like(H)
        for idx in blocks:
            B[np.ix_(idx, idx)] = H[np.ix_(idx, idx)]
        np.testing.assert_allclose(M_inv @ B, np.eye(n), atol=1e-12)


def test_newton_pcg_needs_fewer_hessian_products_than_newton_cg():
    """The block-diagonal preconditioner removes the spread that rating counts put in the Hessian:
    to ||g||/||g0|| <= 1e-6 on 10,000 synthetic ratings, fewer data passes than newton-cg (the
    preconditioner's own two passes per iteration included). Passes are machine-independent."""
    from pipeline.data import SyntheticSpec, generate
    f = BiasedMF(generate(SyntheticSpec(n_users=300, n_items=200, n_ratings=10000, seed=3)), rank=5, reg=0.1,
                 reg_bias=0.1)
    x0 = f.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=1e-6, max_passes=20000)
    pcg, cg = minimize("newton-pcg", f, x0, rule), minimize("newton-cg", f, x0, rule)
    assert pcg.reason == cg.reason == "converged"
    assert pcg.final.data_passes < 0.5 * cg.final.data_passes, (pcg.final.data_passes, cg.final.data_passes)


def test_a_method_the_model_cannot_run_is_refused_before_anything_runs():
    from pipeline.objectives import LogisticRatings
    from pipeline.optim import NotApplicable, not_applicable
    f = LogisticRatings(tiny_ratings(), reg=0.5)
    for name, lacks in (("newton-pcg", "precondition"), ("als", "als_sweep"), ("sgd", "sgd_epoch")):
        assert not_applicable(name, f, "logreg") == f"not applicable: logreg has no {lacks}"
        with pytest.raises(NotApplicable, match=lacks):
            minimize(name, f, f.init(np.random.default_rng(0)), StoppingRule(max_iter=5))
    assert not_applicable("lbfgs", f) is None and not_applicable("newton-cg", f) is None
    mf = BiasedMF(tiny_ratings(), rank=2)
    assert all(not_applicable(n, mf) is None for n in REGISTRY)


# -- budgets hold ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("budget", [7, 23, 61])
def test_no_method_spends_more_than_its_budget(name, budget):
    """An operation that would go past max_passes is refused before it runs, inside an inner CG or
    a line search too (scipy's Newton-CG used to finish its inner CG first: 4,038 of 4,000)."""
    model = BiasedMF(tiny_ratings(12, 9, 0.6, seed=4), rank=3, reg=0.1, reg_bias=0.1, weighting="count")
    x0 = model.init(np.random.default_rng(1))
    res = minimize(name, model, x0, StoppingRule(gtol=1e-14, max_passes=budget))
    assert res.reason in ("max_passes", "method", "converged"), res.message
    assert res.final.data_passes <= budget
    assert all(r.data_passes <= budget for r in res.history)
    assert [r.data_passes for r in res.history] == sorted(r.data_passes for r in res.history)
    if res.reason == "max_passes":  # the last accepted iterate: its loss is the last recorded one
        f, _ = model.loss_grad(res.x)
        assert f == res.final.loss


def test_a_budget_cut_inside_newton_cg_keeps_the_last_iterate_and_counts_the_work():
    model = BiasedMF(tiny_ratings(12, 9, 0.6, seed=4), rank=3, reg=0.1, reg_bias=0.1, weighting="count")
    x0 = model.init(np.random.default_rng(1))
    long = minimize("newton-cg", model, x0, StoppingRule(gtol=1e-14, max_passes=400))
    # a budget that ends between two of the long run's iterates
    mid = next(r.data_passes for r in long.history if r.data_passes > 30) - 1
    cut = minimize("newton-cg", model, x0, StoppingRule(gtol=1e-14, max_passes=mid))
    assert cut.reason == "max_passes"
    assert cut.final.data_passes == mid  # the refused operation is the one that would pass it
    accepted = [r for r in long.history if r.data_passes <= mid]
    assert cut.final.loss == accepted[-1].loss and cut.final.iteration == accepted[-1].iteration
