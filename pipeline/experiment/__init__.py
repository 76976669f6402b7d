"""Wiring: data -> split -> objective -> optimizers -> evaluation -> tracking -> report.

One module per job:

* ``fitting``: a problem made from a config (split, objective, seeded start), what a race needs
  before its clock (compiled kernels, pass costs, ``f*``), and one fit;
* ``comparison``: ``compare``, what ``make train`` runs, every method on one problem (and its repeats);
* ``suite``: ``study``, the methods over a suite of problems, performance profiles;
* ``tuning``: ``sweep``, hyperparameters tuned on validation, the winner refit and scored once on test;
* ``records``: what each of them writes to the tracker, and nothing else does.

Each command returns a plain result (``Comparison``, ``Study``, ``Sweep``); nothing here prints.
"""

from pipeline.experiment.comparison import Comparison, aggregate_metrics, compare, compare_split, fold_table
from pipeline.experiment.fitting import (MethodFailed, Prepared, baselines, check_grad, fit, load_splits, prepare,
                                         prepare_race, prepare_split, reference_for, run_params, warm_up)
from pipeline.experiment.suite import Study, study
from pipeline.experiment.tuning import Sweep, sweep


def describe(cfg, progress=None) -> dict:
    """What ``recsys data describe`` prints: the dataset and what each split part would hold."""
    from pipeline.data import describe as describe_data
    ratings, splits = load_splits(cfg.data, progress=progress)
    return describe_data(ratings, splits)


__all__ = ["Comparison", "MethodFailed", "Prepared", "Study", "Sweep", "aggregate_metrics", "baselines", "check_grad",
           "compare", "compare_split", "describe", "fit", "fold_table", "load_splits", "prepare", "prepare_race",
           "prepare_split", "reference_for", "run_params", "study", "sweep", "warm_up"]
