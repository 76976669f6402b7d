"""The ``recsys`` command line (also ``python -m pipeline``): the only module that imports click.

Commands are thin: parse options into a :class:`pipeline.config.RunConfig`, call
:mod:`pipeline.experiment`, print. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from pipeline.config import (DEFAULT_OPTIMIZERS, DataConfig, ModelConfig, RunConfig, default_tracking_uri,
                             load_toml_defaults, project_root)
from pipeline.data import DataError, ReadOptions, SyntheticSpec, generate, write_udata
from pipeline.objectives import WEIGHTINGS
from pipeline.optim import REGISTRY, StoppingRule
from pipeline.optim.base import IterationRecord

COMMANDS = ["train", "compare", "study", "sweep", "report", "recommend", "check-grad", "ui"]


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


def _load_config(ctx: click.Context, _param, value):
    if value:
        try:
            defaults = load_toml_defaults(value, COMMANDS + ["synth"], _option_names(ctx.command))
            defaults["data"] = {"synth": defaults.pop("synth")}
            ctx.default_map = defaults
        except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            raise click.BadParameter(f"cannot read config {value}: {exc}") from None
    return value


def _option_names(group: click.Group) -> dict[str, set[str]]:
    """Each configurable command's option names (what its TOML table may set)."""
    commands = {name: group.commands[name] for name in COMMANDS if name in group.commands}
    commands["synth"] = group.commands["data"].commands["synth"]
    return {name: {p.name for p in cmd.params if p.name} for name, cmd in commands.items()}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True, expose_value=False,
              help="TOML file of option defaults: a [defaults] table for every command, "
                   "[train] / [compare] / ... for one. Flags on the command line win.")
@click.version_option(package_name="recsys")
def cli() -> None:
    """recsys: matrix factorization, optimizers compared honestly, every run in MLflow.

    \b
    make train            compare gd, newton-cg and lbfgs on the default data
    recsys compare --help all the options
    recsys ui             open the MLflow UI on the runs
    """


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
            click.option("--seed", type=int, default=0, show_default=True, help="Seed of the starting point.")]
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
                             f"(its: {', '.join('--' + n.replace('_', '-') for n in own) or 'none'})")
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
                     help="Wall-time safety net per optimizer (optimizer time: compilation, validation and "
                          "logging excluded)."),
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
        log_models=not kw.get("no_models", False),
    )


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


def _run_comparison(optimizers, kw) -> None:
    from pipeline import experiment, report
    cfg = _config(kw, optimizers)
    tracker = _tracker(kw)

    def started(prep):
        d = prep.ratings.describe()
        cold = prep.split.cold_counts()
        click.echo(f"dataset {prep.ratings.name}: {d['n_ratings']:,} ratings, {d['n_users']:,} users, "
                   f"{d['n_items']:,} items; split {len(prep.split.train):,}/{len(prep.split.validation):,}/"
                   f"{len(prep.split.test):,} (test rows with a cold user {cold['test_cold_user_rows']}, "
                   f"cold item {cold['test_cold_item_rows']}); {prep.objective.n_params:,} parameters", err=True)

    from pipeline.distributed import BackendError, connect
    client = None
    if kw.get("backend") == "dask":
        try:
            client = connect(kw.get("scheduler"), kw.get("workers", 2))
        except BackendError as exc:
            raise InputError(str(exc)) from None
        click.echo(f"dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}", err=True)
    try:
        result = experiment.compare(cfg, tracker, None if kw.get("quiet") else Progress(), on_start=started,
                                    download_progress=DownloadProgress(), client=client,
                                    note=lambda msg: click.echo(msg, err=True))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except BackendError as exc:  # the cluster failed mid-fit; the open runs were marked FAILED
        raise click.ClickException(str(exc)) from None
    finally:
        if client is not None:
            cluster = client.cluster if not kw.get("scheduler") else None  # ours to stop, not a shared one
            client.close()
            if cluster is not None:
                cluster.close()
    click.echo("")
    if result.folds:
        click.echo(f"mean over {len(result.folds)} repeats (folds x seeds; test_rmse_std: spread of test RMSE)")
    click.echo(report.format_table(result.table))
    if result.folds:
        click.echo("test_rmse_std  " + "  ".join(f"{r.optimizer} {r.test_rmse_std:.4f}"
                                                 for r in result.table.itertuples()))
    click.echo("")
    for line in report.findings(result.table):
        click.echo(f"- {line}")
    if tracker.records:
        click.echo("")
        click.echo(f"MLflow experiment: {result.links['experiment']}")
        click.echo(f"compare the runs:  {result.links['compare']}")
        if result.model_uris:
            best = min(result.model_uris, key=lambda n: result.metrics[n]["val_rmse"])  # model selection: validation
            click.echo(f"best model ({best}): recsys recommend --model-uri {result.model_uris[best]} --user ID")
            if kw.get("register"):
                version = tracker.register(result.model_uris[best], kw["register"])
                click.echo(f"registered as {kw['register']} version {version}: models:/{kw['register']}/{version}")
        click.echo(f"(start the UI with `make ui` or `recsys ui`; store: {tracker.tracking_uri})")
    if result.failures and len(result.failures) == len(cfg.optimizers):
        raise click.ClickException("every method failed: " + "; ".join(f"{k}: {v}" for k, v in result.failures.items()))


