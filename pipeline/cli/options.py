"""What every command shares: parameter types, option groups, the run configuration built from
them, one-line errors, progress printers and the tracker a command logs to."""

from __future__ import annotations

import functools
import math
import signal
import sys
import time

import click

from pipeline.config import DataConfig, ModelConfig, RunConfig, default_tracking_uri, project_root
from pipeline.data import DataError, ReadOptions
from pipeline.objectives.engine import KERNELS
from pipeline.optim import REGISTRY, StoppingRule
from pipeline.optim.base import IterationRecord


class InputError(click.ClickException):
    """Bad input: one line, exit code 2 (like a usage error), no traceback."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class Finite(click.FloatRange):
    """A float option that must be a finite number (``nan`` and ``inf`` parse as floats and would
    pass every range check: a NaN penalty gave a "diverged" run that exited 0)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _finite_float(text: str) -> float:
    """``float`` for list options, rejecting ``nan`` and ``inf``."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def _parts(value) -> list[str]:
    """The items of a comma-separated option (or of a list given in a TOML config)."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


class OptimizerList(click.ParamType):
    name = "NAME[,NAME...]"

    def convert(self, value, param, ctx):
        names = _parts(value)
        unknown = [n for n in names if n not in REGISTRY]
        if not names or unknown:
            self.fail(f"unknown optimizer {', '.join(unknown) or repr(value)}; choose from {', '.join(REGISTRY)}",
                      param, ctx)
        if len(set(names)) != len(names):
            self.fail(f"optimizer listed twice in {value!r}", param, ctx)
        return tuple(names)


class Fractions(click.ParamType):
    name = "TRAIN,VAL,TEST"

    def convert(self, value, param, ctx):
        try:
            fr = tuple(_finite_float(p) for p in _parts(value))
        except ValueError:
            self.fail(f"expected three numbers like 0.8,0.1,0.1, got {value!r}", param, ctx)
        if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-9 or fr[0] == 0:
            self.fail(f"expected three non-negative fractions adding to 1 with train > 0, got {value!r}", param, ctx)
        return fr

