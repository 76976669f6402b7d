"""The contract every objective must keep, as a test class a new model inherits.

Usage, in the new model's own test file::

    from pipeline.testing import ObjectiveContract

    class TestMyModel(ObjectiveContract):
        def make_objective(self, train):
            return MyModel(train, ...)

        def loop_prediction(self, objective, x, u, i):
            return ...  # the model's prediction for one pair, written as plainly as the math

pytest then runs every ``test_*`` method below on it: gradient and Hessian-vector product
against central finite differences, symmetry and linearity of ``hessp``; where offered, the
Gauss-Newton product against ``J^T J`` (and positive semi-definite) and any preconditioner; the
``init`` contract; ``predict`` against the loop reference; the serving round trip (save, load,
predict and rank in raw ids); several optimizers agreeing on the minimum. A failure names the
parameter block (``BLOCKS``, in ``unpack`` order) and shows the numbers. Only numpy is used here,
so the package does not need pytest at run time. Override ``make_train`` (the tiny training
set), ``point``, ``optimizers`` (non-convex models may need fewer), or the tolerances and
finite-difference steps (class attributes: ``grad_rtol``, ``hessp_rtol``, ``grad_step``,
``jacobian_step``, ``gn_rtol``, ``agree_atol``, ``gtol``) when a model needs it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pipeline.data.ratings import Ratings
from pipeline.objectives.base import offers
from pipeline.optim import StoppingRule, minimize


def tiny_training_set(n_users: int = 5, n_items: int = 4, density: float = 0.7, seed: int = 0,
                      rank: int = 2) -> Ratings:
    """A few users and items, every user and item rated at least once, ratings on 1..5."""
    from pipeline.data import from_raw
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), np.arange(n_users) % n_items] = True
    mask[np.arange(n_items) % n_users, np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    P, Q = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    r = np.clip(np.rint(3 + np.einsum("nk,nk->n", P[u], Q[i]) + rng.normal(0, 0.3, len(u))), 1, 5)
    return from_raw(u + 1, i + 1, r, rating_scale=(1.0, 5.0), name="tiny")


def where(objective, j: int) -> str:
    """``"Q[2, 1]"``: the parameter block and entry of flat index ``j`` (names from the model's
    ``BLOCKS`` in ``unpack`` order; ``x[j]`` for a model without them)."""
    names = getattr(objective, "BLOCKS", None)
    if names is None or not hasattr(objective, "unpack"):
        return f"x[{j}]"
    probe = np.zeros(objective.n_params)
    offset = 0
    for name, view in zip(names, objective.unpack(probe)):
        view = np.asarray(view)
        if j < offset + view.size:
            index = np.unravel_index(j - offset, view.shape)
            return f"{name}[{', '.join(map(str, index))}]" if index else name
        offset += view.size
    return f"x[{j}]"


def assert_close(objective, got: np.ndarray, want: np.ndarray, rtol: float, atol: float, what: str) -> None:
    """``got`` equal to ``want`` within the tolerances, else an error naming the worst entry's block."""
    got, want = np.asarray(got, float), np.asarray(want, float)
    bad = np.abs(got - want) > atol + rtol * np.abs(want)
    if bad.any():
        err = np.where(bad, np.abs(got - want), 0.0)
        j = int(np.argmax(err))
        raise AssertionError(f"{what}: {int(bad.sum())} of {len(got)} entries off; worst at {where(objective, j)}: "
                             f"got {got[j]:.10g}, expected {want[j]:.10g} (rtol {rtol:g}, atol {atol:g})")


