"""The contract every objective must keep, as a test class a new model inherits.

Usage, in the new model's own test file::

    from pipeline.testing import ObjectiveContract

    class TestMyModel(ObjectiveContract):
        def make_objective(self):
            return MyModel(tiny_training_ratings, ...)

pytest then runs every ``test_*`` method below on it: gradient and Hessian-vector product
against central finite differences, symmetry and linearity of ``hessp``, the ``init`` contract,
and several optimizers agreeing on the minimum. Only numpy is used here, so the package does not
need pytest at run time. Override ``point`` (where derivatives are checked), ``optimizers`` (which
must agree; non-convex models may need fewer) or the tolerances when a model needs it.
"""

from __future__ import annotations

import numpy as np

from pipeline.optim import StoppingRule, minimize


class ObjectiveContract:
    """Mix-in of contract tests; subclasses define :meth:`make_objective`."""

    grad_rtol = 1e-6
    hessp_rtol = 1e-5
    optimizers = ("newton-cg", "lbfgs", "trust-ncg")
    agree_atol = 1e-8
    gtol = 1e-7  # near 1e-8 the loss stops changing in float64 and line searches give up

    def make_objective(self):  # pragma: no cover - supplied by the subclass
        raise NotImplementedError

    def point(self, objective, rng: np.random.Generator) -> np.ndarray:
        """A generic point (not a stationary one) for the derivative checks."""
        return objective.init(rng) + rng.normal(0.0, 0.3, objective.n_params)

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _fd_grad(objective, x, h=1e-6):
        g = np.zeros_like(x)
        for j in range(len(x)):
            e = np.zeros_like(x)
            e[j] = h
            g[j] = (objective.loss_grad(x + e)[0] - objective.loss_grad(x - e)[0]) / (2 * h)
        return g

    # -- the contract -----------------------------------------------------------------------------
    def test_init_is_seeded_and_has_the_right_shape(self):
        f = self.make_objective()
        a, b = f.init(np.random.default_rng(3)), f.init(np.random.default_rng(3))
        assert a.shape == (f.n_params,) and a.dtype == np.float64
        np.testing.assert_array_equal(a, b)

    def test_gradient_matches_central_differences(self):
        f = self.make_objective()
        x = self.point(f, np.random.default_rng(0))
        np.testing.assert_allclose(f.loss_grad(x)[1], self._fd_grad(f, x), rtol=self.grad_rtol, atol=1e-9)

    def test_hessp_matches_differences_of_the_gradient(self):
        f = self.make_objective()
        rng = np.random.default_rng(1)
        x = self.point(f, rng)
        for _ in range(3):
            v = rng.normal(size=f.n_params)
            h = 1e-6
            fd = (f.loss_grad(x + h * v)[1] - f.loss_grad(x - h * v)[1]) / (2 * h)
            np.testing.assert_allclose(f.hessp(x, v), fd, rtol=self.hessp_rtol, atol=1e-8)

    def test_hessp_is_symmetric_and_linear(self):
        f = self.make_objective()
        rng = np.random.default_rng(2)
        x = self.point(f, rng)
        u, v = rng.normal(size=(2, f.n_params))
        assert abs(u @ f.hessp(x, v) - v @ f.hessp(x, u)) <= 1e-10 * max(1.0, abs(u @ f.hessp(x, v)))
        np.testing.assert_allclose(f.hessp(x, 2 * u - v), 2 * f.hessp(x, u) - f.hessp(x, v), rtol=1e-10, atol=1e-13)

    def test_optimizers_agree_on_the_minimum(self):
        f = self.make_objective()
        x0 = f.init(np.random.default_rng(0))
        rule = StoppingRule(gtol=self.gtol, max_iter=5000, max_seconds=60)
        results = {name: minimize(name, f, x0, rule) for name in self.optimizers}
        for name, res in results.items():
            assert res.reason == "converged", (name, res.reason, res.message)
        losses = [r.final.loss for r in results.values()]
        assert max(losses) - min(losses) <= self.agree_atol, dict(zip(results, losses))
