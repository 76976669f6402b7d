"""A binary cache of parsed ratings files, keyed by the source's checksum.

Parsing text is the slow part of loading a large file (MovieLens 25M's ``ratings.csv``: 25M rows,
678 MB) and so is turning raw ids into inner indices (two sorts of 25M keys, a duplicate check).
Once a file has been read and validated, its ``Ratings`` arrays are saved as one uncompressed
``.npz`` (no pickles) under ``cache_dir``, named by

    sha256(file bytes) + how it was read (``ReadOptions``) + ``FORMAT`` (bumped when the layout changes)

so an edited file, different read options or a new cache layout never hit a stale entry; there is
nothing to invalidate by hand (delete the folder to reclaim the space). A cache that cannot be
written (read-only disk, no space) or read (truncated entry) is skipped, never an error: the file
is parsed as if there were no cache. An entry is checked on every load against what can be
checked cheaply: it names its source's whole SHA-256 and size (an entry made for another file,
copied or renamed under this one's key, is parsed again), the archive member it came from must be
one the source holds, and its arrays keep the invariants of ``Ratings``. What it cannot catch is an
entry forged with this file's checksum and other ratings: that needs write access to the cache
folder, the same trust as the data folder it sits in. Side information (titles, genres, user features) is not
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

FORMAT = 3  # 2: ids are labels ("007" and "7" two ids); 3: entries name their source's SHA-256 and size
_CHUNK = 1 << 22


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def cache_key(digest: str, options) -> str:
    """The entry's name: the file's checksum (``file_sha256``), the read options and the cache format."""
    opts = hashlib.sha256(repr((FORMAT, sorted(asdict(options).items()))).encode()).hexdigest()[:12]
    return f"{digest[:32]}-{opts}"


def load(cache_dir: Path, key: str, source: Path, digest: str) -> tuple[Ratings, str | None] | None:
    """The cached ``Ratings`` (without side information) and the archive member they came from,
    or ``None`` on a miss or an entry that is bad or not ``source``'s (SHA-256 ``digest``)."""
    entry = Path(cache_dir) / f"{key}.npz"
    if not entry.is_file():
        return None
    try:
        with np.load(entry, allow_pickle=False) as z:
            if str(z["source_sha256"]) != digest or int(z["source_size"]) != source.stat().st_size:
                return None  # another file's entry under this one's name
            scale = z["rating_scale"]
            ratings = Ratings(users=z["users"], items=z["items"], ratings=z["ratings"], user_ids=z["user_ids"],
                              item_ids=z["item_ids"], rating_scale=(float(scale[0]), float(scale[1])),
                              timestamps=z["timestamps"] if bool(z["has_timestamps"]) else None,
                              name=str(z["name"]), source=str(z["source"]))
            member = str(z["member"]) or None
        if member is not None and not _holds(source, member):
            return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # truncated or foreign: parse again
        return None
    return (ratings, member) if _valid(ratings) else None


def _holds(source: Path, member: str) -> bool:
    """Whether the archive ``source`` has a member named ``member`` (the name the entry gives)."""
    if not zipfile.is_zipfile(source):
        return False
    with zipfile.ZipFile(source) as zf:
        return member in zf.namelist()


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


def store(cache_dir: Path, key: str, ratings: Ratings, source: Path, digest: str,
          member: str | None = None) -> Path | None:
    """Write ``source``'s entry atomically (temporary file, then rename); ``None`` if it cannot be written."""
    cache_dir = Path(cache_dir)
    entry = cache_dir / f"{key}.npz"
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp.npz"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        has_t = ratings.timestamps is not None
        np.savez(tmp, users=ratings.users, items=ratings.items, ratings=ratings.ratings,
                 user_ids=ratings.user_ids, item_ids=ratings.item_ids, rating_scale=np.array(ratings.rating_scale),
                 timestamps=ratings.timestamps if has_t else np.empty(0, np.int64), has_timestamps=has_t,
                 name=ratings.name, source=ratings.source, member=member or "", source_sha256=digest,
                 source_size=source.stat().st_size)
        os.replace(tmp, entry)
        return entry
    except (OSError, ValueError):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return None
