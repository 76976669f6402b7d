"""First-order methods: gradient descent (Armijo or a fixed step), Barzilai-Borwein, Nesterov.

``x_{k+1} = x_k - t_k g_k``. With backtracking, ``t_k`` starts at twice the last accepted step
(``step0`` at first) and is halved until the Armijo condition
``f(x_k - t g_k) <= f(x_k) - c1 t ||g_k||^2`` holds (``c1 = 1e-4``). Every trial point is
evaluated by ``loss_grad`` (one data pass, as a value alone would cost on the compiled path) and
the accepted trial's gradient is kept, so no point is evaluated twice: an iteration costs one pass
per trial, about two with the step doubling and halving. With ``step`` set, every iteration takes
that step (no safeguard: a step over ``2 / L`` diverges, and the shared rule reports
``"diverged"``).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from pipeline.optim.base import CountedObjective, Monitor
from pipeline.optim.registry import register


def backtrack(objective: CountedObjective, x: np.ndarray, g: np.ndarray, t: float, f_ref: float, c: float,
              max_backtracks: int):
    """Halve ``t`` until ``f(x - t g) <= f_ref - c t |g|^2``; each trial is one ``loss_grad``, kept.

    Returns ``(t, trial, f_trial, g_trial)``, or ``None`` after ``max_backtracks`` halvings."""
    gg = float(g @ g)
    for _ in range(max_backtracks):
        trial = x - t * g
        f_trial, g_trial = objective.loss_grad(trial)
        if f_trial <= f_ref - c * t * gg:
            return t, trial, f_trial, g_trial
        t *= 0.5
    return None


@register("gd", "gradient descent, Armijo backtracking (or a fixed step)",
          notes=("Gradient descent with Armijo backtracking: one loss+gradient per trial step, the accepted one's "
                 'gradient kept (the table gives its passes and iterations). Near a minimum it converges linearly,'
                 " at a rate set by the Hessian's condition number there."))
def gradient_descent(objective: CountedObjective, x0: np.ndarray, monitor: Monitor,
                     step: float | None = None, step0: float = 1.0, c1: float = 1e-4,
                     max_backtracks: int = 60) -> tuple[np.ndarray, str]:
    x = x0
    f, g = objective.loss_grad(x)
    t = step0
    while True:
        if step is not None:
            x = x - step * g
            f, g = objective.loss_grad(x)
        else:
            step_found = backtrack(objective, x, g, 2.0 * t, f, c1, max_backtracks)
            if step_found is None:
                return x, f"line search found no decrease in {max_backtracks} halvings"
            t, x, f, g = step_found
        if monitor.check(x, f, g):
            return x, monitor.reason
        if step is not None and not math.isfinite(f):
            return x, "diverged"


@register("gd-bb", "gradient descent with Barzilai-Borwein steps and a nonmonotone line search",
          notes=('Gradient descent with Barzilai-Borwein steps (s.s/s.y) and a nonmonotone line search (GLL, '
                 'memory 10): the standard strong first-order baseline; one loss+gradient per trial step.'))
def barzilai_borwein(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, step0: float = 1.0,
                     memory: int = 10, c1: float = 1e-4, max_backtracks: int = 60) -> tuple[np.ndarray, str]:
    """Barzilai-Borwein gradient descent with Grippo-Lampariello-Lucidi's nonmonotone line search
    (Raydan 1997), the standard strong first-order baseline.

    With ``s = x_k - x_{k-1}`` and ``y = g_k - g_{k-1}`` the step is ``t_k = s.s / s.y`` (BB1: the
    inverse of the Rayleigh quotient of the average Hessian along ``s``, so the step adapts to the
    curvature the last move saw); where ``s.y <= 0`` (negative curvature: MF is non-convex) it is
    ``|s| / |y|``. The step is accepted when ``f(x_k - t g_k) <= max(f_{k-M+1..k}) - c1 t |g_k|^2``
    (``M = memory``): BB steps are not monotone and an Armijo test against ``f_k`` alone would cut
    the very steps that make BB fast; halving ``t`` until the test holds keeps the method globally
    convergent. Every trial is one ``loss_grad``; the accepted one's gradient is kept, so an
    iteration usually costs one data pass.
    """
    x = x0
    f, g = objective.loss_grad(x)
    recent: deque[float] = deque([f], maxlen=memory)
    t_bb = step0
    while True:
        step_found = backtrack(objective, x, g, min(max(t_bb, 1e-20), 1e20), max(recent), c1, max_backtracks)
        if step_found is None:
            return x, f"line search found no decrease in {max_backtracks} halvings"
        _, trial, f_trial, g_trial = step_found
        s, y = trial - x, g_trial - g
        sy = float(s @ y)
        t_bb = float(s @ s) / sy if sy > 0 else float(np.linalg.norm(s) / max(np.linalg.norm(y), 1e-300))
        x, f, g = trial, f_trial, g_trial
        recent.append(f)
        if monitor.check(x, f, g):
            return x, monitor.reason


@register("gd-momentum", "Nesterov accelerated gradient, backtracking, with function-value restart",
          notes=("Nesterov's accelerated gradient with function-value restart: the same cost per step as gradient "
                 'descent, with a rate that depends on the square root of the condition number.'))
def nesterov(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, step0: float = 1.0,
             max_backtracks: int = 60) -> tuple[np.ndarray, str]:
    """Nesterov's accelerated gradient (FISTA form) with adaptive restart.

    ``y = x_k + (t_{k-1} - 1)/t_k (x_k - x_{k-1})``, ``x_{k+1} = y - s grad f(y)`` with ``s``
    backtracked until ``f(y - s g) <= f(y) - s/2 ||g||^2`` (the descent-lemma test that acceleration
    needs), ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``. If ``f(x_{k+1}) > f(x_k)`` the momentum is reset
    (O'Donoghue and Candes' function restart), which also copes with the non-convexity.
    Every trial is one ``loss_grad`` and the accepted one's gradient is kept: the shared rule reads
    the gradient at ``x_{k+1}`` from it, and after a restart (``y = x``) the step reuses it.
    """
    x_prev = x = x0
    f_x, g_x = objective.loss_grad(x)
    t_prev, s = 1.0, step0
    restarts = 0
    while True:
        t = (1.0 + np.sqrt(1.0 + 4.0 * t_prev ** 2)) / 2.0
        if t_prev == 1.0:  # no momentum (first step, or just restarted): y is x, whose gradient we have
            y, f_y, g_y = x, f_x, g_x
        else:
            y = x + ((t_prev - 1.0) / t) * (x - x_prev)
            f_y, g_y = objective.loss_grad(y)
        step_found = backtrack(objective, y, g_y, 2.0 * s, f_y, 0.5, max_backtracks)
        if step_found is None:
            return x, f"line search found no decrease in {max_backtracks} halvings"
        s, trial, f_trial, g_trial = step_found
        if f_trial > f_x:  # restart: drop the momentum, step from x itself next time
            x_prev, t_prev, restarts = x, 1.0, restarts + 1
            continue
        x_prev, x, f_x, g_x, t_prev = x, trial, f_trial, g_trial, t
        if monitor.check(x, f_x, g_x):
            return x, f"{monitor.reason} ({restarts} restarts)"
