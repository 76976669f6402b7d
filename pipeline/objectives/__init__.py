"""Objectives: the protocol optimizers see, the models that implement it, and their registry.

``MODELS`` maps a model name (``--model``) to its :class:`ModelSpec`. Adding a model is one module
with a ``SPEC`` and one line here (docs/adding-a-model.md).
"""

from pipeline.objectives.base import Objective
from pipeline.objectives.spec import ModelSpec, hyperparameter
from pipeline.objectives import logreg, mf, svdpp

MODELS: dict[str, ModelSpec] = {
    "mf": mf.SPEC,
    "logreg": logreg.SPEC,
    "svdpp": svdpp.SPEC,
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


def build_objective(train, model_config):
    """The objective ``model_config`` names, on ``train``."""
    return model_spec(model_config.model).build(train, model_config.hyper)


BiasedMF = mf.BiasedMF
LogisticRatings = logreg.LogisticRatings
KERNELS, WEIGHTINGS = mf.KERNELS, mf.WEIGHTINGS

__all__ = ["BiasedMF", "KERNELS", "LogisticRatings", "MODELS", "ModelSpec", "Objective", "WEIGHTINGS",
           "build_objective", "hyperparameter", "model_spec"]
