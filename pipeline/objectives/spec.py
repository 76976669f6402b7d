"""What a model is to the rest of the pipeline: a :class:`ModelSpec`, registered by name.

A model is one module holding its objective (the protocol in ``base.py``), its hyperparameters as
a frozen dataclass of :func:`hyperparameter` fields, and a ``SPEC``; one line in
``pipeline/objectives/__init__.py`` registers it. From the spec alone the pipeline builds the
objective, generates the CLI options and the MLflow params, fits the baselines, serves the fit
and writes the report's text: no generic module asks which model it holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


def hyperparameter(default, help: str, *, low: float | None = None, low_open: bool = False,
                   choices: tuple[str, ...] | None = None):
    """A hyperparameter field: its default, one line of help, and its valid range (``low``,
    exclusive with ``low_open``) or ``choices``. The CLI option and its checks are made from these."""
    return field(default=default, metadata={"help": help, "low": low, "low_open": low_open, "choices": choices})


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about one model.

    ``build(train, hyper, engine)``: the objective on ``train``, its sums computed where ``engine``
    says (``pipeline.objectives.engine``); ``backends``: the engines (``engine.backend``) that
    implement this model (a model whose sums are numpy code of its own ignores the engine).
    ``baselines(train, hyper)``: ``{name: predict(users, items)}`` the model is compared against.
    ``title``, ``derivation``: the report's words for it (Markdown). ``headline``: the
    hyperparameters that name a problem in figure titles."""

    name: str
    summary: str
    hyper: type
    build: Callable[..., Any]
    baselines: Callable[..., dict]
    title: str
    derivation: str
    headline: tuple[str, ...] = ()
    backends: tuple[str, ...] = ("local",)

    def hyperparameters(self) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(self.hyper)

    def make(self, **values) -> Any:
        """The hyperparameters with ``values`` over the defaults; an unknown name is a ValueError."""
        known = {f.name for f in self.hyperparameters()}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ValueError(f"model {self.name} has no hyperparameter {unknown[0]!r} "
                             f"(its hyperparameters: {', '.join(sorted(known)) or 'none'})")
        hyper = self.hyper(**values)
        for f in self.hyperparameters():
            value, meta = getattr(hyper, f.name), f.metadata
            if meta.get("choices") and value not in meta["choices"]:
                raise ValueError(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
            if meta.get("low") is not None and not (value > meta["low"] if meta["low_open"] else value >= meta["low"]):
                raise ValueError(f"{f.name} must be {'>' if meta['low_open'] else '>='} {meta['low']:g}, got {value!r}")
        return hyper

    def describe(self, hyper) -> str:
        """``rank 10, reg 0.1`` from the headline hyperparameters."""
        return ", ".join(f"{k} {getattr(hyper, k):g}" if isinstance(getattr(hyper, k), float)
                         else f"{k} {getattr(hyper, k)}" for k in self.headline)


def constant(value: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A predictor of ``value`` for every pair (the global-mean kind of baseline)."""
    return lambda users, items: np.full(len(users), float(value))
