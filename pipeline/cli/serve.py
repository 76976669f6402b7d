"""Serving: top-n lists from a logged model."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import cli
from pipeline.cli.errors import input_errors
from pipeline.cli.options import TRACKING_URI
from pipeline.cli.types import InputError
from pipeline.config import default_tracking_uri


@cli.command()
@click.option("--model-uri", required=True, help="A logged model: models:/<model_id> (printed by compare, and the run tag model_uri), or models:/<name>/<version> from the registry.")
@click.option("--user", "user_ids", multiple=True, help="A raw user id (repeatable).")
@click.option("--users", "users_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of raw user ids, one per line (vectorized over all of them).")
@click.option("-n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="Items per user.")
@TRACKING_URI
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
    for u in rec.unknown_users(users):
        click.echo(f"note: user {u} is unknown to the model; showing the fallback ranking", err=True)
    click.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