class ObjectiveContract:
    """Mix-in of contract tests; subclasses define :meth:`make_objective` and :meth:`loop_prediction`."""

    # Tolerances and finite-difference steps, class attributes a model's test may set. A step is
    # relative: the step taken is ``step * max(1, |x|_inf)``, scaled to the point checked.
    grad_rtol = 1e-6
    hessp_rtol = 1e-5
    grad_step = 1e-6       # central differences of the loss (gradient) and of the gradient (hessp)
    # The Gauss-Newton check differentiates the residuals twice: steps of 1e-2 are exact up to
    # rounding for residuals of low polynomial degree (bilinear for MF); a model whose residuals
    # are not polynomials (a link function) sets a smaller step and a looser tolerance.
    jacobian_step = 1e-2
    gn_rtol = 1e-6
    optimizers = ("newton-cg", "lbfgs", "trust-ncg")
    agree_atol = 1e-8
    gtol = 1e-7  # near 1e-8 the loss stops changing in float64 and line searches give up

    def make_train(self) -> Ratings:
        return tiny_training_set()

    def make_objective(self, train: Ratings):  # pragma: no cover - supplied by the subclass
        raise NotImplementedError

    def loop_prediction(self, objective, x: np.ndarray, u: int, i: int) -> float:
        """The model's prediction for one (user, item) index pair, written plainly from its math."""
        raise NotImplementedError(f"{type(self).__name__} must define loop_prediction (the predict reference)")

    def point(self, objective, rng: np.random.Generator) -> np.ndarray:
        """A generic point (not a stationary one) for the derivative checks."""
        return objective.init(rng) + rng.normal(0.0, 0.3, objective.n_params)

    def _objective(self):
        train = self.make_train()
        return self.make_objective(train), train

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def scaled(step: float, x: np.ndarray) -> float:
        """``step`` scaled to the point: ``step * max(1, |x|_inf)``."""
        return float(step * max(1.0, float(np.abs(x).max())))

    @staticmethod
    def _fd_grad(objective, x, h=1e-6):
        g = np.zeros_like(x)
        for j in range(len(x)):
            e = np.zeros_like(x)
            e[j] = h
            g[j] = (objective.loss_grad(x + e)[0] - objective.loss_grad(x - e)[0]) / (2 * h)
        return g

    @staticmethod
    def _fd_jacobian(objective, x, h=1e-3):
        cols = []
        for j in range(len(x)):
            e = np.zeros_like(x)
            e[j] = h
            cols.append((objective.residuals(x + e) - objective.residuals(x - e)) / (2 * h))
        return np.stack(cols, axis=1)

    # -- the contract -----------------------------------------------------------------------------
    def test_init_is_seeded_and_has_the_right_shape(self):
        f, _ = self._objective()
        a, b = f.init(np.random.default_rng(3)), f.init(np.random.default_rng(3))
        assert a.shape == (f.n_params,) and a.dtype == np.float64
        np.testing.assert_array_equal(a, b)

    def test_gradient_matches_central_differences(self):
        f, _ = self._objective()
        x = self.point(f, np.random.default_rng(0))
        fd = self._fd_grad(f, x, self.scaled(self.grad_step, x))
        assert_close(f, f.loss_grad(x)[1], fd, self.grad_rtol, 1e-9, "gradient vs central differences")

    def test_hessp_matches_differences_of_the_gradient(self):
        f, _ = self._objective()
        rng = np.random.default_rng(1)
        x = self.point(f, rng)
        for _ in range(3):
            v = rng.normal(size=f.n_params)
            h = self.scaled(self.grad_step, x)
            fd = (f.loss_grad(x + h * v)[1] - f.loss_grad(x - h * v)[1]) / (2 * h)
            assert_close(f, f.hessp(x, v), fd, self.hessp_rtol, 1e-8, "hessp vs differences of the gradient")

    def test_hessp_is_symmetric_and_linear(self):
        self._symmetric_and_linear("hessp")

    def _symmetric_and_linear(self, method: str):
        f, _ = self._objective()
        rng = np.random.default_rng(2)
        x = self.point(f, rng)
        prod = getattr(f, method)
        u, v = rng.normal(size=(2, f.n_params))
        uHv, vHu = u @ prod(x, v), v @ prod(x, u)
        assert abs(uHv - vHu) <= 1e-10 * max(1.0, abs(uHv)), f"{method} not symmetric: u.Hv = {uHv!r}, v.Hu = {vHu!r}"
        assert_close(f, prod(x, 2 * u - v), 2 * prod(x, u) - prod(x, v), 1e-10, 1e-13, f"{method} not linear")

    def test_gauss_newton_product_is_jtj_and_psd(self):
        """Where offered: ``gnvp`` symmetric, linear and positive semi-definite; and, for a model
        that offers ``residuals(x)`` (loss = 1/2 |residuals|^2 + penalty), equal to the Hessian
        without the residual curvature, ``H v - sum_k r_k (d^2 r_k) v``, where
        ``sum_k r_k (d^2 r_k) v = d/dt J(x + t v)^T r(x)``, by central differences of the
        Jacobian (itself by central differences of the residuals). A model without residuals
        must say its Gauss-Newton product is its Hessian (as logistic regression's is)."""
        f, _ = self._objective()
        if not offers(f, "gnvp"):
            return  # nothing offered, nothing to check
        self._symmetric_and_linear("gnvp")
        rng = np.random.default_rng(4)
        x = self.point(f, rng)
        for _ in range(5):
            v = rng.normal(size=f.n_params)
            vGv = v @ f.gnvp(x, v)
            assert vGv >= -1e-12 * (v @ v), f"gnvp not positive semi-definite: v.Gv = {vGv!r}"
        v = rng.normal(size=f.n_params)
        if hasattr(f, "residuals"):
            h = self.scaled(self.jacobian_step, x)  # see jacobian_step
            r = f.residuals(x)
            curvature = (self._fd_jacobian(f, x + h * v, h / 10) - self._fd_jacobian(f, x - h * v, h / 10)).T @ r / (2 * h)
            assert_close(f, f.gnvp(x, v), f.hessp(x, v) - curvature, self.gn_rtol, 1e-10,
                         "gnvp vs J^T J v + penalty (the Hessian without residual curvature)")
        else:
            assert_close(f, f.gnvp(x, v), f.hessp(x, v), 1e-12, 1e-15,
                         "gnvp of a model without residuals must be its Hessian")

    def test_preconditioner_is_symmetric_positive_definite(self):
        """Where offered: ``precondition(x)`` returns ``M^-1`` as a function, symmetric and
        positive definite."""
        f, _ = self._objective()
        if not offers(f, "precondition"):
            return
        rng = np.random.default_rng(5)
        x = self.point(f, rng)
        apply = f.precondition(x)
        u, v = rng.normal(size=(2, f.n_params))
        assert abs(u @ apply(v) - v @ apply(u)) <= 1e-10 * max(1.0, abs(u @ apply(v))), "preconditioner not symmetric"
        assert v @ apply(v) > 0, "preconditioner not positive definite"

    def test_predict_matches_the_loop_reference(self):
        f, train = self._objective()
        x = self.point(f, np.random.default_rng(6))
        users, items = np.asarray(train.users, np.int64), np.asarray(train.items, np.int64)
        want = np.array([self.loop_prediction(f, x, int(u), int(i)) for u, i in zip(users, items)])
        got = f.predict(x, users, items)
        bad = ~np.isclose(got, want, rtol=1e-10, atol=1e-12)
        assert not bad.any(), (f"predict vs the loop reference at {int(bad.sum())} of {len(want)} training pairs; "
                               f"first (user {users[bad][0]}, item {items[bad][0]}): got {got[bad][0]!r}, "
                               f"expected {want[bad][0]!r}")

    def test_serving_round_trip(self):
        """A fit saved and loaded serves what ``predict`` says, in raw ids, clipped to the model's
        range; its ranking agrees with its predictions; an unknown id gets a finite fallback."""
        from pipeline.recommender import Recommender
        f, train = self._objective()
        x = self.point(f, np.random.default_rng(7))
        rec = Recommender.from_fit(f, x, train, train)
        with tempfile.TemporaryDirectory() as tmp:
            back = Recommender.load(rec.save(Path(tmp) / "fit.npz"))
        raw_u, raw_i = train.user_ids[train.users], train.item_ids[train.items]
        want = np.clip(f.predict(x, train.users, train.items), *f.output_range(train.rating_scale))
        np.testing.assert_allclose(back.predict(raw_u, raw_i), want, rtol=1e-12, atol=1e-14)
        scores = back.scores(np.asarray(train.users[:1]))
        np.testing.assert_allclose(np.clip(scores[0, train.items[train.users == train.users[0]]],
                                           *f.output_range(train.rating_scale)),
                                   want[train.users == train.users[0]], rtol=1e-12, atol=1e-14)
        fallback = back.predict(np.array(["no such user"], dtype=object), raw_i[:1])
        assert np.isfinite(fallback).all()
        top = back.recommend([raw_u[0], "no such user"], n=2)
        assert set(top["user"]) <= {raw_u[0], "no such user"} and top["score"].notna().all()

    def test_optimizers_agree_on_the_minimum(self):
        f, _ = self._objective()
        x0 = f.init(np.random.default_rng(0))
        rule = StoppingRule(gtol=self.gtol, max_iter=5000, max_seconds=60)
        results = {name: minimize(name, f, x0, rule) for name in self.optimizers}
        for name, res in results.items():
            assert res.reason == "converged", (name, res.reason, res.message)
        losses = [r.final.loss for r in results.values()]
        assert max(losses) - min(losses) <= self.agree_atol, dict(zip(results, losses))
