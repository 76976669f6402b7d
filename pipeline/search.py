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
from pathlib import Path

import numpy as np


# `recsys sweep`'s defaults, kept here so the CLI and the peers benchmark run the same search.
# TPE: log-uniform ranges. The penalties' ranges depend on the weighting: a count-weighted reg is
# charged per rating, an unweighted one per row, about 50-130 times less per rating on MovieLens-like
# data (cmfrec's lambda 10 is our reg 10 with weighting none, close to reg 0.1 with count), so
# one range for both would spend most trials where one of them is useless.
DEFAULT_AXES = {"tpe": {"rank": [5, 100],
                        "reg": {"count": [0.003, 3.0], "none": [0.3, 300.0]},
                        "reg_bias": {"count": [0.0003, 3.0], "none": [0.03, 300.0]},
                        "weighting": ["count", "none"]},
                "grid": {"rank": [10, 20, 50], "reg": [0.03, 0.05, 0.1], "reg_bias": [0.05], "weighting": ["count"]}}
DEFAULT_TRIALS = 30   # tpe's trials in a study
DEFAULT_PATIENCE = 10  # a trial ends this many iterations after its best validation RMSE
CONDITION = "weighting"  # the choice a range may depend on (a dict of ranges, one per choice)


def tpe_space(axes: dict) -> dict:
    """TPE's space from sweep axes: a numeric axis is a log-uniform ``Range(LOW, HIGH)`` (an
    integer one for the rank), or a dict of them, one per weighting (their union for a model
    without a weighting); ``weighting`` is a choice. ValueError names a range that is not one."""
    def one(key: str, values) -> Range:
        if len(values) != 2 or not 0 < values[0] < values[1]:
            raise ValueError(f"--{key.replace('_', '-')}s with --search tpe is a range LOW,HIGH with "
                             f"0 < LOW < HIGH, got {','.join(map(str, values))}")
        return Range(values[0], values[1], integer=key == "rank")

    space = {}
    for key, values in axes.items():
        if key == CONDITION:
            space[key] = tuple(values)
        elif isinstance(values, dict) and CONDITION not in axes:  # a model without a weighting: their union
            space[key] = one(key, [min(v[0] for v in values.values()), max(v[1] for v in values.values())])
        elif isinstance(values, dict):
            choices = tuple(axes[CONDITION])
            space[key] = {c: one(key, values[c]) for c in choices if c in values}
            if set(space[key]) != set(choices):
                raise ValueError(f"--{key.replace('_', '-')}s: no range for weighting "
                                 f"{', '.join(sorted(set(choices) - set(space[key])))}")
        else:
            space[key] = one(key, values)
    return space