class Scale(click.ParamType):
    name = "LO,HI"

    def convert(self, value, param, ctx):
        try:
            lo, hi = (_finite_float(p) for p in _parts(value))
        except ValueError:
            self.fail(f"expected two numbers like 0.5,5, got {value!r}", param, ctx)
        if not lo < hi:
            self.fail(f"the low end must be below the high end, got {value!r}", param, ctx)
        return (lo, hi)


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
        click.option("--fractions", type=Fractions(), default="0.8,0.1,0.1", show_default=True,
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


def _hyperparameters() -> dict[str, list]:
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
    opts += [_hyper_option(name, owners) for name, owners in _hyperparameters().items()]
    return _apply(f, opts)


def _model_config(kw: dict) -> ModelConfig:
    """The chosen model's hyperparameters from the options; one given on the command line that the
    model does not have is an error (a config file's shared defaults may name others)."""
    from pipeline.objectives import model_spec
    spec = model_spec(kw.get("model") or "mf")
    own = {f.name for f in spec.hyperparameters()}
    ctx = click.get_current_context(silent=True)
    for name in _hyperparameters():
        if name not in own and kw.get(name) is not None and ctx is not None and \
                ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise InputError(f"--{name.replace('_', '-')} is not a hyperparameter of --model {spec.name} "
                             f"(its: {', '.join('--' + n.replace('_', '-') for n in sorted(own)) or 'none'})")
    return ModelConfig(spec.name, spec.make(**{n: kw[n] for n in own if kw.get(n) is not None}))


def run_options(f):
    return data_options(split_options(model_options(f)))


def fit_options(f):
    opts = [
        click.option("--gtol", type=Finite(min=0), default=1e-5, show_default=True,
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
        click.option("--tracking-uri", default=None,
                     help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db]."),
        click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                     help="Where the objective's sums run. dask: ratings sharded by user blocks on Dask workers, "
                          "the optimizer on this machine (needs pip install '.[dask]'); als and sgd stay local-only "
                          "and stop with a message there."),
        click.option("--scheduler", default=None, help="dask: address of a running scheduler (tcp://host:8786); "
                                                        "without it a LocalCluster of --workers processes is started."),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="dask: LocalCluster worker processes."),
        click.option("--no-tracking", is_flag=True, help="Do not log to MLflow."),
        click.option("--no-models", is_flag=True, help="Do not log each fit as an MLflow pyfunc model."),
        click.option("--quiet", "-q", is_flag=True, help="No per-iteration progress."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _data_config(kw: dict) -> DataConfig:
    return DataConfig(
        dataset=kw["dataset"], fractions=kw.get("fractions", (0.8, 0.1, 0.1)), seed=kw.get("split_seed", 0),
        method=kw.get("method", "random"), last_k=kw.get("last_k"), cutoff=kw.get("cutoff"),
        folds=kw.get("folds", 5), min_user_ratings=kw["min_user_ratings"], min_item_ratings=kw["min_item_ratings"],
        train_file=kw["train_file"], validation_file=kw["validation_file"], test_file=kw["test_file"],
        read=ReadOptions(format=kw["format_"], user_col=kw["user_col"], item_col=kw["item_col"],
                         rating_col=kw["rating_col"], time_col=kw["time_col"], rating_scale=kw["rating_scale"],
                         duplicates=kw["duplicates"]),
        data_dir=kw["data_dir"], cache=kw.get("cache", True))


def _config(kw: dict, optimizers) -> RunConfig:
    return RunConfig(
        data=_data_config(kw),
        model=_model_config(kw),
        rule=StoppingRule(gtol=kw.get("gtol", 1e-5), max_iter=kw.get("max_iter"),
                          max_seconds=kw.get("max_seconds"), patience=kw.get("patience"),
                          max_passes=kw.get("max_passes")),
        optimizers=tuple(optimizers), gd_step=kw.get("gd_step"), seed=kw["seed"], seeds=_seeds(kw.get("seeds")),
        log_models=not kw.get("no_models", False), kernel=kw.get("kernel") or "auto",
    )


def _local_session(kw: dict, note=None):
    from contextlib import nullcontext
    from pipeline.objectives import LocalEngine
    return nullcontext(LocalEngine(kw.get("kernel") or "auto"))


def _dask_session(kw: dict, note=None):
    from pipeline import distributed
    return distributed.session(kw.get("scheduler"), kw.get("workers", 2), kw.get("kernel") or "auto", note)


SESSIONS = {"local": _local_session, "dask": _dask_session}  # --backend -> the engine's context manager


def engine_session(kw: dict, note=None):
    """The engine ``--backend`` names, for a ``with`` block (a Dask cluster is started and stopped)."""
    return SESSIONS[kw.get("backend") or "local"](kw, note)


def _seeds(value) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in _parts(value))
    except ValueError:
        raise InputError(f"--seeds takes integers like 0,1,2; got {value!r}") from None


def _store_problem(exc: BaseException) -> str | None:
    """One line for a failure of the MLflow store or server (only once tracking is in use)."""
    if "pipeline.tracking" not in sys.modules:
        return None
    from pipeline.tracking import store_problem
    return store_problem(exc)


def input_errors(f):
    """Turn bad-input exceptions from the library into one-line exit-2 errors."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except DataError as exc:
            raise InputError(str(exc)) from None
        except OSError as exc:  # a folder that cannot be written, a full disk: one line, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:
            problem = _store_problem(exc)
            if problem is None:
                raise
            raise click.ClickException(problem) from None
        except KeyboardInterrupt:
            number = _SIGNAL["number"] or signal.SIGINT
            click.echo(f"\ninterrupted ({signal.Signals(number).name}): the open MLflow runs were marked KILLED",
                       err=True)
            sys.exit(128 + number)
    return wrapper


class DownloadProgress:
    """Prints a download's progress at most twice a second."""

    def __init__(self):
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5 or (total and done >= total):
            self._last = now
            of = f" of {total / 1e6:,.1f} MB ({100 * done / total:.0f}%)" if total else " MB"
            click.echo(f"  downloading: {done / 1e6:,.1f}{of}", err=True)


class Progress:
    """Prints an iterate at most every ``every`` seconds (and the first of each optimizer)."""

    def __init__(self, every: float = 1.0):
        self.every, self._last, self._name = every, 0.0, None

    def __call__(self, name: str, r: IterationRecord) -> None:
        now = time.monotonic()
        if name != self._name or now - self._last >= self.every:
            self._name, self._last = name, now
            click.echo(f"  {name:<10} it {r.iteration:>5}  f {r.loss:.8f}  |g|/|g0| {r.rel_grad_norm:.2e}  "
                       f"val_rmse {r.val_rmse:.4f}  {r.seconds:6.1f}s  hessp {r.n_hessp}", err=True)


def _tracker(kw: dict):
    if kw.get("no_tracking"):
        from pipeline.null_tracker import NullTracker
        return NullTracker()
    from pipeline.tracking import MlflowTracker
    tracker = MlflowTracker(kw.get("tracking_uri") or default_tracking_uri(), artifact_root=project_root() / "mlartifacts")
    _note_repaired(tracker.repair())  # the cheap check at start: runs left RUNNING by a killed process
    return tracker


def _note_repaired(run_ids: list[str]) -> None:
    if run_ids:
        click.echo(f"note: {len(run_ids)} run(s) left RUNNING by a process that is gone were marked FAILED: "
                   + ", ".join(r[:8] for r in run_ids), err=True)

REGISTER = click.option("--register", metavar="NAME", default=None,
                        help="Put the best fit (by validation RMSE) in the MLflow Model Registry under NAME.")


class ValueList(click.ParamType):
    """Comma-separated values of one type (a sweep grid axis)."""

    def __init__(self, kind, name):
        self.kind, self.name = kind, name

    def convert(self, value, param, ctx):
        try:
            values = tuple(self.kind(v) for v in _parts(value))
        except ValueError:
            self.fail(f"expected comma-separated {self.name} values, got {value!r}", param, ctx)
        if not values:
            self.fail("expected at least one value", param, ctx)
        return values

_SIGNAL = {"number": None}


def _stop(signum, _frame) -> None:
    """SIGTERM and SIGHUP (what ``timeout``, ``kill``, a CI cancel and a closed terminal send) stop a
    command the way Ctrl-C does: the open runs are marked KILLED after their buffered points are
    written. Further signals are ignored while that cleanup runs, so it cannot be cut short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _SIGNAL["number"] = signum
    raise KeyboardInterrupt
