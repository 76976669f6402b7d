"""Run configuration: dataclasses with the defaults, TOML files as CLI defaults, where things go.

A TOML config file supplies defaults for CLI options (command-line flags still win). Keys in
``[defaults]`` apply to every command; a table named after a command (``[compare]``,
``[train]``, ``[check-grad]``) applies to that one. Keys are option names with ``_`` for ``-``::

    [defaults]
    dataset = "data/ml-100k/u.data"
    rank = 20

    [compare]
    optimizers = "newton-cg,lbfgs"
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.data.readers import ReadOptions
from pipeline.data.split import FRACTIONS
from pipeline.objectives import model_spec
from pipeline.optim.base import StoppingRule

DEFAULT_OPTIMIZERS = ("gd", "gd-bb", "newton-cg", "newton-pcg", "lbfgs", "als")


@dataclass(frozen=True)
class ModelConfig:
    """A model (a name in ``pipeline.objectives.MODELS``) and its hyperparameters (that model's
    dataclass; its defaults when not given)."""

    model: str = "mf"
    hyper: Any = None

    def __post_init__(self):
        spec = model_spec(self.model)
        if self.hyper is None:
            object.__setattr__(self, "hyper", spec.make())
        elif not isinstance(self.hyper, spec.hyper):
            raise TypeError(f"hyperparameters of {type(self.hyper).__name__} given for model {self.model}")

    @classmethod
    def of(cls, model: str = "mf", **values) -> "ModelConfig":
        """``ModelConfig.of("mf", rank=20)``: the named hyperparameters over the model's defaults."""
        return cls(model, model_spec(model).make(**values))

    def with_values(self, **values) -> "ModelConfig":
        """A copy with some hyperparameters changed (an unknown name is a ValueError)."""
        return ModelConfig(self.model, model_spec(self.model).make(**{**asdict(self.hyper), **values}))

    def params(self) -> dict:
        """What every run logs about the model: its name and each hyperparameter."""
        return {"model": self.model, **asdict(self.hyper)}


@dataclass(frozen=True)
class DataConfig:
    """Where the ratings come from and how they are split (see ``pipeline.data``)."""

    dataset: str = "synthetic"
    fractions: tuple[float, float, float] = FRACTIONS
    seed: int = 0
    method: str = "random"           # random | user | temporal | kfold
    last_k: int | None = None        # user split: the last k per user by time
    cutoff: int | None = None        # temporal split: test = timestamp >= cutoff
    folds: int = 5                   # kfold
    min_user_ratings: int = 0
    min_item_ratings: int = 0
    train_file: str | None = None    # a predefined split (u1.base / u1.test ...)
    validation_file: str | None = None
    test_file: str | None = None
    read: ReadOptions = field(default_factory=ReadOptions)  # format, column names, scale, duplicates
    data_dir: str = "data"
    cache: bool = True               # keep parsed files as binary entries in data_dir/cache


@dataclass(frozen=True)
class StudyConfig:
    """A study's suite and budgets, with its defaults said here once: every problem of
    ``datasets x grid x seeds`` (``grid``: hyperparameter -> values; a model without one of them
    is an error), each method stopped by ``rule``, each problem's ``f*`` from
    ``reference_passes`` passes per phase."""

    datasets: tuple[str, ...] = ("synthetic",)
    grid: dict = field(default_factory=lambda: {"rank": (5, 20, 50), "reg": (0.02, 0.1)})
    seeds: tuple[int, ...] = (0, 1, 2)
    reference_passes: int = 2000
    # As tight as the reference, so the targets, not the gradient test, end the race; the seconds
    # set so that the passes budget, the same on any machine, ends every run of the default suite here.
    rule: StoppingRule = field(default_factory=lambda: StoppingRule(gtol=1e-10, max_passes=600, max_seconds=30.0))


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rule: StoppingRule = field(default_factory=StoppingRule)  # its defaults are every command's
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    optimizer_options: dict = field(default_factory=dict)  # method -> its own options, e.g. {"gd": {"step": 0.5}}
    seed: int = 0
    seeds: tuple[int, ...] = ()  # several initialization seeds: one repeat each
    kernel: str = "auto"         # what computes the sums on each machine (numba, numpy; auto: numba); not a hyperparameter
    log_models: bool = True      # log every fit as an MLflow pyfunc model


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding this project's
    ``pyproject.toml``; the cwd when there is none (an installed copy used elsewhere)."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and 'name = "recsys"' in candidate.read_text(errors="ignore"):
            return folder
    return start


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or an SQLite store ``mlflow.db`` in the project root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def load_toml_defaults(path: str | os.PathLike, commands: list[str],
                       known: dict[str, set[str]] | None = None) -> dict[str, dict]:
    """Click ``default_map`` from a TOML file (see the module docstring).

    With ``known`` (command -> its option names), a key in a command's table must be one of that
    command's options and a key in ``[defaults]`` one of some command's: an unknown key is an error
    naming the closest known one (a typo such as ``rnak`` must not be ignored)."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    unknown = [name for name in data if name not in commands and name != "defaults"]
    if unknown:
        raise ValueError(f"unknown table [{unknown[0]}]; tables are [defaults] and one per command: "
                         + ", ".join(commands))
    common = {k.replace("-", "_"): v for k, v in data.get("defaults", {}).items()}
    if known is not None:
        everywhere = set().union(*known.values())
        for table, allowed in [("defaults", everywhere)] + [(c, known.get(c, everywhere)) for c in commands]:
            raw = data.get(table, {})
            for key in (raw if isinstance(raw, dict) else {}):
                if key.replace("-", "_") not in allowed:
                    close = difflib.get_close_matches(key.replace("-", "_"), sorted(allowed), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ValueError(f"unknown key {key!r} in [{table}]{hint}")
    out = {}
    for name in commands:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table")
        out[name] = {**common, **{k.replace("-", "_"): v for k, v in table.items()}}
    return out
