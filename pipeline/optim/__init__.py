"""Optimizers: one registry, one result type, one shared stopping rule."""

from pipeline.optim import block, gd, newton_pcg, scipy_methods  # noqa: F401  (register the methods)
from pipeline.optim.base import (STOP_REASONS, CountedObjective, IterationRecord, Monitor,
                                 OptimizeResult, StoppingRule)
from pipeline.optim.registry import REGISTRY, minimize, names, register

__all__ = ["REGISTRY", "STOP_REASONS", "CountedObjective", "IterationRecord", "Monitor",
           "OptimizeResult", "StoppingRule", "minimize", "names", "register"]
