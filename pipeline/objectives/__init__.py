"""Objectives: the protocol optimizers see, the models that implement it, and their registry.

``MODELS`` maps a model name (``--model``) to its :class:`ModelSpec`. Adding a model is one module
with a ``SPEC`` and one line here (docs/adding-a-model.md).
"""

from pipeline.objectives.base import Objective, offers
from pipeline.objectives.engine import KERNELS, LocalEngine
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


def build_objective(train, model_config, engine=None):
    """The objective ``model_config`` names, on ``train``, its sums where ``engine`` says (default:
    this machine, numba where installed); an engine the model has no implementation for is a
    one-line ValueError."""
    spec = model_spec(model_config.model)
    engine = engine or LocalEngine()
    if engine.backend not in spec.backends:
        raise ValueError(f"model {spec.name} runs on {', '.join(spec.backends)}, not on {engine.backend}; "
                         f"run --model {spec.name} on --backend {spec.backends[0]}")
    return spec.build(train, model_config.hyper, engine)


BiasedMF = mf.BiasedMF
LogisticRatings = logreg.LogisticRatings
WEIGHTINGS = mf.WEIGHTINGS

__all__ = ["BiasedMF", "KERNELS", "LocalEngine", "LogisticRatings", "MODELS", "ModelSpec", "Objective", "WEIGHTINGS",
           "build_objective", "hyperparameter", "model_spec", "offers"]