REGISTER = click.option("--register", metavar="NAME", default=None,
                        help="Put the best fit (by validation RMSE) in the MLflow Model Registry under NAME.")


@cli.command()
@click.option("--optimizer", type=click.Choice(list(REGISTRY)), default="newton-cg", show_default=True,
              help="The optimizer to fit with.")
@run_options
@fit_options
@REGISTER
@input_errors
def train(optimizer, **kw):
    """Fit one model with one optimizer (logged as a comparison of one, beside the baselines)."""
    _run_comparison((optimizer,), kw)


@cli.command()
@click.option("--optimizers", type=OptimizerList(), default=",".join(DEFAULT_OPTIMIZERS), show_default=True,
              help=f"Comma-separated optimizers, from: {', '.join(REGISTRY)}.")
@run_options
@fit_options
@REGISTER
@input_errors
def compare(optimizers, **kw):
    """Compare optimizers on one objective from one starting point under one stopping rule."""
    _run_comparison(optimizers, kw)


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


@cli.command()
@click.option("--datasets", type=ValueList(str, "dataset"), default="synthetic", show_default=True,
              help="Comma-separated datasets of the suite (names or paths, as --dataset takes).")
@click.option("--optimizers", type=OptimizerList(), default=",".join(REGISTRY), show_default=True,
              help="The methods compared on every problem.")
@click.option("--ranks", type=ValueList(int, "integer"), default="5,20,50", show_default=True)
@click.option("--regs", type=ValueList(_finite_float, "finite number"), default="0.02,0.1", show_default=True)
@click.option("--seeds", "seed_list", type=ValueList(int, "integer"), default="0,1,2", show_default=True,
              help="Starting points per (dataset, rank, reg).")
@click.option("--reg-bias", type=Finite(min=0), default=ModelConfig().hyper.reg_bias, show_default=True)
@click.option("--weighting", type=click.Choice(WEIGHTINGS), default=ModelConfig().hyper.weighting, show_default=True)
@click.option("--gtol", type=Finite(min=0), default=1e-10, show_default=True,
              help="Stop a method at ||g||/||g0|| <= GTOL [default: as tight as the reference, so the targets, "
                   "not the gradient test, end the race]")
@click.option("--max-passes", type=click.IntRange(min=1), default=600, show_default=True,
              help="Budget per method and problem, in data passes.")
@click.option("--max-seconds", type=Finite(min=0, min_open=True), default=30.0, show_default=True,
              help="Wall-time safety net per method and problem (set so that the passes budget, which is the "
                   "same on any machine, ends every run of the default suite here).")
