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

from pipeline.objectives.base import Objective
from pipeline.optim.base import CountedObjective, Listener, Monitor, OptimizeResult, StoppingRule


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    run: Callable
    summary: str
    uses_hessp: bool = False


REGISTRY: dict[str, OptimizerSpec] = {}


def register(name: str, summary: str, uses_hessp: bool = False):
    def decorate(run):
        if name in REGISTRY:
            raise ValueError(f"optimizer {name!r} registered twice")
        REGISTRY[name] = OptimizerSpec(name, run, summary, uses_hessp)
        return run
    return decorate


def names() -> list[str]:
    return list(REGISTRY)


def minimize(name: str, objective: Objective, x0: np.ndarray, rule: StoppingRule = StoppingRule(),
             validate: Callable[[np.ndarray], float] | None = None,
             listeners: tuple[Listener, ...] = (), **options) -> OptimizeResult:
    """Run optimizer ``name`` on ``objective`` from ``x0`` under the shared ``rule``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown optimizer {name!r}; choose from {', '.join(REGISTRY)}")
    counted = CountedObjective(objective)
    monitor = Monitor(name, counted, rule, validate, listeners)
    x0 = np.array(x0, dtype=np.float64, copy=True)
    # Overflow in a diverging run is expected and reported as reason "diverged", not as warnings.
    # BLAS runs single-threaded here: the optimizers' BLAS work is vector operations on x, which
    # gain nothing from threads, while OpenBLAS threads spinning beside the numba kernels' threads
    # made every method 4-5x slower on 2 cores (docs/performance.md).
    with np.errstate(over="ignore", invalid="ignore"), threadpool_limits(limits=1, user_api="blas"):
        if monitor.check(x0):  # iteration 0: reference gradient norm, maybe already done
            return monitor.result(x0, "stopped at the starting point")
        x, message = REGISTRY[name].run(counted, x0, monitor, **options)
        return monitor.result(x, message)
