"""Model-specific solvers: ALS and per-rating SGD.

They need more than the objective protocol: the model must offer ``als_sweep(x)`` or
``sgd_epoch(x, lr, rng)``. Neither needs the gradient, so the gradient at each iterate that the
shared stopping rule uses is monitor cost (``n_monitor_evals``), not charged to the method; their
own work is counted in data passes (an ALS sweep reads the ratings twice, an SGD epoch once).
"""

from __future__ import annotations

import numpy as np

from pipeline.optim.base import CountedObjective, Monitor
from pipeline.optim.registry import register


@register("als", "alternating least squares: exact ridge solves for users, then items (with biases)",
          needs=("als_sweep",),
          notes=('Alternating least squares: exact ridge solves for every user (factors and bias), then every '
                 'item; two data passes per sweep; the objective never increases.'))
def als(objective: CountedObjective, x0: np.ndarray, monitor: Monitor) -> tuple[np.ndarray, str]:
    x = x0
    while True:
        objective.solver_passes(2)
        x = objective.objective.als_sweep(x)
        if monitor.check(x):
            return x, monitor.reason


@register("sgd", "per-rating SGD (Surprise's SVD), on the count-weighted objective", needs=("sgd_epoch",),
          notes=("Per-rating stochastic gradient descent (Surprise's SVD update) with a 1/t step schedule; one "
                 'data pass per epoch, cheap per pass, slow to the exact minimum.'))
def sgd(objective: CountedObjective, x0: np.ndarray, monitor: Monitor, lr: float = 0.01,
        half_life: float = 20.0, seed: int = 0) -> tuple[np.ndarray, str]:
    """Epochs of per-rating updates in a fresh random order, step ``lr / (1 + epoch / half_life)``
    (a Robbins-Monro schedule: the steps sum to infinity, their squares do not, so SGD can reach
    the minimizer, slowly; a constant step only reaches a noise ball around it).

    ``sgd_epoch`` is the objective's: one whose per-rating steps would minimize another function
    than its loss (MF with ``weighting="none"``) raises, and the method fails alone saying so.
    """
    rng = np.random.default_rng(seed)
    x, epoch = x0, 0
    while True:
        objective.solver_passes(1)
        x = objective.objective.sgd_epoch(x, lr / (1.0 + epoch / half_life), rng)
        epoch += 1
        if monitor.check(x):
            return x, monitor.reason
