"""Truncated Newton with preconditioned conjugate gradients (``newton-pcg``).

Each outer iteration at ``x`` (gradient ``g``):

1. ``M^-1 = objective.precondition(x)``: an SPD approximation of ``H(x)^-1`` (for MF the inverse
   of the Hessian's block diagonal: per user and per item the (k+1)-square block, ALS's normal
   matrices, factored once here; ``docs/derivation.md``). Building it costs what the objective
   says (``precondition_passes``, 2 for MF: one pass over the ratings per side, as an ALS sweep).
2. Preconditioned CG on ``H d = -g`` from ``d = 0`` (Nocedal & Wright, Alg. 5.3 inside Alg. 7.1),
   stopped when the residual is below ``eta ||g||`` with the forcing term
   ``eta = min(0.5, sqrt(||g|| / ||g0||))`` (superlinear near a minimum), after ``max_cg`` steps,
   or on negative curvature ``p.Hp <= 0`` (MF is non-convex): then the direction built so far,
   or, at the first CG step, ``-M^-1 g`` (a descent direction, since ``M`` is SPD).
3. Armijo backtracking from the full step ``t = 1`` along ``d``; each trial one ``loss_grad``,
   the accepted one's gradient kept.

Every Hessian-vector product is one data pass, as for ``newton-cg``; what the preconditioner
buys is fewer of them: CG's iterations depend on the spread of the preconditioned spectrum, and
the block diagonal removes the spread that comes from users and items with very different rating
counts (the penalty weighting ``w = n`` makes it large).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.optim.base import CountedObjective, Monitor
from pipeline.optim.registry import register


@register("newton-pcg", "truncated Newton, CG preconditioned by the Hessian's block diagonal, Armijo line search",
          uses_hessp=True, needs=("precondition",),
          notes=("Truncated Newton with conjugate gradients preconditioned by the Hessian's block diagonal (per "
                 "user and per item the (k+1)-square block, ALS's normal matrices, Cholesky-factored once per "
                 'outer iteration at the cost of two passes): CG then needs far fewer Hessian-vector products; '
                 'negative curvature ends CG; Armijo line search.'),
          on_negative_curvature=('newton-pcg ends CG with the direction built so far (-M^-1 g at the first CG step)'))
def newton_pcg(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, max_cg: int = 100,
               c1: float = 1e-4, max_backtracks: int = 40) -> tuple[np.ndarray, str]:
    model = objective.objective
    x = x0
    f, g = objective.loss_grad(x)
    g0 = max(float(np.linalg.norm(g)), 1e-300)
    while True:
        objective.solver_passes(int(model.precondition_passes))
        apply = model.precondition(x)
        gnorm = float(np.linalg.norm(g))
        eta = min(0.5, math.sqrt(gnorm / g0))
        d = _pcg(objective, x, g, apply, eta * gnorm, max_cg)
        slope = float(g @ d)
        if not slope < 0:  # rounding at a stationary point: nothing left to gain
            return x, "no descent direction (g.d >= 0)"
        t = 1.0
        for _ in range(max_backtracks):
            trial = x + t * d
            f_trial, g_trial = objective.loss_grad(trial)
            if f_trial <= f + c1 * t * slope:
                break
            t *= 0.5
        else:
            return x, f"line search found no decrease in {max_backtracks} halvings"
        x, f, g = trial, f_trial, g_trial
        if monitor.check(x, f, g):
            return x, monitor.reason


def _pcg(objective: CountedObjective, x: np.ndarray, g: np.ndarray, apply, tol: float, max_cg: int) -> np.ndarray:
    """Approximately solve ``H d = -g`` by preconditioned CG (see the module docstring)."""
    d = np.zeros_like(g)
    r = -g
    z = apply(r)
    p = z
    rz = float(r @ z)
    for j in range(max_cg):
        Hp = objective.hessp(x, p)
        curvature = float(p @ Hp)
        if curvature <= 0:  # (counted by the CountedObjective)
            return z if j == 0 else d  # at the first step: -M^-1 g (z = M^-1 r = -M^-1 g)
        alpha = rz / curvature
        d = d + alpha * p
        r = r - alpha * Hp
        if float(np.linalg.norm(r)) <= tol:
            return d
        z = apply(r)
        rz_next = float(r @ z)
        p = z + (rz_next / rz) * p
        rz = rz_next
    return d
