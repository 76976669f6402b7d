"""One registry of optimizers: name -> how to run it.

An optimizer is a function ``run(objective, x0, monitor, **options) -> (x, message)``: it
minimizes ``objective`` (a :class:`CountedObjective`) from ``x0``, calls ``monitor.check`` at
every iterate and stops when that returns True. :func:`minimize` is the one entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.objectives.base import Objective, offers
from pipeline.optim.base import BudgetSpent, CountedObjective, Listener, Monitor, OptimizeResult, StoppingRule


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer: how to run it, and what it needs from a model beyond ``loss_grad`` and
    ``hessp`` (``needs``: the names of optional capabilities, e.g. ``("als_sweep",)``)."""

    name: str
    run: Callable
    summary: str
    uses_hessp: bool = False
    needs: tuple[str, ...] = ()
    notes: str = ""                  # the report's paragraph on the method (Markdown)
    on_negative_curvature: str = ""  # what its inner solver does on v.Hv < 0 (the report's words), if it can meet it


REGISTRY: dict[str, OptimizerSpec] = {}


def register(name: str, summary: str, uses_hessp: bool = False, needs: tuple[str, ...] = (), notes: str = "",
             on_negative_curvature: str = ""):
    def decorate(run):
        if name in REGISTRY:
            raise ValueError(f"optimizer {name!r} registered twice")
        REGISTRY[name] = OptimizerSpec(name, run, summary, uses_hessp, tuple(needs), notes, on_negative_curvature)
        return run
    return decorate


def names() -> list[str]:
    return list(REGISTRY)


class NotApplicable(ValueError):
    """The optimizer needs a capability the model does not offer; nothing was run."""


def missing_capabilities(name: str, objective) -> list[str]:
    """What optimizer ``name`` needs that ``objective`` lacks (empty: it applies)."""
    return [c for c in REGISTRY[name].needs if not offers(objective, c)]


def not_applicable(name: str, objective, model: str | None = None) -> str | None:
    """``"not applicable: <model> has no <capability>"``, or None where ``name`` applies."""
    lacks = missing_capabilities(name, objective)
    if not lacks:
        return None
    return f"not applicable: {model or type(objective).__name__} has no {' and no '.join(lacks)}"


def minimize(name: str, objective: Objective, x0: np.ndarray, rule: StoppingRule = StoppingRule(),
             validate: Callable[[np.ndarray], float] | None = None,
             listeners: tuple[Listener, ...] = (), **options) -> OptimizeResult:
    """Run optimizer ``name`` on ``objective`` from ``x0`` under the shared ``rule``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown optimizer {name!r}; choose from {', '.join(REGISTRY)}")
    if (why := not_applicable(name, objective)):
        raise NotApplicable(f"{name}: {why}")
    counted = CountedObjective(objective, max_passes=rule.max_passes)
    monitor = Monitor(name, counted, rule, validate, listeners)
    x0 = np.array(x0, dtype=np.float64, copy=True)
    # Overflow in a diverging run is expected and reported as reason "diverged", not as warnings.
    # BLAS runs single-threaded here: the optimizers' BLAS work is vector operations on x, which
    # gain nothing from threads, while OpenBLAS threads spinning beside the numba kernels' threads
    # made every method 4-5x slower on 2 cores (docs/performance.md).
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(limits=1, user_api="blas"):
        if monitor.check(x0):  # iteration 0: reference gradient norm, maybe already done
            return monitor.result(x0, "stopped at the starting point")
        try:
            x, message = REGISTRY[name].run(counted, x0, monitor, **options)
        except BudgetSpent:  # the next operation did not fit: end at the last accepted iterate
            return monitor.budget_spent()
        return monitor.result(x, message)
