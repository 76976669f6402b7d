"""The rules of the race: one reference optimum, time to target, measured pass costs, profiles.

A comparison of optimizers is worth what its rules are (benchopt; Dolan and More 2002). This
module holds the rules that do not belong to any one method; it sees objectives only through the
protocol and optimizers only through :func:`pipeline.optim.minimize`.

Reference optimum
    ``f*`` is computed once per problem, outside the race, from the race's starting point, in two
    phases: L-BFGS to ``||g||/||g0|| <= 1e-6`` (robust far from a minimum), then Newton-CG from
    there to ``1e-10`` (quadratic convergence near one), each within ``reference_passes`` data
    passes (a budget in work, so the same ``f*`` on any machine); ``f*`` is the value reached and
    its own ``||g||/||g0||`` is reported beside it. It does not depend on which methods are
    compared (the old "minus the best of the methods shown" moved every curve when a method was
    added, and gave the winner a gap of zero by construction). The problem is non-convex: a method
    may converge above ``f*`` (near another stationary point) or even end below it; the table and
    the report say so (:func:`end_note`).

Time to target
    For a relative suboptimality ``tau`` the cost to target is the data passes (and seconds) of
    the first iterate with ``(f - f*)/|f*| <= tau``, for ``tau`` in :data:`TARGETS`; and the cost to
    come within :data:`VAL_TOLERANCE` of the method's own best validation RMSE (where validation
    stops improving: more digits of the objective buy nothing there). Not reached = ``nan``.

Performance profiles
    Over a set of problems ``P`` and methods ``S``, with ``t[p, s]`` the cost of ``s`` to a target
    on ``p`` (infinite if not reached), ``rho_s(tau) = |{p : t[p, s] <= tau min_s' t[p, s']}| / |P|``:
    the fraction of problems ``s`` solves within a factor ``tau`` of the best method on each.
    ``rho_s(1)`` is how often ``s`` is the fastest; ``rho_s`` at large ``tau`` how often it gets there
    at all.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.objectives.base import offers
from pipeline.optim import OptimizeResult, StoppingRule, minimize
from pipeline.schema import TARGETS, relative_gap, target_label

VAL_TOLERANCE = 1e-4
REFERENCE_SOLVERS = ("lbfgs", "newton-cg")  # the two phases, in order
REFERENCE_GTOL = (1e-6, 1e-10)              # relative to ||g(x0)||, where each phase stops
REFERENCE_PASSES = 20_000                   # per phase; seconds only as a safety net (600 s)
REFERENCE_VERSION = 3  # bump when the reference's definition changes: old cache entries then miss




@dataclass(frozen=True)
class Reference:
    """The reference optimum of one problem and how it was found."""

    f_star: float
    rel_grad_norm: float
    solver: str
    passes: int
    seconds: float
    values: dict  # the final value each reference solver reached

    def note(self) -> str:
        return (f"f* = {self.f_star:.12g} ({self.solver} from the race's start, {self.passes} passes, "
                f"||g||/||g0|| = {self.rel_grad_norm:.1e})")

    ZERO = 1e-12  # |f*| below this times f(x0): the relative gap divides by rounding error

    def warnings(self, f0: float) -> list[str]:
        """Why the relative figures of this problem mean nothing, in words (empty when they do):
        ``f*`` about zero next to the loss at the start ``f0`` (a gap divided by it is huge
        whatever the method did), or a start already within the loosest target of ``f*`` (every
        target is reached in 0 passes, whatever the method)."""
        out = []
        if abs(self.f_star) <= self.ZERO * abs(f0):
            out.append(f"f* = {self.f_star:.3g} is about zero next to f(x0) = {f0:.3g}: the relative gaps "
                       "(f - f*)/|f*| and the passes to each target are not meaningful on this problem")
        elif math.isfinite(f0) and relative_gap(f0, self.f_star) < max(TARGETS):
            out.append(f"the start is already within {relative_gap(f0, self.f_star):.1e} of f* (relative): every "
                       f"target is reached in 0 passes, whatever the method (is the data degenerate?)")
        return out


def reference_point(objective, x0: np.ndarray, reference_passes: int = REFERENCE_PASSES) -> tuple[np.ndarray, Reference]:
    """The reference solvers run from ``x0`` (see the module docstring): the point they reached
    and its ``Reference`` (what ``reference_optimum`` caches, without the point)."""
    x, g0, values, passes, seconds = np.array(x0, dtype=np.float64, copy=True), None, {}, 0, 0.0
    last = None
    for name, gtol in zip(REFERENCE_SOLVERS, REFERENCE_GTOL):
        g_here = float(np.linalg.norm(objective.loss_grad(x)[1]))
        g0 = g_here if g0 is None else g0
        if g_here <= gtol * g0:
            continue  # the previous phase already went this far
        rule = StoppingRule(gtol=gtol * g0 / g_here, max_passes=reference_passes, max_seconds=600.0)
        res = minimize(name, objective, x, rule)
        if math.isfinite(res.final.loss) and (last is None or res.final.loss <= last.loss):
            x, last = res.x, res.final
        values[name] = float(res.final.loss)
        passes += res.final.data_passes
        seconds += res.final.seconds
    if last is None or not math.isfinite(last.loss):
        raise ValueError("the reference solvers reached no finite objective: the problem diverges from x0")
    ref = Reference(float(last.loss), float(last.grad_norm / g0), "+".join(values), int(passes), float(seconds),
                    values)
    return x, ref


def reference_optimum(objective, x0: np.ndarray, cache_file: Path | None = None,
                      reference_passes: int = REFERENCE_PASSES) -> Reference:
    """``f*`` of ``objective`` from ``x0`` (see the module docstring), read from ``cache_file`` when
    it holds one, written there otherwise (a file that cannot be read or written is ignored)."""
    return reference_and_point(objective, x0, cache_file, reference_passes)[0]


def reference_and_point(objective, x0: np.ndarray, cache_file: Path | None = None,
                        reference_passes: int = REFERENCE_PASSES) -> tuple[Reference, np.ndarray]:
    """``reference_optimum`` and the point it was reached at (the curvature there is measured):
    the point is cached beside the JSON (``.npy``) and trusted only where its loss, recomputed
    (one pass), is the cached ``f*`` to 1e-12 and its shape the objective's."""
    point_file = Path(cache_file).with_suffix(".npy") if cache_file is not None else None
    if cache_file is not None:
        try:
            cached = _checked(Reference(**json.loads(Path(cache_file).read_text())), objective, x0)
            x = np.load(point_file, allow_pickle=False) if cached is not None else None
            if x is not None and (x.shape != x0.shape or x.dtype != np.float64 or not np.isfinite(x).all()
                                  or abs(float(objective.loss(x)) - cached.f_star) > 1e-12 * abs(cached.f_star)):
                cached = None
        except (OSError, ValueError, TypeError):
            cached = None  # unreadable, malformed or implausible: computed again and rewritten
        if cached is not None:
            return cached, x
    x, ref = reference_point(objective, x0, reference_passes)
    if cache_file is not None:
        try:
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            tmp = point_file.with_name(f"{point_file.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:  # the point first: a JSON is never left without its point
                np.save(fh, x)
            os.replace(tmp, point_file)
            tmp = Path(f"{cache_file}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(asdict(ref)))
            os.replace(tmp, cache_file)
        except OSError:
            pass
    return ref, x


def _checked(ref: Reference, objective, x0: np.ndarray) -> Reference | None:
    """``ref`` if it holds together, else None: every number finite and of its type, ``f_star`` the
    lowest of the solvers' ``values`` (how it was chosen), at most ``f(x0)`` (the solvers descend
    from ``x0``: one loss, computed here). A cache entry is a file anyone may edit; it is checked
    before any gap or target is measured against it (a changed digit made every target "reached in
    0 passes")."""
    numbers = [ref.f_star, ref.rel_grad_norm, ref.seconds, *(ref.values.values() if isinstance(ref.values, dict) else ())]
    if not (isinstance(ref.values, dict) and ref.values and set(ref.values) <= set(REFERENCE_SOLVERS)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
            and isinstance(ref.passes, int) and ref.passes >= 0 and ref.rel_grad_norm >= 0
            and isinstance(ref.solver, str) and ref.solver == "+".join(ref.values)):
        return None
    if ref.f_star != min(ref.values.values()):
        return None
    f0 = objective.loss_grad(np.array(x0, dtype=np.float64, copy=True))[0]
    return ref if ref.f_star <= f0 else None


def problem_key(*parts) -> str:
    """A checksum of everything that defines a problem (arrays by their bytes, the rest by repr)."""
    h = hashlib.sha256(f"reference-v{REFERENCE_VERSION}".encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str(part.dtype).encode() + str(part.shape).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()[:24]


def time_to_target(result: OptimizeResult, f_star: float, targets=TARGETS,
                   val_tolerance: float = VAL_TOLERANCE) -> dict[str, float]:
    """``passes_to_<tau>``, ``seconds_to_<tau>`` for each target, and ``passes_to_val``,
    ``seconds_to_val`` (within ``val_tolerance`` of the run's own best validation RMSE); nan where
    the run never got there."""
    out: dict[str, float] = {}
    hist = result.history
    for tau in targets:
        hit = next((r for r in hist if relative_gap(r.loss, f_star) <= tau), None)
        out[f"passes_to_{target_label(tau)}"] = float(hit.data_passes) if hit else math.nan
        out[f"seconds_to_{target_label(tau)}"] = float(hit.seconds) if hit else math.nan
    vals = [r.val_rmse for r in hist if math.isfinite(r.val_rmse)]
    hit = None
    if vals:
        best = min(vals)
        hit = next(r for r in hist if math.isfinite(r.val_rmse) and r.val_rmse <= best + val_tolerance)
    out["passes_to_val"] = float(hit.data_passes) if hit else math.nan
    out["seconds_to_val"] = float(hit.seconds) if hit else math.nan
    return out


ABOVE_F_STAR = "converged above f*"
BELOW_F_STAR = "below f*"
ON_SECONDS = "stopped on seconds: machine-dependent"


def end_note(result: OptimizeResult, f_star: float | None, tol: float = 1e-9) -> str:
    """What the table's note column says of where a run ended: "below f*" (a lower point than the
    reference solvers found), "converged above f*" (it met the gradient tolerance with
    ``(f - f*)/|f*| > 1e-6``: near a stationary point other than the reference's, whose kind, a
    local minimum or a saddle, only the curvature there can tell), "stopped on seconds:
    machine-dependent" (the wall-time safety net ended it: another machine would stop elsewhere),
    or "" (at f*, or still on its way there)."""
    notes = []
    if f_star is not None:
        gap = relative_gap(result.final.loss, f_star)
        if gap < -tol:
            notes.append(BELOW_F_STAR)
        elif result.converged and gap > max(tol, 1e-6):
            notes.append(ABOVE_F_STAR)
    if result.reason == "max_seconds":
        notes.append(ON_SECONDS)
    return "; ".join(notes)


# -- pass costs, measured -------------------------------------------------------------------------
IMPLAUSIBLE = 1.05  # a loss alone dearer than this many loss+gradients is noise, not a measurement


def pass_costs(objective, x0: np.ndarray, rounds: int = 11, points: int = 3, seed: int = 0) -> dict[str, float]:
    """What each operation the race counts as data passes costs in time, on this problem.

    ``seconds_loss_grad``: the median wall time of one ``loss_grad``; ``cost_<op>``: the median
    cost of one ``loss``, ``hessp``, ``gnvp``, ALS sweep and SGD epoch in units of it (for the
    operations ``objective`` offers), with ``cost_<op>_lo`` / ``cost_<op>_hi`` the quartiles of that
    ratio over the rounds (its spread).

    Measured so that noise and caches cannot pass for a cost: ``rounds`` rounds, each visiting
    ``points`` points and timing, at each, a ``loss_grad`` and then every operation once
    (interleaved: a slow moment of a busy machine hits every operation alike, and each ratio is
    taken within its round); every timed call is at a point (or with a direction) no call has
    seen before, so no per-point cache of the model can help, except a Hessian-vector product's
    residuals at ``x``, which the ``loss_grad`` just before it leaves, as inside CG. Run under the
    race's thread settings (BLAS on one thread). A loss measured dearer than ``IMPLAUSIBLE``
    loss+gradients is dropped rather than reported (``implausible_<op>`` = 1 says so)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):  # as the race runs (pipeline.optim.registry)
        return _pass_costs(objective, np.array(x0, dtype=np.float64, copy=True), rounds, points, seed)


def _pass_costs(objective, x0: np.ndarray, rounds: int, points: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    step = 1e-3 * max(float(np.abs(x0).max()), 1e-3)
    fresh = lambda: x0 + step * rng.standard_normal(x0.shape)  # noqa: E731  (a point no call has seen)

    def seconds(call) -> float:
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    # name -> (what to call, how to draw its argument: drawn before the clock starts)
    # The products first: right after the loss_grad at x, whose residuals they use (as inside CG).
    ops: dict[str, tuple] = {"hessp": (lambda xv: objective.hessp(*xv), lambda x: (x, rng.standard_normal(x.shape)))}
    if offers(objective, "gnvp"):
        ops["gnvp"] = (lambda xv: objective.gnvp(*xv), lambda x: (x, rng.standard_normal(x.shape)))
    if offers(objective, "loss"):
        ops["loss"] = (objective.loss, lambda x: fresh())
    if offers(objective, "als_sweep"):
        ops["als_sweep"] = (objective.als_sweep, lambda x: fresh())
    if offers(objective, "sgd_epoch"):
        ops["sgd_epoch"] = (lambda y: objective.sgd_epoch(y, 1e-6, np.random.default_rng(seed)), lambda x: fresh())
    for name, (call, draw) in list(ops.items()):  # untimed first calls: warm caches, drop what is refused
        try:
            objective.loss_grad(x0)
            call(draw(x0))
        except (ValueError, np.linalg.LinAlgError):  # an operation this configuration refuses
            del ops[name]
    base_times: list[float] = []
    ratios: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(rounds):
        per_point: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(points):
            x = fresh()
            base = seconds(lambda: objective.loss_grad(x))  # also leaves the residuals at x, as CG has them
            base_times.append(base)
            for name, (call, draw) in ops.items():
                arg = draw(x)
                per_point[name].append(seconds(lambda: call(arg)) / base)
        for name in ops:
            ratios[name].append(float(np.median(per_point[name])))
    out = {"seconds_loss_grad": float(np.median(base_times))}
    for name, values in ratios.items():
        lo, mid, hi = (float(q) for q in np.quantile(values, (0.25, 0.5, 0.75)))
        if name == "loss" and mid > IMPLAUSIBLE:
            out[f"implausible_{name}"] = 1.0
            continue
        out[f"cost_{name}"], out[f"cost_{name}_lo"], out[f"cost_{name}_hi"] = mid, lo, hi
    return out


def cost_names(costs: dict[str, float]) -> list[str]:
    """The operations ``costs`` (from :func:`pass_costs`, or as logged) has a measured cost for."""
    return [k[5:] for k in costs if k.startswith("cost_") and not k.endswith(("_lo", "_hi"))]


def describe_costs(costs: dict[str, float]) -> str:
    """``"loss 0.97 [0.95-0.99], hessp 1.35 [1.31-1.40] ..."``: median and quartiles of each cost."""
    parts = []
    for name in cost_names(costs):
        lo, hi = costs.get(f"cost_{name}_lo"), costs.get(f"cost_{name}_hi")
        spread = f" [{lo:.2f}-{hi:.2f}]" if lo is not None and hi is not None else ""
        parts.append(f"{name} {costs[f'cost_{name}']:.2f}{spread}")
    return ", ".join(parts)


# -- performance profiles --------------------------------------------------------------------------
PROFILE_TAUS = np.logspace(0, 3, 121)  # 1 to 1000 times the best method's cost
TO_TARGET = ("passes_to_", "seconds_to_")  # the metrics that are costs to a target (nan: not reached)


def profile(costs: pd.DataFrame, taus: np.ndarray) -> pd.DataFrame:
    """Dolan-More profiles: ``costs`` has one row per problem, one column per method (nan = not
    reached); returns one column per method, ``rho_s(tau)`` for each ``tau`` in ``taus``."""
    c = costs.to_numpy(dtype=float)
    c = np.where(np.isfinite(c), c, np.inf)
    best = c.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(best), np.maximum(c, 1e-300) / np.maximum(best, 1e-300), np.inf)
    ratio = np.where(c == best, 1.0, ratio)  # exact ties (also 0 / 0) are ratio 1
    ratio = np.where(np.isfinite(c), ratio, np.inf)
    rho = (ratio[None, :, :] <= taus[:, None, None]).mean(axis=1)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=costs.columns)
