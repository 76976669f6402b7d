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


@register("gd-momentum", "Nesterov accelerated gradient, backtracking, with function-value restart")
def nesterov(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, step0: float = 1.0,
             max_backtracks: int = 60) -> tuple[np.ndarray, str]:
    """Nesterov's accelerated gradient (FISTA form) with adaptive restart.

    ``y = x_k + (t_{k-1} - 1)/t_k (x_k - x_{k-1})``, ``x_{k+1} = y - s grad f(y)`` with ``s``
    backtracked until ``f(y - s g) <= f(y) - s/2 ||g||^2`` (the descent-lemma test that acceleration
    needs), ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``. If ``f(x_{k+1}) > f(x_k)`` the momentum is reset
    (O'Donoghue and Candes' function restart), which also copes with the non-convexity.
    The method evaluates gradients at the extrapolated points ``y``; the gradient at ``x_{k+1}``
    that the shared stopping rule needs is monitor cost (``n_monitor_evals``), not charged.
    """
    x_prev = x = x0
    f_x = objective.loss(x)
    t_prev, s = 1.0, step0
    restarts = 0
    while True:
        t = (1.0 + np.sqrt(1.0 + 4.0 * t_prev ** 2)) / 2.0
        y = x + ((t_prev - 1.0) / t) * (x - x_prev)
        f_y, g_y = objective.loss_grad(y)
        gg = float(g_y @ g_y)
        s *= 2.0
        for _ in range(max_backtracks):
            trial = y - s * g_y
            f_trial = objective.loss(trial)
            if f_trial <= f_y - 0.5 * s * gg:
                break
            s *= 0.5
        else:
            return x, f"line search found no decrease in {max_backtracks} halvings"
        if f_trial > f_x:  # restart: drop the momentum, step from x itself next time
            x_prev, t_prev, restarts = x, 1.0, restarts + 1
            continue
        x_prev, x, f_x, t_prev = x, trial, f_trial, t
        if monitor.check(x):
            return x, f"{monitor.reason} ({restarts} restarts)"
