"""Data: sources, the validated ``Ratings`` container, and splits."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.files import read_udata, write_udata
from pipeline.data.ratings import DataError, Ratings, from_raw
from pipeline.data.split import Split, random_split
from pipeline.data.synthetic import SyntheticSpec, generate

__all__ = [
    "DataError", "Ratings", "Split", "SyntheticSpec", "from_raw", "generate",
    "load_dataset", "random_split", "read_udata", "write_udata",
]


def load_dataset(name_or_path: str, synthetic: SyntheticSpec | None = None) -> Ratings:
    """``"synthetic"`` (the embedded generator) or the path of a ``u.data``-style file."""
    if name_or_path == "synthetic":
        return generate(synthetic or SyntheticSpec())
    return read_udata(Path(name_or_path))
