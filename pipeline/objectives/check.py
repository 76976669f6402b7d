"""Derivative checks against central finite differences, for any :class:`Objective`.

Directional checks cost O(1) evaluations per direction, so they run on real data:

* gradient: ``g . v`` against ``(f(x + h v) - f(x - h v)) / 2h``, along ``v`` half random and
  half along ``g`` (a purely random unit direction in many dimensions has ``g . v`` so small that
  the rounding of ``f``, about ``eps |f| / h``, dominates the comparison);
* Hessian-vector product: ``H v`` against ``(g(x + h v) - g(x - h v)) / 2h``;
* symmetry: ``u . H v`` against ``v . H u``.

Central differences have truncation error O(h^2) and rounding error O(eps / h); ``h`` near
``eps^(1/3) ~ 6e-6`` (scaled by ``|x|``) balances the two, so relative errors of 1e-6 and below
are what a correct derivative gives.
"""

from __future__ import annotations

import numpy as np

from pipeline.objectives.base import Objective


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    den = max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(np.linalg.norm(a - b) / den)


def check_derivatives(objective: Objective, x: np.ndarray, rng: np.random.Generator,
                      n_directions: int = 3, h: float | None = None) -> dict[str, float]:
    """Largest relative errors over ``n_directions`` random unit directions."""
    x = np.asarray(x, np.float64)
    if h is None:
        h = 6e-6 * max(1.0, float(np.linalg.norm(x)) / np.sqrt(len(x)))
    _, g = objective.loss_grad(x)
    g_unit = g / max(np.linalg.norm(g), 1e-300)
    worst = {"grad_rel_error": 0.0, "hessp_rel_error": 0.0, "hessp_symmetry_error": 0.0}
    for _ in range(n_directions):
        v = rng.normal(size=len(x))
        v /= np.linalg.norm(v)
        w = rng.normal(size=len(x))
        w /= np.linalg.norm(w)
        u = v + g_unit
        u /= np.linalg.norm(u)
        fp, _ = objective.loss_grad(x + h * u)
        fm, _ = objective.loss_grad(x - h * u)
        worst["grad_rel_error"] = max(worst["grad_rel_error"], _rel(g @ u, (fp - fm) / (2 * h)))
        _, gp = objective.loss_grad(x + h * v)
        _, gm = objective.loss_grad(x - h * v)
        hv = objective.hessp(x, v)
        worst["hessp_rel_error"] = max(worst["hessp_rel_error"], _rel(hv, (gp - gm) / (2 * h)))
        hw = objective.hessp(x, w)
        worst["hessp_symmetry_error"] = max(worst["hessp_symmetry_error"], _rel(w @ hv, v @ hw))
    return worst
