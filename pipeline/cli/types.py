"""Parameter types of the command line: finite numbers, lists, fractions, scales, one-line input errors."""

from __future__ import annotations

import math

import click

from pipeline.optim import REGISTRY


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


def finite_float(text: str) -> float:
    """``float`` for list options, rejecting ``nan`` and ``inf``."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    return number


def parts(value) -> list[str]:
    """The items of a comma-separated option (or of a list given in a TOML config)."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


class OptimizerList(click.ParamType):
    name = "NAME[,NAME...]"

    def convert(self, value, param, ctx):
        names = parts(value)
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
            fr = tuple(finite_float(p) for p in parts(value))
        except ValueError:
            self.fail(f"expected three numbers like 0.8,0.1,0.1, got {value!r}", param, ctx)
        if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1) > 1e-9 or fr[0] == 0:
            self.fail(f"expected three non-negative fractions adding to 1 with train > 0, got {value!r}", param, ctx)
        return fr


class Scale(click.ParamType):
    name = "LO,HI"

    def convert(self, value, param, ctx):
        try:
            lo, hi = (finite_float(p) for p in parts(value))
        except ValueError:
            self.fail(f"expected two numbers like 0.5,5, got {value!r}", param, ctx)
        if not lo < hi:
            self.fail(f"the low end must be below the high end, got {value!r}", param, ctx)
        return (lo, hi)


class ValueList(click.ParamType):
    """Comma-separated values of one type (a sweep grid axis)."""

    def __init__(self, kind, name):
        self.kind, self.name = kind, name

    def convert(self, value, param, ctx):
        try:
            values = tuple(self.kind(v) for v in parts(value))
        except ValueError:
            self.fail(f"expected comma-separated {self.name} values, got {value!r}", param, ctx)
        if not values:
            self.fail("expected at least one value", param, ctx)
        return values
