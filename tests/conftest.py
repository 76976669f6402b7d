"""Shared fixtures: tiny problems with known structure, and a per-test MLflow SQLite store."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipeline.data import SyntheticSpec, from_raw, generate


def tiny_ratings(n_users=5, n_items=4, density=0.7, seed=0, rank=2):
    """A few users and items, every user and item rated at least once, ratings on 1..5."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), np.arange(n_users) % n_items] = True
    mask[np.arange(n_items) % n_users, np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    P, Q = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    r = np.clip(np.rint(3 + np.einsum("nk,nk->n", P[u], Q[i]) + rng.normal(0, 0.3, len(u))), 1, 5)
    return from_raw(u + 1, i + 1, r, rating_scale=(1.0, 5.0), name="tiny")


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
