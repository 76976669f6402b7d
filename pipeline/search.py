"""How a sweep proposes hyperparameters: every point of a grid, or Optuna's TPE over ranges.

A search proposes the trials one at a time (``propose``), may watch a trial's validation curve
and stop it early (``listener``; Optuna's pruning), is told each result (``tell``), and says
which winners sit at the edge of what it searched (``edges``). ``pipeline.experiment.sweep`` runs
the trials, fits and logs them, whichever search it is given.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
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


class StudyError(Exception):
    """The study's storage cannot be opened or used (a damaged or foreign database, a missing
    driver): one line naming it, not blamed on the MLflow store."""


class GridSearch:
    """Every combination of ``grid``, or ``trials`` of them drawn without replacement by
    ``default_rng(seed)`` (a random search over the same grid). Keeps no state between runs."""

    def __init__(self, grid: dict[str, list], trials: int | None = None, seed: int = 0):
        self.grid = grid
        keys = list(grid)
        self.points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
        if trials is not None and trials < len(self.points):
            pick = np.random.default_rng(seed).choice(len(self.points), size=trials, replace=False)
            self.points = [self.points[j] for j in sorted(pick)]
        self.n_trials = len(self.points)
        self.resumed = 0

    @property
    def keys(self) -> set[str]:
        return set(self.grid)

    def check(self, make) -> None:
        """``make(params)`` for every point of the grid: an invalid one is a one-line error before any fit."""
        for params in self.points:
            make(params)

    def begin(self, identity: str) -> None:
        """Nothing kept between runs: every point is fitted."""

    def describe(self) -> dict:
        return {"search": "grid", "grid": repr(self.grid), "trials": self.n_trials}

    def propose(self, j: int) -> dict | None:
        return self.points[j] if j < len(self.points) else None

    def number(self, j: int) -> int:
        return j

    def listener(self, j: int):
        return None

    def others(self, on_wait=None) -> list[dict]:
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


class _Heartbeat:
    """While a trial is open, its ``heartbeat`` user attribute is set to the wall-clock time every
    ``every`` seconds from a thread, so that another process sharing the study can tell a trial
    being fitted from one a killed process left RUNNING (``TpeSearch.GRACE``)."""

    def __init__(self, trial, every: float):
        import threading
        self.trial, self.every, self.stop = trial, every, threading.Event()
        trial.set_user_attr("heartbeat", time.time())
        self.thread = threading.Thread(target=self._beat, daemon=True, name="study-heartbeat")
        self.thread.start()

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.trial.set_user_attr("heartbeat", time.time())
            except Exception:  # the trial was finished meanwhile (told, or failed as stale): nothing to keep alive
                return

    def end(self) -> None:
        self.stop.set()
        self.thread.join()


class TpeSearch:
    """Optuna's TPE sampler over log-uniform ranges (a range may depend on the weighting chosen)
    and categorical choices, seeded; its median pruner on the validation curve stops unpromising
    trials early.

    The study lives in ``storage`` under ``name`` plus the identity ``begin`` is given (a digest
    of everything that changes what a trial measures: the data and its split, the rule, the fixed
    hyperparameters; ``pipeline.experiment.tuning.study_identity``), so a rerun of the same sweep
    resumes it and any other sweep starts its own. The study itself says what is done: ``n_trials``
    counts the trials finished or being fitted by any process (a trial beyond them is told FAIL
    unfitted, so two sweeps on one study fit ``n_trials`` between them, not twice as many); a trial
    interrupted is told FAIL; one a killed process left RUNNING is failed once its heartbeat is
    older than ``GRACE`` seconds; the winner is chosen, after the other processes' trials have
    finished, over every finished trial of the study (``others``). A resumed run's sampler is
    seeded by (seed, trials so far), so it does not replay the start-up points already tried.
    """

    EDGE = 0.05  # a winner within 5 % of a range's ends, on the log scale, is at its edge
    BEAT = 5.0    # seconds between an open trial's heartbeats
    GRACE = 120.0  # a RUNNING trial whose heartbeat is older than this was left by a process that died
    OPEN_ATTEMPTS = 3  # opening the study is tried this often (a concurrent first use) before it is an error

    def __init__(self, space: dict, trials: int, seed: int = 0, storage: str | None = None, name: str = "sweep",
                 warmup_trials: int = 5, warmup_steps: int = 10, pruner=None):
        self.space, self.n_trials, self.seed, self.storage, self.name = space, trials, seed, storage, name
        self.warmup_trials, self.pruner = warmup_trials, pruner
        self.warmup_steps = warmup_steps
        self.study, self.resumed, self.began = None, 0, time.time()
        self._open: dict[int, object] = {}
        self._beats: dict[int, _Heartbeat] = {}
        self._mine: set[int] = set()

    @property
    def keys(self) -> set[str]:
        return set(self.space)

    def begin(self, identity: str = "") -> None:
        """Open (or create) the study ``name-identity`` and count what it holds."""
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        name = f"{self.name}-{identity}" if identity else self.name
        if self.study is not None and self.study.study_name == name:
            return
        for attempt in range(self.OPEN_ATTEMPTS):  # two processes creating one new storage race on its tables
            try:
                study = optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True,
                                            direction="minimize")
                break
            except Exception:
                if attempt == self.OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        self._fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        seed = self.seed if not trials else int(np.random.SeedSequence([self.seed, len(trials)]).generate_state(1)[0])
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.warmup_trials)
        study.pruner = self.pruner or optuna.pruners.MedianPruner(n_startup_trials=self.warmup_trials,
                                                                  n_warmup_steps=self.warmup_steps)
        self.study = study
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        self.resumed = sum(t.state in done and not t.user_attrs.get("surplus") for t in trials)

    def _fail_stale(self, study) -> None:
        """Tell FAIL every RUNNING trial whose heartbeat (or start) is older than ``GRACE``."""
        import optuna
        now = time.time()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            beat = t.user_attrs.get("heartbeat", t.datetime_start.timestamp() if t.datetime_start else 0.0)
            if t.number not in self._mine and now - beat > self.GRACE:
                try:
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                except Exception:  # another process failed or finished it first
                    pass

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
        """A stored trial's params under the model's names (``reg[count]`` -> ``reg``), in the
        space's order (the study keeps them in the order they were suggested)."""
        named = {key.split("[")[0]: value for key, value in stored.items()}
        return {key: named[key] for key in self.space if key in named}

    def check(self, make) -> None:
        """Nothing to check ahead: the ranges were checked when the space was made (``tpe_space``)."""

    def describe(self) -> dict:
        self.begin() if self.study is None else None
        return {"search": "tpe", "space": repr(self.space), "trials": self.n_trials,
                "study": self.study.study_name, "resumed_trials": self.resumed}

    def _counted(self, below: int) -> int:
        """Trials numbered below ``below`` that count towards ``n_trials``: finished (not failed),
        or being fitted."""
        import optuna
        s = optuna.trial.TrialState
        return sum(t.number < below and not t.user_attrs.get("surplus")
                   for t in self.study.get_trials(deepcopy=False, states=(s.COMPLETE, s.PRUNED, s.RUNNING)))

    def propose(self, j: int) -> dict | None:
        import optuna
        self.begin() if self.study is None else None
        self._fail_stale(self.study)
        if self._counted(1 << 62) >= self.n_trials:
            return None
        trial = self.study.ask()
        if self._counted(trial.number) >= self.n_trials:  # another process took the last one meanwhile
            trial.set_user_attr("surplus", True)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
        self._open[j] = trial
        self._mine.add(trial.number)
        self._beats[j] = _Heartbeat(trial, self.BEAT)
        return self._suggest(trial)

    def number(self, j: int) -> int:
        """Trial ``j`` of this run's number in the study (0-based; runs that resume count on)."""
        return self._open[j].number

    def others(self, on_wait=None) -> list[dict]:
        """The study's finished trials that this run did not fit (an earlier run's, or a concurrent
        one's), after waiting for the ones other processes are still fitting (``on_wait(n)`` once
        when there are ``n``); in the study's order, a trial left running by a killed process
        failed, not counted in place of a finished one. They count for the winner."""
        import optuna
        s = optuna.trial.TrialState
        waited = False
        while True:
            self._fail_stale(self.study)
            running = [t for t in self.study.get_trials(deepcopy=False, states=(s.RUNNING,))
                       if t.number not in self._mine]
            if not running:
                break
            if on_wait is not None and not waited:
                on_wait(len(running))
            waited = True
            time.sleep(1.0)
        states = {s.PRUNED: "pruned", s.FAIL: "interrupted"}

        def reason(t) -> str:
            when = "earlier run" if t.datetime_start and t.datetime_start.timestamp() < self.began else "another run"
            return f"{states[t.state]} ({when})" if t.state in states else when
        return [{"trial": t.number, **self._params(t.params),
                 "val_rmse": t.value if t.state == s.COMPLETE else float("nan"), "reason": reason(t), "run_id": None}
                for t in self.study.get_trials(deepcopy=False)
                if t.state.is_finished() and t.number not in self._mine and not t.user_attrs.get("surplus")]

    def listener(self, j: int):
        trial = self._open[j]

        def report(_name, record) -> None:
            if math.isfinite(record.val_rmse):
                trial.report(record.val_rmse, record.iteration)
                if trial.should_prune():
                    raise Pruned(f"pruned at iterate {record.iteration} (validation RMSE {record.val_rmse:.4f})")
        return report

    def _close(self, j: int):
        beat = self._beats.pop(j, None)
        if beat is not None:
            beat.end()
        return self._open.pop(j, None)

    def abandon(self, j: int) -> None:
        """Trial ``j`` was interrupted (Ctrl-C, an error): told FAIL, so the study never holds a
        trial RUNNING forever and a resumed run does not count it."""
        import optuna
        trial = self._close(j)
        if trial is not None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def tell(self, j: int, value: float | None) -> None:
        import optuna
        trial = self._close(j)
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _study_errors(method):
    """A failure of the study's storage inside ``method`` becomes a one-line ``StudyError``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (Pruned, StudyError):
            raise
        except Exception as exc:
            raise StudyError(f"the study storage {self.storage or '(in memory)'} failed: {_one_line(exc)}") from None
    return wrapper


for _method in ("begin", "propose", "tell", "abandon", "others"):
    setattr(TpeSearch, _method, _study_errors(getattr(TpeSearch, _method)))


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
    """The readable start of the name a TPE study of ``cfg`` is kept under (the space and the
    study's identity, a digest of what the trials measure, are appended): a rerun of the same sweep
    finds and resumes it; a sweep on other data, another split, rule or model does not."""
    data = cfg.data
    where = Path(data.train_file or data.dataset).parent.name or data.dataset
    return "-".join([where, cfg.model.model, optimizer, f"seed{cfg.seed}", f"split{data.seed}"])


def default_storage(data_dir: str) -> str:
    """``sqlite:///DATA_DIR/optuna.db`` (the folder created if missing)."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(data_dir).resolve() / 'optuna.db'}"
