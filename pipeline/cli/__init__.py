"""The ``recsys`` command line (also ``python -m pipeline``): the only package that imports click.

One module per command group: ``data`` (synth, fetch, describe, split), ``fit`` (train, compare,
study, sweep, check-grad), ``serve`` (recommend), ``runs`` (report, ui, runs repair). What they
share, one job per module: ``types`` (parameter types, the one-line input error), ``options`` (the
option groups), ``config`` (the run configuration and engine built from them), ``output``
(progress printers, the tracker) and ``errors`` (one-line errors, signals).

Commands are thin: parse options into a :class:`pipeline.config.RunConfig`, call
:mod:`pipeline.experiment`, print. Bad input ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import signal

import click

from pipeline.cli.errors import stop_on_signal
from pipeline.cli.types import InputError  # noqa: F401 - part of the face
from pipeline.config import load_toml_defaults

COMMANDS = ["train", "compare", "study", "sweep", "report", "recommend", "check-grad", "ui"]


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
    make train            compare the default optimizers on the default data
    recsys compare --help all the options
    recsys ui             open the MLflow UI on the runs
    """


# the commands register themselves on the group
from pipeline.cli import data, fit, runs, serve  # noqa: E402,F401


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on_signal)
    cli(prog_name="recsys")


if __name__ == "__main__":  # pragma: no cover
    main()
