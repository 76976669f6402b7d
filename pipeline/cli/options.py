"""The option groups commands share: data, split, model, fit, tracking. Hyperparameter options are
made from the models' fields (no default here: the chosen model's own applies)."""

from __future__ import annotations

import click

from pipeline.cli.types import Finite, Fractions, Scale
from pipeline.config import DataConfig, RunConfig
from pipeline.objectives.engine import KERNELS


def _apply(f, opts):
    for opt in reversed(opts):
        f = opt(f)
    return f


def _data_opts(with_dataset: bool) -> list:
    """Where the ratings come from (shared by every command that reads a dataset)."""
    from pipeline.data import CATALOG, FORMATS
    dataset = [
        click.option("--dataset", default="synthetic", show_default=True,
                     help="'synthetic' (the embedded generator, shaped like MovieLens 100K), a MovieLens name "
                          f"({', '.join(CATALOG)}; fetched into --data-dir on first use), or a path: u.data, "
                          "ratings.dat, ratings.csv, an official .zip, or your own CSV/TSV/Parquet."),
    ]
    return (dataset if with_dataset else []) + [
        click.option("--format", "format_", type=click.Choice(FORMATS), default=None,
                     help="File format [default: from the name and content]."),
        click.option("--user-col", default=None, help="User id column of a file with a header."),
        click.option("--item-col", default=None, help="Item id column of a file with a header."),
        click.option("--rating-col", default=None, help="Rating column of a file with a header."),
        click.option("--time-col", default=None, help="Timestamp column (seconds or dates) of a file with a header."),
        click.option("--rating-scale", type=Scale(), default=None,
                     help="Allowed ratings, e.g. 0.5,5 [default: 1,5 for u.data, else inferred from the data]."),
        click.option("--duplicates", type=click.Choice(["error", "last"]), default="error", show_default=True,
                     help="Repeated (user, item) pairs: an error, or keep the latest by timestamp."),
        click.option("--min-user-ratings", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Drop users with fewer ratings (repeated with --min-item-ratings until both hold)."),
        click.option("--min-item-ratings", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Drop items with fewer ratings."),
        click.option("--train", "train_file", type=click.Path(), default=None,
                     help="A predefined training file (e.g. u1.base); needs --test; overrides --split."),
        click.option("--validation", "validation_file", type=click.Path(), default=None,
                     help="A predefined validation file (optional with --train/--test)."),
        click.option("--test", "test_file", type=click.Path(), default=None, help="A predefined test file (e.g. u1.test)."),
        click.option("--data-dir", type=click.Path(file_okay=False), default="data", show_default=True,
                     help="Where MovieLens archives are downloaded and unpacked, and parsed files cached."),
        click.option("--cache/--no-cache", default=True, show_default=True,
                     help="Keep a parsed ratings file as a binary entry in DATA_DIR/cache, keyed by its "
                          "checksum, so the next load skips the parsing."),
    ]


def data_options(f):
    return _apply(f, _data_opts(with_dataset=True))


def data_options_no_dataset(f):
    """The data options without --dataset (commands that take DATASET as an argument)."""
    return _apply(f, _data_opts(with_dataset=False))


def split_options(f):
    from pipeline.data import METHODS
    opts = [
        click.option("--split", "method", type=click.Choice(METHODS), default="random", show_default=True,
                     help="random holdout; user: per-user holdout (--last-k by time, else per-user fractions); "
                          "temporal: by time (quantiles from --fractions, or --cutoff); kfold: --folds folds."),
        click.option("--fractions", type=Fractions(), default=",".join(map(str, DataConfig().fractions)), show_default=True,
                     help="Train,validation,test fractions (kfold: validation share of the training folds)."),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the split."),
        click.option("--last-k", type=click.IntRange(min=1), default=None,
                     help="user split: each user's last K ratings by time to test, the K before to validation."),
        click.option("--cutoff", type=int, default=None, help="temporal split: test = ratings at or after this Unix time."),
        click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="kfold: number of folds."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def hyperparameters_by_name() -> dict[str, list]:
    """Each hyperparameter name across the registered models -> [(spec, field), ...]."""
    from pipeline.objectives import MODELS
    merged: dict[str, list] = {}
    for spec in MODELS.values():
        for f in spec.hyperparameters():
            merged.setdefault(f.name, []).append((spec, f))
    return merged


def _hyper_option(name: str, owners: list):
    """``--rank`` and the like, made from the models' hyperparameter fields: type and range from
    the field, no default here (the chosen model's own default applies, named in the help)."""
    first = owners[0][1]
    meta, kind = first.metadata, type(first.default)
    if meta.get("choices"):
        kind_type = click.Choice(meta["choices"])
    elif kind is int:
        kind_type = click.IntRange(min=meta["low"])
    else:
        kind_type = Finite(min=meta["low"], min_open=meta["low_open"])
    helps = list(dict.fromkeys(f.metadata["help"] for _, f in owners))
    text = helps[0] if len(helps) == 1 else "; ".join(f"{s.name}: {f.metadata['help']}" for s, f in owners)
    defaults = "; ".join(f"{s.name}: {f.default}" for s, f in owners)
    return click.option(f"--{name.replace('_', '-')}", name, type=kind_type, default=None,
                        help=f"{text} [default {defaults}]")


def model_options(f):
    from pipeline.objectives import MODELS
    opts = [click.option("--model", type=click.Choice(list(MODELS)), default="mf", show_default=True,
                         help="; ".join(f"{name}: {spec.summary}" for name, spec in MODELS.items()) + "."),
            click.option("--seed", type=int, default=0, show_default=True, help="Seed of the starting point."),
            click.option("--kernel", type=click.Choice(KERNELS), default="auto", show_default=True,
                         help="What computes the sums over the ratings, here or on each Dask worker: the compiled "
                              "kernels (numba) or the numpy reference; auto: numba where installed. Results agree "
                              "to 1e-10; not a hyperparameter.")]
    opts += [_hyper_option(name, owners) for name, owners in hyperparameters_by_name().items()]
    return _apply(f, opts)


def run_options(f):
    return data_options(split_options(model_options(f)))


def fit_options(f):
    opts = [
        click.option("--gtol", type=Finite(min=0), default=RunConfig().rule.gtol, show_default=True,
                     help="Shared stopping rule: stop when ||g|| / ||g0|| <= GTOL."),
        click.option("--max-passes", type=click.IntRange(min=1), default=RunConfig().rule.max_passes, show_default=True,
                     help="The budget per optimizer, in data passes, the same unit of work for every method "
                          "(a loss+gradient or Hessian-vector product = 1; an ALS sweep = 2; an SGD epoch = 1)."),
        click.option("--max-seconds", type=Finite(min=0, min_open=True), default=RunConfig().rule.max_seconds,
                     show_default=True,
                     help="Wall-time safety net per optimizer, off by default (optimizer time: compilation, "
                          "validation and logging excluded). Seconds depend on the machine and its load: a "
                          "method stopped by them is marked machine-dependent."),
        click.option("--max-iter", type=click.IntRange(min=0), default=None,
                     help="An extra iteration cap (off by default: iterations cost 1 to 100 passes depending on "
                          "the method, so a cap in iterations is a different budget for each)."),
        click.option("--patience", type=click.IntRange(min=1), default=None,
                     help="Early stopping: stop when validation RMSE has not improved for this many iterations, "
                          "and keep the best-validation iterate (any method)."),
        click.option("--gd-step", type=Finite(min=0, min_open=True), default=None,
                     help="Fixed step for gd (default: Armijo backtracking)."),
        click.option("--seeds", default=None, metavar="S1,S2,...",
                     help="Several initialization seeds: each a repeat (child run); the parent gets mean and spread."),
        click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                     help="Where the objective's sums run. dask: ratings sharded by user blocks on Dask workers "
                          "(each computing with --kernel), the optimizer on this machine (needs pip install "
                          "'.[dask]'); ALS and the block preconditioner run there too; per-rating SGD, sequential, "
                          "runs its epochs on this machine."),
        click.option("--scheduler", default=None, help="dask: address of a running scheduler (tcp://host:8786); "
                                                        "without it a LocalCluster of --workers processes is started."),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="dask: LocalCluster worker processes."),
        click.option("--no-models", is_flag=True, help="Do not log each fit as an MLflow pyfunc model."),
        click.option("--quiet", "-q", is_flag=True, help="No per-iteration progress."),
    ]
    return tracking_options(_apply(f, opts))


REGISTER = click.option("--register", metavar="NAME", default=None,
                        help="Put the best fit (by validation RMSE) in the MLflow Model Registry under NAME.")


TRACKING_URI = click.option("--tracking-uri", default=None,
                            help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db].")


def tracking_options(f):
    """Where runs are logged: --tracking-uri, --no-tracking (every command that logs)."""
    return _apply(f, [TRACKING_URI, click.option("--no-tracking", is_flag=True, help="Do not log to MLflow.")])
