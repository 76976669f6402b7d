"""How a sweep proposes hyperparameters: every point of a grid, or Optuna's TPE over ranges.

A search proposes the trials one at a time (``propose``), may watch a trial's validation curve
and stop it early (``listener``; Optuna's pruning), is told each result (``tell``), and says
which winners sit at the edge of what it searched (``edges``). ``pipeline.experiment.sweep`` runs
the trials, fits and logs them, whichever search it is given.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np


class Pruned(Exception):
    """A trial stopped early by the search (its validation curve is not promising)."""


class GridSearch:
    """Every combination of ``grid``, or ``trials`` of them drawn without replacement by
    ``default_rng(seed)`` (a random search over the same grid)."""

    def __init__(self, grid: dict[str, list], trials: int | None = None, seed: int = 0):
        self.grid = grid
        keys = list(grid)
        self.points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
        if trials is not None and trials < len(self.points):
            pick = np.random.default_rng(seed).choice(len(self.points), size=trials, replace=False)
            self.points = [self.points[j] for j in sorted(pick)]
        self.n_trials = len(self.points)

    def describe(self) -> dict:
        return {"search": "grid", "grid": repr(self.grid), "trials": self.n_trials}

    def propose(self, j: int) -> dict | None:
        return self.points[j] if j < len(self.points) else None

    def listener(self, j: int):
        return None

    def previous(self) -> list[dict]:
        return []

    def tell(self, j: int, value: float | None) -> None:
        pass

    def edges(self, best: dict) -> list[str]:
        """The numeric axes (of two values or more) whose winning value is the grid's smallest or
        largest: there the optimum may lie outside the range searched."""
        out = []
        for key, values in self.grid.items():
            numbers = sorted(set(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)))
            if len(numbers) >= 2 and best.get(key) in (numbers[0], numbers[-1]):
                side = "largest" if best[key] == numbers[-1] else "smallest"
                out.append(f"{key} = {best[key]:g} is the {side} value searched ({numbers[0]:g} to {numbers[-1]:g}): "
                           f"widen the grid past it")
        return out


@dataclass(frozen=True)
class Range:
    """A log-uniform range of a numeric hyperparameter (an integer one when ``integer``)."""

    low: float
    high: float
    integer: bool = False


class TpeSearch:
    """Optuna's TPE sampler over log-uniform ranges (and categorical choices), seeded; its median
    pruner on the validation curve stops unpromising trials early; the study lives in ``storage``
    under ``name``, so an interrupted sweep resumes where it stopped (trials already finished are
    counted, and kept)."""

    EDGE = 0.05  # a winner within 5 % of a range's ends, on the log scale, is at its edge

    def __init__(self, space: dict, trials: int, seed: int = 0, storage: str | None = None, name: str = "sweep",
                 warmup_trials: int = 5, warmup_steps: int = 10):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.n_trials = space, trials
        self.study = optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=warmup_trials),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=warmup_trials, n_warmup_steps=warmup_steps))
        done = [t for t in self.study.trials if t.state.is_finished()]
        self.resumed = len(done)
        self._open: dict[int, object] = {}
        self._distributions = {}
        for key, what in space.items():
            if isinstance(what, Range):
                cls = optuna.distributions.IntDistribution if what.integer else optuna.distributions.FloatDistribution
                self._distributions[key] = cls(what.low, what.high, log=True)
            else:
                self._distributions[key] = optuna.distributions.CategoricalDistribution(list(what))

    def describe(self) -> dict:
        return {"search": "tpe", "space": repr(self.space), "trials": self.n_trials,
                "study": self.study.study_name, "resumed_trials": self.resumed}

    def propose(self, j: int) -> dict | None:
        if self.resumed + j >= self.n_trials:
            return None
        trial = self.study.ask(self._distributions)
        self._open[j] = trial
        return dict(trial.params)

    def previous(self) -> list[dict]:
        """The trials an earlier, interrupted run of this study finished: they count for the winner."""
        import optuna
        return [{**t.params, "val_rmse": t.value if t.state == optuna.trial.TrialState.COMPLETE else float("nan"),
                 "reason": "earlier run" if t.state == optuna.trial.TrialState.COMPLETE else "pruned (earlier run)",
                 "run_id": None}
                for t in self.study.trials[:self.resumed]]

    def listener(self, j: int):
        trial = self._open[j]

        def report(_name, record) -> None:
            if math.isfinite(record.val_rmse):
                trial.report(record.val_rmse, record.iteration)
                if trial.should_prune():
                    raise Pruned(f"pruned at iterate {record.iteration} (validation RMSE {record.val_rmse:.4f})")
        return report

    def tell(self, j: int, value: float | None) -> None:
        import optuna
        trial = self._open.pop(j)
        if value is None:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, value)

    def edges(self, best: dict) -> list[str]:
        out = []
        for key, what in self.space.items():
            if not isinstance(what, Range) or key not in best:
                continue
            lo, hi = math.log(what.low), math.log(what.high)
            at = (math.log(best[key]) - lo) / (hi - lo) if hi > lo else 0.5
            if at <= self.EDGE or at >= 1 - self.EDGE:
                side = "top" if at >= 1 - self.EDGE else "bottom"
                out.append(f"{key} = {best[key]:g} is at the {side} of the range searched ({what.low:g} to "
                           f"{what.high:g}): widen the range past it")
        return out