@click.option("--reference-passes", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Budget of each phase of the reference solve (L-BFGS, then Newton-CG) per problem, in passes.")
@click.option("--split-seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default="data", show_default=True)
@click.option("--cache/--no-cache", default=True, show_default=True,
              help="Cache parsed files and each problem's reference optimum under DATA_DIR/cache.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db].")
@click.option("--no-tracking", is_flag=True, help="Do not log to MLflow.")
@click.option("--quiet", "-q", is_flag=True, help="No per-iteration progress.")
@input_errors
def study(datasets, optimizers, ranks, regs, seed_list, reg_bias, weighting, gtol, max_passes, max_seconds,
          reference_passes, split_seed, data_dir, cache, tracking_uri, no_tracking, quiet):
    """Run the methods over a suite of problems (datasets x ranks x regs x seeds) and draw Dolan-More
    performance profiles in data passes and in seconds for each target (logged at the parent run)."""
    from pipeline import experiment
    if min(ranks) < 1 or min(regs) < 0:
        raise InputError("bad suite: ranks >= 1 and penalties >= 0")
    cfg = RunConfig(data=DataConfig(seed=split_seed, data_dir=data_dir, cache=cache),
                    model=ModelConfig.of("mf", reg_bias=reg_bias, weighting=weighting),
                    rule=StoppingRule(gtol=gtol, max_passes=max_passes, max_seconds=max_seconds),
                    optimizers=tuple(optimizers))
    tracker = _tracker({"no_tracking": no_tracking, "tracking_uri": tracking_uri})
    try:
        out = experiment.study(cfg, list(datasets), list(ranks), list(regs), list(seed_list), tracker,
                               None if quiet else Progress(10.0), note=lambda msg: click.echo(msg, err=True),
                               reference_passes=reference_passes)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo("")
    for line in out.headline:
        click.echo(f"- {line}")
    if tracker.records:
        click.echo("")
        click.echo(f"MLflow experiment: {out.links['experiment']}")
        click.echo("profiles: performance_profile_passes.png, performance_profile_seconds.png and study.csv "
                   f"at run {out.parent_run_id}")



@cli.command()
@click.option("--optimizer", type=click.Choice(list(REGISTRY)), default="als", show_default=True,
              help="The optimizer every trial fits with.")
@click.option("--ranks", type=ValueList(int, "integer"), default="10,20,50", show_default=True, help="Grid of ranks.")
@click.option("--regs", type=ValueList(_finite_float, "finite number"), default="0.03,0.05,0.1", show_default=True,
              help="Grid of factor penalties.")
@click.option("--reg-biases", type=ValueList(_finite_float, "finite number"), default="0.05", show_default=True,
              help="Grid of bias penalties.")
@click.option("--weightings", type=ValueList(str, "weighting"), default="count", show_default=True,
              help="Grid of penalty weightings (count, none).")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Random search: this many grid points drawn at random (seeded by --seed) [default: the whole grid].")
@run_options
@fit_options
@input_errors
def sweep(optimizer, ranks, regs, reg_biases, weightings, trials, **kw):
    """Tune rank and penalties by validation RMSE only; refit the winner on train + validation and
    report its test RMSE once. Each trial is a nested MLflow run; the winner is tagged."""
    from pipeline import experiment
    cfg = _config(kw, (optimizer,))
    tracker = _tracker(kw)
    grid = {"rank": list(ranks), "reg": list(regs), "reg_bias": list(reg_biases), "weighting": list(weightings)}

    def on_trial(j, n, params, val):
        click.echo(f"trial {j + 1}/{n}: " + ", ".join(f"{k}={v}" for k, v in params.items()) + f"  val_rmse {val:.4f}",
                   err=True)
    try:
        out = experiment.sweep(cfg, grid, optimizer, trials, tracker, None if kw.get("quiet") else Progress(10.0),
                               on_trial=on_trial)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    shown = out.trials.drop(columns=["run_id"]).sort_values("val_rmse")
    click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    click.echo("")
    click.echo("winner (by validation RMSE): " + ", ".join(f"{k}={v}" for k, v in out.best.items()))
    click.echo(f"refit on train + validation: test RMSE {out.test_metrics['test_rmse']:.4f}, "
               f"test MAE {out.test_metrics['test_mae']:.4f} ({out.test_metrics['fit_seconds']:.1f} s)")
    if tracker.records:
        click.echo(f"MLflow experiment: {out.links['experiment']}")
        click.echo(f"compare the trials: {out.links['compare']}")


@cli.command()
@click.option("--run-id", default=None, help="The comparison's parent run [default: the newest comparison].")
@click.option("--experiment", default=None, help="Look for the newest comparison in this experiment only.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for report.md and its figures [default: reports/<experiment>-<run>].")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db].")
@input_errors
def report(run_id, experiment, out_dir, tracking_uri):
    """Write the case study of a logged comparison (Markdown + PNG figures) and log it to its run."""
    from pipeline import report as report_module
    from pipeline.tracking import MlflowTracker
    tracker = MlflowTracker(tracking_uri or default_tracking_uri(), create=False)
    try:
        run_id = run_id or tracker.latest_comparison(experiment)
        logged = tracker.load_comparison(run_id)
    except LookupError as exc:
        raise InputError(str(exc)) from None
    except Exception as exc:  # an unknown run id comes back as an MLflow error
        raise InputError(f"cannot read run {run_id}: {str(exc).splitlines()[0]}") from None
    folder = Path(out_dir or project_root() / "reports" / f"{logged['parent']['experiment']}-{run_id[:8]}")
    path = report_module.write_report(logged, folder)
    for f in sorted(folder.iterdir()):
        tracker.log_artifact(run_id, f, "report")
    click.echo(f"wrote {path} (and logged it to run {run_id} under report/)")


@cli.command()
@click.option("--model-uri", required=True, help="A logged model, e.g. runs:/<run_id>/model (printed as a run tag).")
@click.option("--user", "user_ids", multiple=True, help="A raw user id (repeatable).")
@click.option("--users", "users_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of raw user ids, one per line (vectorized over all of them).")
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="Items per user.")
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db].")
@input_errors
def recommend(model_uri, user_ids, users_file, n, tracking_uri):
    """Top-n items each user has not rated in training, from a logged model (titles when known).

    Unknown users get the model's fallback ranking (for MF: global mean plus item bias).
    """
    import mlflow
    users = list(user_ids)
    if users_file:
        try:
            text = Path(users_file).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{users_file}: not a text file of user ids (one per line, UTF-8)") from None
        except OSError as exc:
            raise InputError(f"{users_file}: {exc.strerror}") from None
        users += [line.strip() for line in text.splitlines() if line.strip()]
    if not users:
        raise InputError("give --user ID (repeatable) or --users FILE")
    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    from pipeline.tracking import load_recommender, open_store
    open_store(tracking_uri or default_tracking_uri(), create=False)  # never a new empty store
    try:
        rec = load_recommender(model_uri)
    except Exception as exc:  # MLflow raises several types for a bad URI
        raise InputError(f"cannot load {model_uri}: {str(exc).splitlines()[0]}") from None
    table = rec.recommend(users, n)
    unknown = [u for u in users if (rec._index(rec.user_ids, [u]) < 0).all()]
    for u in unknown:
        click.echo(f"note: user {u} is unknown to the model; showing the fallback ranking", err=True)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@cli.command("check-grad")
