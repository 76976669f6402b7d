"""``curvature``: the Hessian's extreme eigenvalues at the race's start and at the reference optimum,
and the preconditioned Hessian's (``M^-1 H``, what newton-pcg's CG meets) at the optimum."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline import curvature, race
from pipeline.config import RunConfig
from pipeline.data import Ratings
from pipeline.experiment.fitting import STATIONARY, prepare, warm_up
from pipeline.objectives import offers


@dataclass
class Measured:
    label: str                 # "start (x0)", "reference optimum"
    loss: float
    rel_grad_norm: float
    curvature: curvature.Curvature
    seconds: float
    preconditioned: bool = False  # M^-1 H: its kind is the point's under H, said on the H row

    @property
    def kind(self) -> str:
        if self.preconditioned:
            return "-"
        return self.curvature.kind(STATIONARY * self.curvature.grad_norm / max(self.rel_grad_norm, 1e-300))


def measure_points(cfg: RunConfig, ratings: Ratings | None = None,
                   note: Callable[[str], None] | None = None) -> tuple[list[Measured], race.Reference]:
    """The curvature at ``x0`` and at the point the reference solvers reach from it (their
    passes outside the measurement's own, said in the Reference)."""
    note = note or (lambda _msg: None)
    prep = prepare(cfg, ratings)
    obj, x0 = prep.objective, prep.x0
    warm_up(obj)
    g0 = float(np.linalg.norm(obj.loss_grad(x0)[1]))
    x_star, ref = race.reference_point(obj, x0)
    note(f"reference optimum: {ref.note()}")
    out = []
    for label, x in (("start (x0)", x0), ("reference optimum", x_star)):
        t0 = time.perf_counter()
        c = curvature.measure(obj, x)
        out.append(Measured(label, float(obj.loss(x)), c.grad_norm / g0, c, time.perf_counter() - t0))
    if offers(obj, "precondition_factor"):
        t0 = time.perf_counter()
        c, _ = curvature.preconditioned(obj, x_star)
        out.append(Measured("M^-1 H at optimum", out[-1].loss, out[-1].rel_grad_norm, c, time.perf_counter() - t0, True))
    return out, ref
