"""Gradient descent: Armijo backtracking or a fixed step.

``x_{k+1} = x_k - t_k g_k``. With backtracking, ``t_k`` starts at twice the last accepted step
(``step0`` at first) and is halved until the Armijo condition
``f(x_k - t g_k) <= f(x_k) - c1 t ||g_k||^2`` holds (``c1 = 1e-4``); trial points cost one
function evaluation each (no gradient), the accepted point one loss+gradient. With ``step`` set,
every iteration takes that step (no safeguard: a step over ``2 / L`` diverges, and the shared
rule reports ``"diverged"``).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.optim.base import CountedObjective, Monitor
from pipeline.optim.registry import register


@register("gd", "gradient descent, Armijo backtracking (or a fixed step)")
def gradient_descent(objective: CountedObjective, x0: np.ndarray, monitor: Monitor,
                     step: float | None = None, step0: float = 1.0, c1: float = 1e-4,
                     max_backtracks: int = 60) -> tuple[np.ndarray, str]:
    x = x0
    f, g = objective.loss_grad(x)
    t = step0
    while True:
        if step is not None:
            x = x - step * g
        else:
            gg = float(g @ g)
            t *= 2.0
            for _ in range(max_backtracks):
                trial = x - t * g
                f_trial = objective.loss(trial)
                if f_trial <= f - c1 * t * gg:
                    break
                t *= 0.5
            else:
                return x, f"line search found no decrease in {max_backtracks} halvings (step {t:.3g})"
            x = trial
        f, g = objective.loss_grad(x)
        if monitor.check(x, f, g):
            return x, monitor.reason
        if step is not None and not math.isfinite(f):
            return x, "diverged"
