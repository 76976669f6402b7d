"""Objectives: the protocol optimizers see, and the models that implement it."""

from pipeline.objectives.base import Objective
from pipeline.objectives.mf import WEIGHTINGS, BiasedMF

__all__ = ["BiasedMF", "Objective", "WEIGHTINGS"]
