"""The tracker that records nothing (``--no-tracking``): the same methods as
:class:`pipeline.tracking.MlflowTracker`, so the experiment has one code path whether or not it
logs. Runs have no id (``None``); nothing here imports MLflow."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class NullTracker:
    records = False  # nothing is kept: callers may skip work done only to be logged (figures)
    tracking_uri = None
    experiment_id = None

    def use_experiment(self, name: str) -> None:
        return None

    @contextmanager
    def run(self, name: str, params: dict | None = None, parent_id: str | None = None,
            tags: dict | None = None) -> Iterator[None]:
        yield None

    def log_params(self, run_id, params: dict) -> None:
        pass

    def log_metrics(self, run_id, metrics: dict, step: int = 0) -> None:
        pass

    def set_tags(self, run_id, tags: dict) -> None:
        pass

    def curve_listener(self, run_id, f_star: float | None = None):
        return lambda _name, _record: None

    def log_dataset(self, run_id, frame, name: str, source: str, context: str) -> None:
        pass

    def log_artifact(self, run_id, path, artifact_path: str | None = None) -> None:
        pass

    def log_model(self, run_id, recommender, name: str, step: int = 0) -> None:
        return None

    def links(self, run_ids: list, ui_url: str | None = None, race_ids: list | None = None) -> dict[str, str]:
        return {}
