"""The objective protocol: what an optimizer may ask of a model.

An objective is a smooth function of one flat float64 parameter vector ``x`` of length
``n_params``. Optimizers see only this protocol, so any model that implements it gets every
optimizer, the shared stopping rule, tracking and the CLI for free.

Contract (scipy's ``fun/jac/hessp`` contract, made explicit):

``init(rng) -> x0``
    A starting point, drawn from ``rng`` only (reproducible under a seed).
``loss_grad(x) -> (f, g)``
    The value ``f(x)`` (float) and gradient ``∇f(x)`` (array, shape ``(n_params,)``).
    Counts as one pass over the data.
``hessp(x, v) -> H(x) v``
    The exact Hessian-vector product, shape ``(n_params,)``. Must not form ``H``. May reuse
    state cached by the last ``loss_grad``/``hessp`` at the same ``x`` (scipy calls it many
    times at one ``x``).
``predict(x, users, items) -> ratings``
    Predictions for index pairs (what evaluation needs).
``scorer(x) -> Scorer``
    What the fit serves (``pipeline.objectives.serving``): predictions and every item's score per
    user, in inner indices, -1 for an id training never saw.
``target(ratings) -> values`` and ``output_range(rating_scale) -> (lo, hi)``
    What predictions are scored against and clipped to; :class:`PredictsRatings` gives the
    defaults (the rating itself, the rating scale).

Optional, offered where the math allows: ``gnvp`` (Gauss-Newton product, positive
semi-definite), ``als_sweep`` and ``sgd_epoch`` (block and stochastic methods), ``precondition``
(an SPD approximation of the inverse Hessian, with ``precondition_passes``, what building it costs
in data passes), ``warm_up`` (compile kernels before any clock
starts), ``tune_threads`` (run on as many threads as pay, measured before each fit). An optimizer
says which of these it needs (``register(..., needs=...)``); a comparison runs it only where the
model offers them (:func:`offers`). A model whose offer depends on how it is computed declares it
with a method ``offers(capability) -> bool`` (biased MF offers what its sums implementation lists).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Objective(Protocol):
    n_params: int

    def init(self, rng: np.random.Generator) -> np.ndarray: ...

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]: ...

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray: ...

    def predict(self, x: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...

    def scorer(self, x: np.ndarray): ...

    def target(self, ratings: np.ndarray) -> np.ndarray: ...

    def output_range(self, rating_scale: tuple[float, float]) -> tuple[float, float]: ...


class PredictsRatings:
    """Defaults for a model that predicts the rating itself: scored against it, clipped to the scale."""

    def target(self, ratings: np.ndarray) -> np.ndarray:
        return np.asarray(ratings, np.float64)

    def output_range(self, rating_scale: tuple[float, float]) -> tuple[float, float]:
        return tuple(rating_scale)


VECTORS_HELD = 24  # parameter-sized vectors a fit may hold at once (L-BFGS: 10 pairs, x, g, d, ...)


def check_size(n_params: int, what: str, block: int = 0) -> None:
    """ValueError, before anything is allocated, when ``VECTORS_HELD`` vectors of ``n_params``
    float64, and ``VECTORS_HELD`` square blocks of side ``block`` (the normal equations of ALS and
    the block preconditioner), would not fit in ``memory_limit()``: one line saying the sizes
    (``what`` names the problem and the setting to lower)."""
    from pipeline import limits
    need, limit = VECTORS_HELD * 8 * (n_params + block * block), limits.memory_limit()
    if need > limit:
        blocks = f" and {block} x {block} blocks" if block else ""
        raise ValueError(f"{what}: {n_params:,} parameters, and a fit keeps up to {VECTORS_HELD} vectors of them"
                         f"{blocks} ({need / 2**30:.1f} GiB), more than the {limit / 2**30:.1f} GiB this process "
                         "may use")


def offers(objective, capability: str) -> bool:
    """Whether ``objective`` computes the optional operation ``capability``: it has the method,
    and, where it declares its offer (``objective.offers``), declares this one."""
    if not callable(getattr(objective, capability, None)):
        return False
    declared = getattr(objective, "offers", None)
    return declared(capability) if callable(declared) else True
