"""Shared fixtures: tiny problems with known structure, and a per-test MLflow SQLite store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.data import SyntheticSpec, generate
from pipeline.testing import tiny_training_set


def tiny_ratings(n_users=5, n_items=4, density=0.7, seed=0, rank=2):
    """A few users and items, every user and item rated at least once, ratings on 1..5."""
    return tiny_training_set(n_users, n_items, density, seed, rank)


@pytest.fixture
def tiny():
    return tiny_ratings()


@pytest.fixture(scope="session")
def small_synthetic():
    """About 2,000 ratings shaped like MovieLens: big enough for splits, fast to fit."""
    return generate(SyntheticSpec(n_users=80, n_items=60, n_ratings=2000, min_per_user=5, seed=3))


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory):
    """One migrated SQLite store per session (creating one costs seconds); tests copy it."""
    from mlflow.tracking import MlflowClient
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, _mlflow_template, monkeypatch):
    db = tmp_path / "mlflow.db"
    shutil.copy(_mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def runner():
    from click.testing import CliRunner
    return CliRunner()


@pytest.fixture
def small_file(tmp_path, runner):
    """A synthetic ratings file of 1,200 ratings in a folder named "small" (its experiment's name)."""
    from pipeline.cli import cli
    out = tmp_path / "small" / "u.data"
    res = runner.invoke(cli, ["data", "synth", "--out", str(out), "--users", "60", "--items", "50",
                              "--ratings", "1200", "--seed", "2"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(autouse=True)
def _artifacts_stay_in_tmp(tmp_path, monkeypatch):
    """Commands run by the tests keep their MLflow artifacts under tmp_path, never in the project."""
    monkeypatch.setattr("pipeline.cli.output.project_root", lambda *_a, **_k: tmp_path)