@click.option("--directions", type=click.IntRange(min=1), default=3, show_default=True,
              help="Random directions per check point.")
@run_options
@input_errors
def check_grad(directions, **kw):
    """Check the gradient and Hessian-vector product against central finite differences.

    Prints the largest relative error over random directions, at the starting point and at a
    random point: g.v against (f(x+hv)-f(x-hv))/2h, Hv against (g(x+hv)-g(x-hv))/2h, and the
    symmetry u.Hv = v.Hu.
    """
    from pipeline import experiment
    try:
        errors = experiment.check_grad(_config(kw, ()), n_directions=directions)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    for k, v in errors.items():
        click.echo(f"{k:<34} {v:.2e}")
    worst = max(errors.values())
    click.echo(f"{'worst':<34} {worst:.2e}  ({'ok' if worst < 1e-5 else 'LARGE: check the derivatives'})")
    if worst >= 1e-5:
        sys.exit(1)


@cli.group()
def runs():
    """Look after the runs in the MLflow store."""


@runs.command()
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db].")
@input_errors
def repair(tracking_uri):
    """Mark FAILED the RUNNING runs of this machine whose process is gone (killed with SIGKILL, a
    power loss). Every command that logs runs does this check when it starts."""
    from pipeline.tracking import MlflowTracker
    repaired = MlflowTracker(tracking_uri or default_tracking_uri()).repair()
    _note_repaired(repaired)
    click.echo(f"{len(repaired)} run(s) repaired")


@cli.group()
def data():
    """Make and inspect datasets."""


@data.command()
@click.option("--out", type=click.Path(dir_okay=False), default="data/synthetic/u.data", show_default=True,
              help="Where to write the ratings (u.data layout: user, item, rating, timestamp, tab-separated).")
@click.option("--users", type=click.IntRange(min=1), default=SyntheticSpec.n_users, show_default=True)
@click.option("--items", type=click.IntRange(min=2), default=SyntheticSpec.n_items, show_default=True)
@click.option("--ratings", type=click.IntRange(min=1), default=SyntheticSpec.n_ratings, show_default=True)
@click.option("--true-rank", type=click.IntRange(min=1), default=SyntheticSpec.true_rank, show_default=True,
              help="Rank of the planted structure.")
@click.option("--noise", type=Finite(min=0), default=SyntheticSpec.noise, show_default=True,
              help="Standard deviation of the rating noise (before rounding to stars).")
@click.option("--seed", type=int, default=0, show_default=True)
@input_errors
def synth(out, users, items, ratings, true_rank, noise, seed):
    """Generate the embedded synthetic dataset (deterministic in --seed) and write it to --out."""
    spec = SyntheticSpec(n_users=users, n_items=items, n_ratings=ratings, true_rank=true_rank, noise=noise, seed=seed)
    r = generate(spec)
    path = write_udata(r, out)
    d = r.describe()
    click.echo(f"wrote {path}: {d['n_ratings']:,} ratings, {d['n_users']:,} users, {d['n_items']:,} items, "
               f"mean {d['rating_mean']:.3f}")


