"""The run configuration built from a command's options, and the engine its sums run on."""

from __future__ import annotations

import click

from pipeline.cli.options import hyperparameters_by_name
from pipeline.cli.types import InputError, parts
from pipeline.config import DataConfig, ModelConfig, RunConfig
from pipeline.data import ReadOptions
from pipeline.optim import StoppingRule


def data_config(kw: dict) -> DataConfig:
    return DataConfig(
        dataset=kw["dataset"], fractions=kw.get("fractions", DataConfig().fractions), seed=kw.get("split_seed", 0),
        method=kw.get("method", "random"), last_k=kw.get("last_k"), cutoff=kw.get("cutoff"),
        folds=kw.get("folds", 5), min_user_ratings=kw["min_user_ratings"], min_item_ratings=kw["min_item_ratings"],
        train_file=kw["train_file"], validation_file=kw["validation_file"], test_file=kw["test_file"],
        read=ReadOptions(format=kw["format_"], user_col=kw["user_col"], item_col=kw["item_col"],
                         rating_col=kw["rating_col"], time_col=kw["time_col"], rating_scale=kw["rating_scale"],
                         duplicates=kw["duplicates"]),
        data_dir=kw["data_dir"], cache=kw.get("cache", True))


def run_config(kw: dict, optimizers) -> RunConfig:
    return RunConfig(
        data=data_config(kw),
        model=model_config(kw),
        rule=StoppingRule(gtol=kw.get("gtol", StoppingRule().gtol), max_iter=kw.get("max_iter"),
                          max_seconds=kw.get("max_seconds"), patience=kw.get("patience"),
                          max_passes=kw.get("max_passes")),
        optimizers=tuple(optimizers), seed=kw["seed"], seeds=seeds_of(kw.get("seeds")),
        optimizer_options={"gd": {"step": kw["gd_step"]}} if kw.get("gd_step") is not None else {},
        log_models=not kw.get("no_models", False), kernel=kw.get("kernel") or "auto",
    )


def seeds_of(value) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in parts(value))
    except ValueError:
        raise InputError(f"--seeds takes integers like 0,1,2; got {value!r}") from None


def model_config(kw: dict) -> ModelConfig:
    """The chosen model's hyperparameters from the options; one given on the command line that the
    model does not have is an error (a config file's shared defaults may name others)."""
    from pipeline.objectives import model_spec
    spec = model_spec(kw.get("model") or "mf")
    own = {f.name for f in spec.hyperparameters()}
    ctx = click.get_current_context(silent=True)
    for name in hyperparameters_by_name():
        if name not in own and kw.get(name) is not None and ctx is not None and \
                ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise InputError(f"--{name.replace('_', '-')} is not a hyperparameter of --model {spec.name} "
                             f"(its: {', '.join('--' + n.replace('_', '-') for n in sorted(own)) or 'none'})")
    return ModelConfig(spec.name, spec.make(**{n: kw[n] for n in own if kw.get(n) is not None}))


def _local_session(kw: dict, note=None):
    from contextlib import nullcontext
    from pipeline.objectives import LocalEngine
    return nullcontext(LocalEngine(kw.get("kernel") or "auto"))


def _dask_session(kw: dict, note=None):
    from pipeline import distributed
    return distributed.session(kw.get("scheduler"), kw.get("workers", 2), kw.get("kernel") or "auto", note)


SESSIONS = {"local": _local_session, "dask": _dask_session}  # --backend -> the engine's context manager


def engine_session(kw: dict, note=None):
    """The engine ``--backend`` names, for a ``with`` block (a Dask cluster is started and stopped);
    a model that does not run there is a one-line error before any cluster starts."""
    from pipeline.objectives import model_spec
    backend, spec = kw.get("backend") or "local", model_spec(kw.get("model") or "mf")
    if backend not in spec.backends:
        raise InputError(f"model {spec.name} runs on {', '.join(spec.backends)}, not on {backend}; "
                         f"run --model {spec.name} on --backend {spec.backends[0]}")
    return SESSIONS[backend](kw, note)
