"""One result type, one stopping rule, one cost ledger for every optimizer.

The shared stopping rule
------------------------
An optimizer reports every iterate to a :class:`Monitor`, which applies the same test to every
method, in this order, and stops at the first that holds:

1. ``"converged"``: relative gradient norm ``||g_k|| / ||g_0|| <= gtol`` (2-norm);
2. ``"diverged"``: the objective or gradient is not finite;
3. ``"max_passes"``: data passes ``>= max_passes``, the budget: a data pass is the unit of work
   every method pays in (a loss, a loss+gradient, a Hessian-vector product, half an ALS sweep, an
   SGD epoch), so one budget means the same for all of them. The budget holds exactly: an
   operation that would take the count past ``max_passes`` is refused before it runs
   (:class:`BudgetSpent`), inside an inner solve or a line search too, and the method ends at its
   last accepted iterate, its spent passes (at most the budget) recorded;
4. ``"max_seconds"``: optimizer wall time ``>= max_seconds``, off by default: seconds depend on
   the machine and its load, so a run that stops on them is machine-dependent (the table says so);
   ``"max_iter"``: ``k >= max_iter`` iterations, off by default: an iteration of Newton-CG costs
   tens of passes and one of L-BFGS about one, so an iteration cap is a different budget for each
   method and decides the race by its rules rather than by the methods;
5. ``"early_stopped"`` (only with ``patience``): validation RMSE has not improved for ``patience``
   iterations; the result is then the iterate with the best validation RMSE (restored).

A method that ends on its own test (scipy's line search fails, say) reports ``"method"`` and
scipy's message. scipy's own tolerances are switched off where possible so that the shared rule,
not a method's private one, decides.

Cost accounting
---------------
:class:`CountedObjective` counts what the optimizer asks of the objective: a ``loss_grad`` is one
function and one gradient evaluation, a ``loss`` one function evaluation, a ``hessp`` one
Hessian-vector product. The clock (``seconds``) is optimizer time: the monitor's own work
(validation RMSE, listeners such as progress and tracking, and re-evaluating a point the optimizer
did not evaluate, which it counts as ``n_monitor_evals``) is measured and subtracted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pipeline.objectives.base import Objective

STOP_REASONS = ("converged", "diverged", "max_iter", "max_seconds", "max_passes", "early_stopped", "method")


@dataclass(frozen=True)
class StoppingRule:
    gtol: float = 1e-5
    max_iter: int | None = None
    max_seconds: float | None = None
    patience: int | None = None
    # The budget is data passes, the same unit of work for every method. 4,000 passes let every
    # convergent method of make train converge on the default data (L-BFGS needs 2,138, ALS 2,150,
    # Newton-CG 3,894; docs/optimizers.md). The stopping defaults of every command come from here.
    max_passes: int | None = 4000

    def __post_init__(self) -> None:
        if self.max_passes is not None and self.max_passes < 1:
            raise ValueError(f"max_passes must be positive, got {self.max_passes}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.patience}")
        if not self.gtol >= 0:
            raise ValueError(f"gtol must be non-negative, got {self.gtol}")
        if self.max_iter is not None and self.max_iter < 0:
            raise ValueError(f"max_iter must be non-negative, got {self.max_iter}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds}")


    def explain(self, reason: str, record: "IterationRecord") -> str:
        """What ``reason`` means for a reader, with the numbers of the last iterate."""
        r, rel = record, f"||g||/||g0|| = {record.rel_grad_norm:.1e}"
        if reason == "converged":
            return f"converged: {rel} <= {self.gtol:g}"
        if reason == "diverged":
            return "diverged: the objective or its gradient is not finite"
        if reason == "max_passes":
            return f"budget spent: {r.data_passes} data passes (of {self.max_passes}), {rel}"
        if reason == "max_seconds":
            return f"time budget spent: {r.seconds:.1f} s (of {self.max_seconds:g}; machine-dependent), {rel}"
        if reason == "max_iter":
            return f"iteration cap: {r.iteration} iterations, {rel}"
        if reason == "early_stopped":
            return f"early stop: validation RMSE did not improve for {self.patience} iterations"
        return reason


@dataclass(frozen=True)
class IterationRecord:
    """One row of an optimizer's history (counts are cumulative)."""

    iteration: int
    loss: float
    grad_norm: float
    rel_grad_norm: float
    seconds: float
    n_fun: int
    n_grad: int
    n_hessp: int
    val_rmse: float = float("nan")
    data_passes: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class OptimizeResult:
    """What every optimizer returns; ``history[-1]`` describes ``x``."""

    optimizer: str
    x: np.ndarray
    reason: str
    message: str
    history: list[IterationRecord] = field(default_factory=list)
    n_monitor_evals: int = 0
    n_negative_curvature: int = 0

    @property
    def final(self) -> IterationRecord:
        return self.history[-1]

    @property
    def converged(self) -> bool:
        return self.reason == "converged"

    def summary(self) -> dict:
        last = self.final
        return {
            "optimizer": self.optimizer, "iterations": last.iteration, "n_fun": last.n_fun,
            "n_grad": last.n_grad, "n_hessp": last.n_hessp, "seconds": last.seconds,
            "train_loss": last.loss, "grad_norm": last.grad_norm, "rel_grad_norm": last.rel_grad_norm,
            "val_rmse": last.val_rmse, "reason": self.reason, "data_passes": last.data_passes,
            "n_negative_curvature": self.n_negative_curvature,
        }


