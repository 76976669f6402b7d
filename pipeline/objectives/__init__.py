"""Objectives: the protocol optimizers see, and the models that implement it.

``MODELS`` maps a model name (``--model``) to a constructor ``(train, ModelConfig) -> objective``.
"""

from pipeline.objectives.base import Objective
from pipeline.objectives.logreg import LogisticRatings
from pipeline.objectives.mf import KERNELS, WEIGHTINGS, BiasedMF

MODELS = {
    "mf": lambda train, m: BiasedMF(train, rank=m.rank, reg=m.reg, reg_bias=m.reg_bias, weighting=m.weighting,
                                    init_scale=m.init_scale, kernel=m.kernel),
    "logreg": lambda train, m: LogisticRatings(train, reg=m.reg, threshold=m.threshold),
}


def build_objective(train, model_config):
    """The objective named by ``model_config.model`` on ``train``."""
    if model_config.model not in MODELS:
        raise ValueError(f"unknown model {model_config.model!r}; choose from {', '.join(MODELS)}")
    return MODELS[model_config.model](train, model_config)


__all__ = ["BiasedMF", "KERNELS", "LogisticRatings", "MODELS", "Objective", "WEIGHTINGS", "build_objective"]
