"""The data group: synth, fetch, describe, split."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import cli
from pipeline.cli.config import data_config
from pipeline.cli.errors import input_errors
from pipeline.cli.options import data_options_no_dataset, split_options
from pipeline.cli.output import DownloadProgress
from pipeline.cli.types import Finite
from pipeline.config import RunConfig
from pipeline.data import SyntheticSpec, generate, write_udata


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
    d = experiment.describe(RunConfig(data=data_config(kw)), progress=DownloadProgress())
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
    _, splits = experiment.load_splits(data_config(kw), progress=DownloadProgress())
    for s in splits:
        folder = Path(out_dir) / (f"fold-{s.fold}" if s.fold is not None else "")
        for part in ("train", "validation", "test"):
            write_udata(getattr(s, part), folder / f"{part}.tsv")
        click.echo(f"wrote {folder}: train {len(s.train):,}, validation {len(s.validation):,}, test {len(s.test):,}")