class BudgetSpent(Exception):
    """The next operation would take the method past its data-pass budget; it was not run."""


class CountedObjective:
    """Wraps an :class:`Objective`, counting calls and remembering recent ``(x, f, g)``.

    With ``max_passes`` set, every operation is charged before it runs and refused
    (:class:`BudgetSpent`) when it would take :attr:`data_passes` past the budget."""

    def __init__(self, objective: Objective, memory: int = 4, max_passes: int | None = None):
        self.objective = objective
        self.max_passes = max_passes
        self.n_params = objective.n_params
        self.n_fun = self.n_grad = self.n_hessp = 0
        self.n_other_passes = 0      # passes of model-specific solvers (an ALS sweep is 2, an SGD epoch 1)
        self.n_negative_curvature = 0  # hessp directions v with v.Hv < 0 (what truncated CG meets)
        self._recent: list[tuple[np.ndarray, float, np.ndarray]] = []
        self._memory = memory

    def charge(self, passes: int) -> None:
        """Refuse an operation of ``passes`` data passes that the budget has no room for."""
        if self.max_passes is not None and self.data_passes + passes > self.max_passes:
            raise BudgetSpent

    def solver_passes(self, passes: int) -> None:
        """Charge a model-specific solver's work (an ALS sweep is 2 passes, an SGD epoch 1)
        before it runs."""
        self.charge(passes)
        self.n_other_passes += passes

    def loss_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.charge(1)
        self.n_fun += 1
        self.n_grad += 1
        f, g = self.objective.loss_grad(x)
        self._recent.append((np.array(x, copy=True), f, g))
        del self._recent[:-self._memory]
        return f, g

    def loss(self, x: np.ndarray) -> float:
        """Value only, where the objective offers a cheaper ``loss``; else via ``loss_grad``."""
        if not hasattr(self.objective, "loss"):
            return self.loss_grad(x)[0]
        self.charge(1)
        self.n_fun += 1
        return self.objective.loss(x)

    def hessp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        self.charge(1)
        self.n_hessp += 1
        hv = self.objective.hessp(x, v)
        if float(v @ hv) < 0:
            self.n_negative_curvature += 1
        return hv

    def gnvp(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        self.charge(1)
        self.n_hessp += 1
        return self.objective.gnvp(x, v)

    @property
    def data_passes(self) -> int:
        """Passes over the ratings: one per loss (with or without gradient), one per
        Hessian-vector product (it reads every rating once; measured at 0.8-0.9 of a
        loss+gradient in time, see docs/optimizers.md), plus model-specific solver passes."""
        return self.n_fun + self.n_hessp + self.n_other_passes

    def recall(self, x: np.ndarray) -> tuple[float, np.ndarray] | None:
        for xr, f, g in reversed(self._recent):
            if xr.shape == x.shape and np.array_equal(xr, x):
                return f, g
        return None


Listener = Callable[[str, IterationRecord], None]


class Monitor:
    """Applies the shared stopping rule and records the history; see the module docstring.

    ``validate(x) -> rmse`` (optional) is evaluated at every iterate; ``listeners`` are called
    as ``listener(optimizer_name, record)`` after each iterate (progress, tracking).
    """

    def __init__(self, name: str, counted: CountedObjective, rule: StoppingRule,
                 validate: Callable[[np.ndarray], float] | None = None,
                 listeners: tuple[Listener, ...] = ()):
        self.name, self.counted, self.rule = name, counted, rule
        self.validate, self.listeners = validate, listeners
        self.history: list[IterationRecord] = []
        self.reason: str | None = None
        self.last_x: np.ndarray | None = None
        self.n_monitor_evals = 0
        self._g0: float | None = None
        self.best_val = float("inf")
        self.best_val_x: np.ndarray | None = None
        self._best_val_iter = 0
        self._start = time.perf_counter()
        self._overhead = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._start - self._overhead

    def check(self, x: np.ndarray, f: float | None = None, g: np.ndarray | None = None) -> bool:
        """Record iterate ``x`` (value ``f``, gradient ``g`` if the caller has them); True = stop."""
        seconds = self.elapsed()
        t0 = time.perf_counter()
        try:
            if f is None or g is None:
                known = self.counted.recall(x)
                if known is None:
                    self.n_monitor_evals += 1
                    known = self.counted.objective.loss_grad(x)
                f, g = known
            grad_norm = float(np.linalg.norm(g))
            if self._g0 is None:
                self._g0 = grad_norm if grad_norm > 0 else 1.0
            val = self.validate(x) if self.validate is not None and math.isfinite(f) else float("nan")
            c = self.counted
            record = IterationRecord(len(self.history), float(f), grad_norm, grad_norm / self._g0,
                                     seconds, c.n_fun, c.n_grad, c.n_hessp, float(val), c.data_passes)
            self.history.append(record)
            self.last_x = np.array(x, copy=True)
            if self.rule.patience is not None and math.isfinite(record.val_rmse) and record.val_rmse < self.best_val:
                self.best_val, self.best_val_x, self._best_val_iter = record.val_rmse, self.last_x, record.iteration
            self.reason = self._reason(record)
            for listener in self.listeners:
                listener(self.name, record)
            return self.reason is not None
        finally:
            self._overhead += time.perf_counter() - t0

    def _reason(self, r: IterationRecord) -> str | None:
        if r.rel_grad_norm <= self.rule.gtol:
            return "converged"
        if not (math.isfinite(r.loss) and math.isfinite(r.grad_norm)):
            return "diverged"
        if self.rule.max_passes is not None and r.data_passes >= self.rule.max_passes:
            return "max_passes"
        if self.rule.max_seconds is not None and r.seconds >= self.rule.max_seconds:
            return "max_seconds"
        if self.rule.max_iter is not None and r.iteration >= self.rule.max_iter:
            return "max_iter"
        if self.rule.patience is not None and r.iteration - self._best_val_iter >= self.rule.patience:
            return "early_stopped"
        return None

    def budget_spent(self) -> OptimizeResult:
        """The method asked for more than its budget (:class:`BudgetSpent`): it ends at its last
        accepted iterate, and a last record at that iterate carries the work spent since (the
        inner solve or line search that the budget cut short), so the history ends at the passes
        spent, never beyond the budget."""
        last, c = self.history[-1], self.counted
        if c.data_passes > last.data_passes:
            self.history.append(IterationRecord(last.iteration, last.loss, last.grad_norm, last.rel_grad_norm,
                                                self.elapsed(), c.n_fun, c.n_grad, c.n_hessp, last.val_rmse,
                                                c.data_passes))
        self.reason = "max_passes"
        return self.result(self.last_x, "max_passes")

    def result(self, x: np.ndarray, message: str) -> OptimizeResult:
        """The one exit point: make sure ``x`` is the last recorded iterate, label the reason.

        Where the shared rule stopped the method, the message is the rule's, in words (scipy's own
        message is then only "callback raised StopIteration"); where the method stopped on its own,
        it is the method's message."""
        if self.last_x is None or not np.array_equal(self.last_x, x):
            self.check(x)
        reason = self.reason or "method"
        if self.reason:
            detail = message if message and message != self.reason and "StopIteration" not in message else ""
            message = self.rule.explain(self.reason, self.history[-1])
            if detail.startswith(self.reason + " ("):  # e.g. gd-momentum's restart count
                message += detail[len(self.reason):]
        else:
            message = f"the method stopped on its own: {message}" if message else "the method stopped on its own"
        history = list(self.history)
        x_out = self.last_x
        if reason == "early_stopped" and self.best_val_x is not None:
            x_out = self.best_val_x
            history = history[: self._best_val_iter + 1]  # the result is the best-validation iterate
        return OptimizeResult(self.name, x_out, reason, message or reason,
                              history, self.n_monitor_evals, self.counted.n_negative_curvature)
