"""Reading and writing ratings files.

``u.data`` layout (MovieLens 100K): tab-separated ``user item rating timestamp``, no header.
That is also the layout ``recsys data synth`` writes, so generated and real data share one
reader. Errors come out as :class:`DataError` with the file named.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.ratings import DataError, Ratings, from_raw

UDATA_COLUMNS = ["user", "item", "rating", "timestamp"]


def dataset_name(path: Path) -> str:
    """A short name for the experiment: ``ml-100k/u.data`` -> ``ml-100k``."""
    path = Path(path)
    if path.name in {"u.data", "ratings.csv", "ratings.dat"} and path.parent.name:
        return path.parent.name
    return path.stem


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a ratings file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise DataError(f"{path}: looks binary, expected tab-separated text (user, item, rating, timestamp)")


def read_udata(path: str | os.PathLike, rating_scale: tuple[float, float] | None = (1.0, 5.0)) -> Ratings:
    """Read a MovieLens-100K-style ``u.data`` file (tab-separated, no header)."""
    path = Path(path)
    _check_readable(path)
    expected = "expected 4 tab-separated fields (user, item, rating, timestamp)"
    try:
        frame = pd.read_csv(path, sep="\t", header=None, engine="c", dtype=str, keep_default_na=False,
                            on_bad_lines="error")
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            raise DataError(f"{path}, line {found.group(2)}: {expected}, found {found.group(3)}") from None
        raise DataError(f"{path}: not a tab-separated ratings file ({_first_line(exc)})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (cannot decode as UTF-8)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no ratings") from None
    if frame.shape[1] != 4:
        raise DataError(f"{path}, line 1: {expected}, found {frame.shape[1]}")
    frame.columns = UDATA_COLUMNS
    empty = (frame.isna() | frame.eq("")).to_numpy()
    if empty.any():
        row, col = (int(a[0]) for a in np.nonzero(empty))
        raise DataError(f"{path}, line {row + 1}: {expected}; the {UDATA_COLUMNS[col]} is empty or missing")
    ratings = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(ratings)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(f"{path}, line {line}: rating {frame['rating'].iloc[line - 1]!r} is not a finite number")
    stamps = pd.to_numeric(frame["timestamp"], errors="coerce")
    if stamps.isna().any():
        line = int(np.flatnonzero(stamps.isna().to_numpy())[0]) + 1
        raise DataError(f"{path}, line {line}: timestamp {frame['timestamp'].iloc[line - 1]!r} is not a number")
    timestamps = stamps.to_numpy(dtype=np.int64)
    users = _as_ids(frame["user"])
    items = _as_ids(frame["item"])
    try:
        return from_raw(users, items, ratings, timestamps, rating_scale=rating_scale,
                        name=dataset_name(path), source=str(path))
    except DataError as exc:
        raise DataError(str(exc).replace(", row ", ", line ")) from None


def _as_ids(column: pd.Series) -> np.ndarray:
    """Integer ids stay integers (so they sort numerically); anything else stays a string."""
    numeric = pd.to_numeric(column, errors="coerce")
    if not numeric.isna().any() and (numeric == np.floor(numeric)).all():
        return numeric.to_numpy(dtype=np.int64)
    return column.to_numpy(dtype=str)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def write_udata(ratings: Ratings, path: str | os.PathLike) -> Path:
    """Write ``ratings`` in ``u.data`` layout (raw ids), atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = ratings.timestamps if ratings.timestamps is not None else np.zeros(len(ratings), np.int64)
    frame = pd.DataFrame({
        "user": ratings.user_ids[ratings.users],
        "item": ratings.item_ids[ratings.items],
        "rating": ratings.ratings.astype(np.int64) if np.all(ratings.ratings == np.rint(ratings.ratings)) else ratings.ratings,
        "timestamp": stamps,
    })
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, sep="\t", header=False, index=False)
    os.replace(tmp, path)
    return path
