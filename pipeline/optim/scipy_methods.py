"""scipy's methods under the shared stopping rule.

scipy's own tests are switched off (Newton-CG: ``xtol=0``; L-BFGS-B: ``gtol=0, ftol=0``) and
the callback applies the shared rule, raising ``StopIteration`` when it holds (scipy then
returns with a "callback requested stop" status, which :func:`pipeline.optim.registry.minimize`
relabels with the rule's reason). If scipy ends first (a failed line search), the reason is
``"method"`` with scipy's message.

Newton-CG: each outer iteration solves ``H d = -g`` approximately by conjugate gradients, with
our exact ``hessp`` for ``H v``; it stops CG early on negative curvature (taking the steepest
descent direction if that happens on the first CG step) and then does a Wolfe line search.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize

from pipeline.optim.base import CountedObjective, Monitor
from pipeline.optim.registry import register

_BIG = 10**9


def _callback(monitor: Monitor):
    def callback(intermediate_result):
        if monitor.check(intermediate_result.x):
            raise StopIteration
    return callback


def curvature_scale(objective: CountedObjective, x0: np.ndarray) -> float:
    """``||g0||^2 / g0^T H(x0) g0``: the factor that makes the curvature along ``-g0`` equal 1.

    scipy's Newton-CG is not scale invariant. Its inner CG stops at
    ``||r||_1 <= min(0.5, sqrt(||g||_1)) ||g||_1`` and treats a curvature ``p^T H p <= 3 eps`` as
    zero, both absolute. On an objective divided by N the gradient and the curvature are small
    (``p^T H p`` ~ 1e-16 once ``||g|| / ||g0||`` ~ 1e-5 on MovieLens-sized data), CG returns a zero
    direction and scipy reports success far from the tolerance. Minimizing ``s f`` instead has
    the same minimizer and the same Newton direction; with ``s`` from this function the scaled
    problem has unit curvature along the first gradient, so scipy's thresholds mean what they
    were written for. Costs one Hessian-vector product (counted). Falls back to 1 where the
    curvature along ``g0`` is not positive (a saddle: nothing to normalize by).
    """
    _, g0 = objective.loss_grad(x0)
    gg = float(g0 @ g0)
    if gg == 0.0:
        return 1.0
    curvature = float(g0 @ objective.hessp(x0, g0))
    return gg / curvature if curvature > 0 and np.isfinite(curvature) else 1.0


def _second_order(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, method: str,
                  product: str, options: dict, scale: float | str, max_restarts: int) -> tuple[np.ndarray, str]:
    """scipy ``method`` on ``scale * f`` with Hessian-vector products ``product`` ("hessp"/"gnvp").

    With ``scale="auto"``, when scipy ends on its own before the shared rule holds (its absolute
    zero-curvature cutoff returned a zero step, or its line search lost precision) while the
    gradient is still shrinking, it is restarted from where it stopped with the scale measured
    there; each restart costs one loss+gradient and one Hessian-vector product (counted). At most
    ``max_restarts`` times, and never without progress.
    """
    x, restarts, message = x0, 0, ""
    best_gnorm = np.inf
    while True:
        s = curvature_scale(objective, x) if scale == "auto" else float(scale)
        res = _run_scaled(objective, x, monitor, s, method, getattr(objective, product), options)
        message = str(res.message)
        if monitor.reason:
            x = monitor.last_x
            break
        x = res.x
        gnorm = float(np.linalg.norm(res.jac)) / s if res.get("jac") is not None else np.inf
        if scale != "auto" or restarts >= max_restarts or not gnorm < best_gnorm:
            break
        best_gnorm = gnorm
        restarts += 1
    if restarts:
        message = f"{message} (after {restarts} restart{'s' * (restarts > 1)} with a rescaled objective)"
    return x, message


def _run_scaled(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, scale: float, method: str,
                hessp, options: dict):
    def fg(x):
        f, g = objective.loss_grad(x)
        return scale * f, scale * g

    def hp(x, v):
        return scale * hessp(x, v)

    return scipy.optimize.minimize(fg, x0, jac=True, hessp=hp if hessp else None, method=method,
                                   callback=_callback(monitor), options=options)


_NCG = {"xtol": 0.0, "maxiter": _BIG}
_TRUST = {"gtol": 0.0, "maxiter": _BIG}


@register("newton-cg", "scipy Newton-CG with the exact Hessian-vector product", uses_hessp=True,
          notes=('Truncated Newton (scipy Newton-CG) with our exact Hessian-vector product: conjugate gradients on'
                 ' H d = -g, stopped early by a forcing term, and on negative curvature; then a Wolfe line search.'
                 ' Superlinear near a minimum; each step costs as many data passes as CG iterations.'),
          on_negative_curvature=("scipy's Newton-CG stops CG and takes the direction built so far (steepest descent at the first "
                                 'CG step)'))
def newton_cg(objective: CountedObjective, x0: np.ndarray, monitor: Monitor,
              scale: float | str = "auto", max_restarts: int = 20) -> tuple[np.ndarray, str]:
    """Truncated Newton: CG on ``H d = -g`` (stopped on negative curvature), Wolfe line search."""
    return _second_order(objective, x0, monitor, "Newton-CG", "hessp", _NCG, scale, max_restarts)


@register("newton-cg-gn", "scipy Newton-CG with the Gauss-Newton product (PSD)", uses_hessp=True, needs=("gnvp",),
          notes=('Newton-CG with the Gauss-Newton product (residual curvature dropped): never meets negative '
                 'curvature, converges linearly when residuals are not small.'))
def newton_cg_gn(objective: CountedObjective, x0: np.ndarray, monitor: Monitor,
                 scale: float | str = "auto", max_restarts: int = 20) -> tuple[np.ndarray, str]:
    """Newton-CG with ``J^T J v`` + penalty in place of ``H v``: never meets negative curvature;
    converges linearly where the residual curvature matters."""
    return _second_order(objective, x0, monitor, "Newton-CG", "gnvp", _NCG, scale, max_restarts)


@register("trust-ncg", "scipy trust-region Newton-CG (Steihaug) with the exact hessp", uses_hessp=True,
          notes=("Trust-region Newton with Steihaug CG: follows negative curvature to the region's boundary "
                 'instead of stopping, which matters near the saddle at small factors.'),
          on_negative_curvature=("trust-ncg follows it to the trust region's boundary"))
def trust_ncg(objective: CountedObjective, x0: np.ndarray, monitor: Monitor,
              scale: float | str = "auto", max_restarts: int = 20) -> tuple[np.ndarray, str]:
    """Steihaug CG inside a trust region: follows negative curvature to the region's boundary."""
    return _second_order(objective, x0, monitor, "trust-ncg", "hessp", _TRUST, scale, max_restarts)


