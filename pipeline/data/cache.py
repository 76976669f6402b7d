"""A binary cache of parsed ratings files, keyed by the source's checksum.

Parsing text is the slow part of loading a large file (MovieLens 25M's ``ratings.csv``: 25M rows,
678 MB) and so is turning raw ids into inner indices (two sorts of 25M keys, a duplicate check).
Once a file has been read and validated, its ``Ratings`` arrays are saved as one uncompressed
``.npz`` (no pickles) under ``cache_dir``, named by

    sha256(file bytes) + how it was read (``ReadOptions``) + ``FORMAT`` (bumped when the layout changes)

so an edited file, different read options or a new cache layout never hit a stale entry; there is
nothing to invalidate by hand (delete the folder to reclaim the space). A cache that cannot be
written (read-only disk, no space) or read (truncated entry) is skipped, never an error: the file
is parsed as if there were no cache. Side information (titles, genres, user features) is not
cached; it is read from the small files next to the ratings each time.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.data.ratings import Ratings

FORMAT = 2  # 2: ids are labels ("007" and "7" two ids), so entries of 1 are not reused
_CHUNK = 1 << 22


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def cache_key(path: Path, options) -> str:
    """The entry's name: the file's checksum, the read options and the cache format."""
    opts = hashlib.sha256(repr((FORMAT, sorted(asdict(options).items()))).encode()).hexdigest()[:12]
    return f"{file_sha256(path)[:32]}-{opts}"


def load(cache_dir: Path, key: str) -> tuple[Ratings, str | None] | None:
    """The cached ``Ratings`` (without side information) and the archive member they came from,
    or ``None`` on a miss or a bad entry."""
    entry = Path(cache_dir) / f"{key}.npz"
    if not entry.is_file():
        return None
    try:
        with np.load(entry, allow_pickle=False) as z:
            scale = z["rating_scale"]
            ratings = Ratings(users=z["users"], items=z["items"], ratings=z["ratings"], user_ids=z["user_ids"],
                              item_ids=z["item_ids"], rating_scale=(float(scale[0]), float(scale[1])),
                              timestamps=z["timestamps"] if bool(z["has_timestamps"]) else None,
                              name=str(z["name"]), source=str(z["source"]))
            member = str(z["member"]) or None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # truncated or foreign: parse again
        return None
    return (ratings, member) if _valid(ratings) else None


def _valid(r: Ratings) -> bool:
    """An entry's invariants, checked on every load (a crafted or damaged entry is parsed again,
    never trusted): integer indices inside the vocabularies, finite ratings inside the scale,
    sorted unique vocabularies."""
    n = len(r.ratings)
    lo, hi = r.rating_scale
    checks = (
        r.users.dtype.kind in "iu" and r.items.dtype.kind in "iu" and r.ratings.dtype.kind == "f",
        len(r.users) == n and len(r.items) == n and (r.timestamps is None or len(r.timestamps) == n),
        n == 0 or (0 <= r.users.min() and r.users.max() < len(r.user_ids)),
        n == 0 or (0 <= r.items.min() and r.items.max() < len(r.item_ids)),
        bool(np.isfinite(r.ratings).all()) and math.isfinite(lo) and math.isfinite(hi) and lo < hi,
        n == 0 or (lo <= r.ratings.min() and r.ratings.max() <= hi),
        all(len(v) < 2 or bool((v[1:] > v[:-1]).all()) for v in (r.user_ids, r.item_ids)),
    )
    return all(checks)


def store(cache_dir: Path, key: str, ratings: Ratings, member: str | None = None) -> Path | None:
    """Write the entry atomically (temporary file, then rename); ``None`` if it cannot be written."""
    cache_dir = Path(cache_dir)
    entry = cache_dir / f"{key}.npz"
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp.npz"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        has_t = ratings.timestamps is not None
        np.savez(tmp, users=ratings.users, items=ratings.items, ratings=ratings.ratings,
                 user_ids=ratings.user_ids, item_ids=ratings.item_ids, rating_scale=np.array(ratings.rating_scale),
                 timestamps=ratings.timestamps if has_t else np.empty(0, np.int64), has_timestamps=has_t,
                 name=ratings.name, source=ratings.source, member=member or "")
        os.replace(tmp, entry)
        return entry
    except (OSError, ValueError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return None
