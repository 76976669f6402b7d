"""Data: sources, the validated ``Ratings`` container, and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.files import read_udata, write_udata
from pipeline.data.movielens import CATALOG, fetch
from pipeline.data.ratings import DataError, Ratings, from_raw
from pipeline.data.readers import FORMATS, ReadOptions, read_ratings
from pipeline.data.split import (METHODS, Split, filter_min_counts, kfold_splits, make_splits, random_split,
                                 temporal_split, user_split)
from pipeline.data.synthetic import SyntheticSpec, generate

__all__ = [
    "CATALOG", "DataError", "FORMATS", "METHODS", "Ratings", "ReadOptions", "Split", "SyntheticSpec",
    "describe", "fetch", "filter_min_counts", "from_raw", "generate", "kfold_splits", "load_dataset", "load_predefined",
    "make_splits", "random_split", "read_ratings", "read_udata", "temporal_split", "user_split", "write_udata",
]


def load_dataset(source: str, options: ReadOptions = ReadOptions(), data_dir: str | Path = "data",
                 progress=None, synthetic: SyntheticSpec | None = None, cache: bool = True) -> Ratings:
    """``"synthetic"`` (the embedded generator), a MovieLens name (fetched on first use into
    ``data_dir``), or the path of a ratings file or archive. With ``cache``, parsed files are kept
    in ``data_dir/cache`` (see :mod:`pipeline.data.cache`)."""
    if source == "synthetic":
        return generate(synthetic or SyntheticSpec())
    cache_dir = cache_folder(data_dir) if cache else None
    if source in CATALOG:
        path = fetch(source, data_dir, progress)
        r = read_ratings(path, options, cache_dir)
        return Ratings(**{**r.__dict__, "name": source})
    return read_ratings(Path(source), options, cache_dir)


def cache_folder(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cache"


def load_predefined(train: str, test: str, validation: str | None = None,
                    options: ReadOptions = ReadOptions(), cache_dir: str | Path | None = None) -> Split:
    """A split the user already has (MovieLens 100K ``u1.base``/``u1.test`` ...), on one vocabulary.

    A (user, item) pair in more than one part is an error (it would leak the answer).
    """
    parts = [read_ratings(Path(p), options, cache_dir) for p in (train, validation, test) if p]
    raw_u = np.concatenate([r.user_ids[r.users] for r in parts])
    raw_i = np.concatenate([r.item_ids[r.items] for r in parts])
    rating = np.concatenate([r.ratings for r in parts])
    stamps = None if any(r.timestamps is None for r in parts) else np.concatenate([r.timestamps for r in parts])
    lo = min(r.rating_scale[0] for r in parts)
    hi = max(r.rating_scale[1] for r in parts)
    try:
        whole = from_raw(raw_u, raw_i, rating, stamps, rating_scale=options.rating_scale or (lo, hi),
                         name=parts[0].name, source=f"{train} + {test}")
    except DataError as exc:
        if "duplicate" in str(exc):
            raise DataError(f"the predefined split files share (user, item) pairs: {str(exc).split(': ', 1)[1]}") from None
        raise
    bounds = np.cumsum([0] + [len(r) for r in parts])
    idx = [np.arange(bounds[j], bounds[j + 1]) for j in range(len(parts))]
    train_idx, test_idx = idx[0], idx[-1]
    val_idx = idx[1] if validation else np.array([], dtype=np.int64)
    return Split(whole.subset(train_idx), whole.subset(val_idx), whole.subset(test_idx), seed=0, method="predefined")


def describe(ratings: Ratings, splits: list[Split]) -> dict:
    """Shape, density, rating histogram, count quantiles, and what each split part holds."""
    d = ratings.describe()
    values, counts = np.unique(ratings.ratings, return_counts=True)
    d["histogram"] = {f"{v:g}": int(c) for v, c in zip(values, counts)}
    q = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    per_user = np.bincount(ratings.users, minlength=ratings.n_users)
    per_item = np.bincount(ratings.items, minlength=ratings.n_items)
    d["per_user_quantiles"] = dict(zip(map(str, q), np.quantile(per_user, q).tolist()))
    d["per_item_quantiles"] = dict(zip(map(str, q), np.quantile(per_item, q).tolist()))
    d["has_timestamps"] = ratings.timestamps is not None
    d["splits"] = [{"method": s.method, "fold": s.fold, "train": len(s.train), "validation": len(s.validation),
                    "test": len(s.test), **s.cold_counts()} for s in splits]
    return d