@register("trust-krylov", "scipy trust-region with a Krylov (GLTR) subproblem solver", uses_hessp=True,
          notes=('Trust-region Newton solving the subproblem nearly exactly on a Krylov space (GLTR): more '
                 'Hessian-vector products per step, fewer steps.'),
          on_negative_curvature=('trust-krylov solves the trust-region subproblem on the Krylov space, the hard case included'))
def trust_krylov(objective: CountedObjective, x0: np.ndarray, monitor: Monitor,
                 scale: float | str = "auto", max_restarts: int = 20) -> tuple[np.ndarray, str]:
    """Solves the trust-region subproblem nearly exactly on a Krylov space (Lanczos), including
    the hard case; more Hessian-vector products per step than Steihaug, fewer steps."""
    return _second_order(objective, x0, monitor, "trust-krylov", "hessp", _TRUST, scale, max_restarts)


@register("lbfgs", "scipy L-BFGS-B (quasi-Newton, 10 correction pairs)",
          notes=('L-BFGS-B: a quasi-Newton model from the last 10 gradient differences; one loss+gradient per step'
                 ' most of the time; no Hessian-vector products.'))
def lbfgs(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, maxcor: int = 10) -> tuple[np.ndarray, str]:
    res = scipy.optimize.minimize(objective.loss_grad, x0, jac=True, method="L-BFGS-B",
                                  callback=_callback(monitor),
                                  options={"gtol": 0.0, "ftol": 0.0, "maxiter": _BIG, "maxfun": _BIG,
                                           "maxcor": maxcor})
    return (monitor.last_x if monitor.reason else res.x), str(res.message)


@register("cg", "scipy nonlinear conjugate gradient (Polak-Ribiere)",
          notes=('Nonlinear conjugate gradient (Polak-Ribiere) with a Wolfe line search.'))
def nonlinear_cg(objective: CountedObjective, x0: np.ndarray, monitor: Monitor) -> tuple[np.ndarray, str]:
    res = scipy.optimize.minimize(objective.loss_grad, x0, jac=True, method="CG", callback=_callback(monitor),
                                  options={"gtol": 0.0, "maxiter": _BIG})
    return (monitor.last_x if monitor.reason else res.x), str(res.message)
