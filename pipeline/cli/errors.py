"""One-line errors for bad input and failing stores, and signals that stop a command like Ctrl-C."""

from __future__ import annotations

import functools
import signal
import sys

import click

from pipeline.cli.types import InputError
from pipeline.data import DataError


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
        except MemoryError:
            raise click.ClickException("out of memory: the problem does not fit in what this process may use "
                                       "(a smaller --rank, dataset or batch)") from None
        except OSError as exc:  # a folder that cannot be written, a full disk: one line, not a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:
            problem = _store_problem(exc)
            if problem is None:
                raise
            raise click.ClickException(problem) from None
        except KeyboardInterrupt:
            number = SIGNAL["number"] or signal.SIGINT
            click.echo(f"\ninterrupted ({signal.Signals(number).name}): the open MLflow runs were marked KILLED",
                       err=True)
            sys.exit(128 + number)
    return wrapper


SIGNAL = {"number": None}


def stop_on_signal(signum, _frame) -> None:
    """SIGTERM and SIGHUP (what ``timeout``, ``kill``, a CI cancel and a closed terminal send) stop a
    command the way Ctrl-C does: the open runs are marked KILLED after their buffered points are
    written. Further signals are ignored while that cleanup runs, so it cannot be cut short."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    SIGNAL["number"] = signum
    raise KeyboardInterrupt
