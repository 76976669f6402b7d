"""Writing ratings files (``u.data`` layout), and the ``u.data`` reader kept as a shortcut."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.ratings import Ratings
from pipeline.data.readers import ReadOptions, read_ratings


def read_udata(path: str | os.PathLike) -> Ratings:
    """Read a MovieLens-100K-style ``u.data`` file (tab-separated, no header, 1..5 stars)."""
    return read_ratings(path, ReadOptions(format="udata"))


def write_udata(ratings: Ratings, path: str | os.PathLike) -> Path:
    """Write ``ratings`` in ``u.data`` layout (raw ids), atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = ratings.timestamps if ratings.timestamps is not None else np.zeros(len(ratings), np.int64)
    whole = np.all(ratings.ratings == np.rint(ratings.ratings))
    frame = pd.DataFrame({
        "user": ratings.user_ids[ratings.users],
        "item": ratings.item_ids[ratings.items],
        "rating": ratings.ratings.astype(np.int64) if whole else ratings.ratings,
        "timestamp": stamps,
    })
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, sep="\t", header=False, index=False)
    os.replace(tmp, path)
    return path