def space_label(space: dict) -> str:
    """The space in a few characters, for a study's name: ``rank5-100-regcount0.003-3+none0.3-300-...``."""
    def r(v: Range) -> str:
        return f"{v.low:g}-{v.high:g}"
    return "-".join(f"{k}{r(v)}" if isinstance(v, Range) else
                    f"{k}{'+'.join(f'{c}{r(x)}' for c, x in v.items())}" if isinstance(v, dict) else
                    f"{k}{'+'.join(v)}" for k, v in space.items())


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

    def check(self, make) -> None:
        """``make(params)`` for every point of the grid: an invalid one is a one-line error before any fit."""
        for params in self.points:
            make(params)

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

    def abandon(self, j: int) -> None:
        """Trial ``j`` was interrupted: a grid keeps no state, nothing to record."""

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
    """Optuna's TPE sampler over log-uniform ranges (a range may depend on the weighting chosen)
    and categorical choices, seeded; its median
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

    @staticmethod
    def _name(key: str, choice: str | None) -> str:
        """The parameter's name in the study: ``reg[count]`` for a range that depends on the
        weighting (TPE models each branch from the trials that took it), else ``key``."""
        return key if choice is None else f"{key}[{choice}]"

    def _suggest(self, trial) -> dict:
        params = {}
        if CONDITION in self.space:
            params[CONDITION] = trial.suggest_categorical(CONDITION, list(self.space[CONDITION]))
        for key, what in self.space.items():
            if key == CONDITION:
                continue
            choice = params.get(CONDITION) if isinstance(what, dict) else None
            r = what[choice] if isinstance(what, dict) else what
            name = self._name(key, choice)
            params[key] = (trial.suggest_int(name, int(r.low), int(r.high), log=True) if r.integer
                           else trial.suggest_float(name, r.low, r.high, log=True))
        return {key: params[key] for key in self.space}

    def _params(self, stored: dict) -> dict:
        """A stored trial's params under the model's names (``reg[count]`` -> ``reg``)."""
        return {key.split("[")[0]: value for key, value in stored.items()}

    def check(self, make) -> None:
        """Nothing to check ahead: the ranges were checked when the space was made (``tpe_space``)."""

    def describe(self) -> dict:
        return {"search": "tpe", "space": repr(self.space), "trials": self.n_trials,
                "study": self.study.study_name, "resumed_trials": self.resumed}

    def propose(self, j: int) -> dict | None:
        if self.resumed + j >= self.n_trials:
            return None
        trial = self.study.ask()
        self._open[j] = trial
        return self._suggest(trial)

    def previous(self) -> list[dict]:
        """The trials an earlier, interrupted run of this study finished (every finished one, in the
        study's order, whatever lies between them: a trial left running by a killed process is
        skipped, not counted in place of a finished one): they count for the winner."""
        import optuna
        done = optuna.trial.TrialState.COMPLETE
        reasons = {done: "earlier run", optuna.trial.TrialState.PRUNED: "pruned (earlier run)",
                   optuna.trial.TrialState.FAIL: "interrupted (earlier run)"}
        return [{**self._params(t.params), "val_rmse": t.value if t.state == done else float("nan"),
                 "reason": reasons[t.state], "run_id": None}
                for t in self.study.trials if t.state.is_finished()]

    def listener(self, j: int):
        trial = self._open[j]

        def report(_name, record) -> None:
            if math.isfinite(record.val_rmse):
                trial.report(record.val_rmse, record.iteration)
                if trial.should_prune():
                    raise Pruned(f"pruned at iterate {record.iteration} (validation RMSE {record.val_rmse:.4f})")
        return report

    def abandon(self, j: int) -> None:
        """Trial ``j`` was interrupted (Ctrl-C, an error): told FAILED, so the study never holds a
        trial RUNNING forever and a resumed run does not count it."""
        import optuna
        trial = self._open.pop(j, None)
        if trial is not None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

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
            if isinstance(what, dict):
                what = what.get(best.get(CONDITION))
            if not isinstance(what, Range) or key not in best:
                continue
            lo, hi = math.log(what.low), math.log(what.high)
            at = (math.log(best[key]) - lo) / (hi - lo) if hi > lo else 0.5
            if at <= self.EDGE or at >= 1 - self.EDGE:
                side = "top" if at >= 1 - self.EDGE else "bottom"
                out.append(f"{key} = {best[key]:g} is at the {side} of the range searched ({what.low:g} to "
                           f"{what.high:g}): widen the range past it")
        return out


def _grid(axes: dict, trials: int | None, seed: int, storage: str, name: str) -> GridSearch:
    return GridSearch(axes, trials, seed)


def _tpe(axes: dict, trials: int | None, seed: int, storage: str, name: str) -> TpeSearch:
    space = tpe_space(axes)
    return TpeSearch(space, trials or DEFAULT_TRIALS, seed=seed, storage=storage, name=f"{name}-{space_label(space)}")


SEARCHES = {"tpe": _tpe, "grid": _grid}  # `recsys sweep --search` -> how to build it


def make_search(kind: str, given: dict, own: set[str], trials: int | None, seed: int, make, storage: str,
                name: str):
    """The search ``recsys sweep --search KIND`` runs. ``given``: hyperparameter -> the values or
    range the user gave (None: this search's default, for a hyperparameter the model has, ``own``);
    an axis given for a hyperparameter the model lacks, or a choice it does not accept, is a
    ValueError from ``make(params)`` (the model's spec). A TPE study is kept in ``storage`` under
    ``name`` and the space, so a rerun of the same sweep resumes it."""
    axes = {k: list(v) if v is not None else DEFAULT_AXES[kind][k] for k, v in given.items() if k in own or v is not None}
    for key, values in axes.items():
        for value in (values if isinstance(values, list) and all(isinstance(v, str) for v in values) else []):
            make({key: value})  # a choice the model does not have: its one-line error
    return SEARCHES[kind](axes, trials, seed, storage, name)


def study_name(cfg, optimizer: str) -> str:
    """The name a TPE study of ``cfg`` is kept under (its space is appended): a rerun of the same
    sweep finds and resumes it."""
    data = cfg.data
    where = Path(data.train_file or data.dataset).parent.name or data.dataset
    return "-".join([where, cfg.model.model, optimizer, f"seed{cfg.seed}", f"split{data.seed}"])


def default_storage(data_dir: str) -> str:
    """``sqlite:///DATA_DIR/optuna.db`` (the folder created if missing)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(data_dir).resolve() / 'optuna.db'}"