@data.command()
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False), default="data", show_default=True)
@input_errors
def fetch(name, data_dir):
    """Download MovieLens NAME, verify its checksum, unpack it into --data-dir (no-op if already there).

    NAME is one of: ml-100k, ml-1m, ml-latest-small, ml-10m, ml-25m, ml-32m. Offline, put the official
    archive at DATA_DIR/NAME.zip by hand and run this again.
    """
    from pipeline.data import fetch as fetch_archive
    path = fetch_archive(name, data_dir, DownloadProgress())
    click.echo(f"{name}: {path}")


@data.command()
@click.argument("dataset")
@data_options_no_dataset
@split_options
@input_errors
def describe(dataset, **kw):
    """Shape, density, rating histogram, per-user and per-item count quantiles, and what each split
    part would hold (with cold-start rows) for DATASET (a name or a path, as --dataset takes)."""
    from pipeline import experiment
    kw["dataset"] = dataset
    d = experiment.describe(RunConfig(data=_data_config(kw)), progress=DownloadProgress())
    click.echo(f"{dataset}: {d['n_ratings']:,} ratings, {d['n_users']:,} users, {d['n_items']:,} items, "
               f"density {d['density']:.4%}, mean rating {d['rating_mean']:.3f}, "
               f"scale {d['rating_min']:g}..{d['rating_max']:g}, timestamps {'yes' if d['has_timestamps'] else 'no'}")
    click.echo("ratings: " + "  ".join(f"{k}: {v:,}" for k, v in d["histogram"].items()))
    for who in ("user", "item"):
        qs = d[f"per_{who}_quantiles"]
        click.echo(f"ratings per {who}: " + "  ".join(f"q{float(q):g} {v:g}" for q, v in qs.items()))
    for s in d["splits"]:
        fold = f" fold {s['fold']}" if s["fold"] is not None else ""
        click.echo(f"{s['method']} split{fold}: train {s['train']:,}  validation {s['validation']:,}  test {s['test']:,}"
                   f"  (cold rows: validation user {s['validation_cold_user_rows']}, item "
                   f"{s['validation_cold_item_rows']}; test user {s['test_cold_user_rows']}, item {s['test_cold_item_rows']})")


@data.command("split")
@click.argument("dataset")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for train.tsv, validation.tsv, test.tsv (fold-J/ subfolders for kfold).")
@data_options_no_dataset
@split_options
@input_errors
def split_command(dataset, out_dir, **kw):
    """Write the split of DATASET to files (u.data layout: user, item, rating, timestamp) for other tools."""
    from pipeline import experiment
    from pipeline.data import write_udata
    kw["dataset"] = dataset
    _, splits = experiment.load_splits(_data_config(kw), progress=DownloadProgress())
    for s in splits:
        folder = Path(out_dir) / (f"fold-{s.fold}" if s.fold is not None else "")
        for part in ("train", "validation", "test"):
            write_udata(getattr(s, part), folder / f"{part}.tsv")
        click.echo(f"wrote {folder}: train {len(s.train):,}, validation {len(s.validation):,}, test {len(s.test):,}")


@cli.command()
@click.option("--tracking-uri", default=None,
              help="MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db].")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@input_errors
def ui(tracking_uri, port):
    """Start the MLflow UI on 127.0.0.1 for the project's runs (Ctrl-C stops it)."""
    from pipeline.tracking import MlflowTracker, ui_command
    uri = tracking_uri or default_tracking_uri()
    tracker = MlflowTracker(uri, create=False)
    base = f"http://127.0.0.1:{port}"
    click.echo(f"MLflow UI: {base}/#/experiments?workflowType=machine_learning  (store: {uri})")
    for name, links in tracker.experiment_links(base).items():
        click.echo(f"  {name}: {links['experiment']}")
        if "compare" in links:
            click.echo(f"    latest comparison: {links['compare']}")
    try:
        sys.exit(subprocess.call(ui_command(uri, port=port)))
    except KeyboardInterrupt:
        sys.exit(0)


_SIGNAL = {"number": None}


def _stop(signum, _frame) -> None:
    """SIGTERM and SIGHUP (what ``timeout``, ``kill``, a CI cancel and a closed terminal send) stop a
    command the way Ctrl-C does: the open runs are marked KILLED after their buffered points are
    written. Further signals are ignored while that cleanup runs, so it cannot be cut short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _SIGNAL["number"] = signum
    raise KeyboardInterrupt


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    cli(prog_name="recsys")


if __name__ == "__main__":  # pragma: no cover
    main()
