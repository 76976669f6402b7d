"""Optimizers: one registry, one result type, one shared stopping rule."""

from pipeline.optim import block, gd, newton_pcg, scipy_methods  # noqa: F401  (register the methods)
from pipeline.optim.base import (STOP_REASONS, BudgetSpent, CountedObjective, IterationRecord, Monitor,
                                 OptimizeResult, StoppingRule)
from pipeline.optim.registry import REGISTRY, NotApplicable, minimize, names, not_applicable, register

__all__ = ["REGISTRY", "STOP_REASONS", "BudgetSpent", "CountedObjective", "IterationRecord", "Monitor",
           "NotApplicable", "OptimizeResult", "StoppingRule", "minimize", "names", "not_applicable", "register"]
