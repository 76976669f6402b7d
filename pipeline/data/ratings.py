"""The ``Ratings`` container: one place where raw ids become inner indices.

Conventions
-----------
``users`` and ``items`` are int32 inner indices into the vocabularies ``user_ids`` and
``item_ids`` (arrays of the raw ids, as read). ``ratings`` is float64. ``timestamps`` is
int64 seconds or ``None``. ``rating_scale`` is the closed interval predictions are clipped to.
Every subset made by a split keeps the full vocabularies, so an index means the same user or
item in train, validation and test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data: the message says what is wrong and where, in one line."""


@dataclass(frozen=True)
class Ratings:
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    rating_scale: tuple[float, float]
    timestamps: np.ndarray | None = None
    name: str = "ratings"
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ratings)
        if len(self.users) != n or len(self.items) != n:
            raise DataError("users, items and ratings must have the same length")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise DataError("timestamps must have one entry per rating")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.ratings)

    def concat(self, other: "Ratings") -> "Ratings":
        """This and ``other``, two subsets of one dataset (same vocabularies), as one."""
        cat = lambda x, y: None if x is None or y is None else np.concatenate([x, y])  # noqa: E731
        return Ratings(users=np.concatenate([self.users, other.users]), items=np.concatenate([self.items, other.items]),
                       ratings=np.concatenate([self.ratings, other.ratings]), user_ids=self.user_ids,
                       item_ids=self.item_ids, rating_scale=self.rating_scale,
                       timestamps=cat(self.timestamps, other.timestamps), name=self.name, source=self.source,
                       extra=self.extra)

    def to_frame(self) -> "pd.DataFrame":
        """``user, item, rating[, timestamp]`` in raw ids (what MLflow's dataset record holds)."""
        import pandas as pd
        frame = pd.DataFrame({"user": self.user_ids[self.users], "item": self.item_ids[self.items],
                              "rating": self.ratings})
        if self.timestamps is not None:
            frame["timestamp"] = self.timestamps
        return frame

    def subset(self, index: np.ndarray) -> "Ratings":
        """The ratings at ``index`` (positions or a boolean mask), same vocabularies."""
        return Ratings(
            users=self.users[index],
            items=self.items[index],
            ratings=self.ratings[index],
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            rating_scale=self.rating_scale,
            timestamps=None if self.timestamps is None else self.timestamps[index],
            name=self.name,
            source=self.source,
            extra=self.extra,
        )

    def describe(self) -> dict:
        """Shape and simple statistics, for logs and the CLI."""
        n = len(self)
        density = n / max(1, self.n_users * self.n_items)
        return {
            "n_ratings": n,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "density": density,
            "rating_mean": float(self.ratings.mean()) if n else float("nan"),
            "rating_min": self.rating_scale[0],
            "rating_max": self.rating_scale[1],
        }


def from_raw(
    user_raw: np.ndarray,
    item_raw: np.ndarray,
    ratings: np.ndarray,
    timestamps: np.ndarray | None = None,
    *,
    rating_scale: tuple[float, float] | None = None,
    name: str = "ratings",
    source: str = "",
) -> Ratings:
    """Build a validated ``Ratings`` from raw columns.

    Raw ids are mapped to inner indices in sorted order of the raw ids (stable, so the same
    file always gives the same indices). Validation: at least one rating; every rating finite
    and inside ``rating_scale`` (inferred as [min, max] when not given); no duplicate
    (user, item) pair.
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    if len(ratings) == 0:
        raise DataError(f"{source or name}: no ratings")
    bad = ~np.isfinite(ratings)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source or name}, row {first + 1}: rating is not a finite number")
    if rating_scale is None:
        rating_scale = (float(ratings.min()), float(ratings.max()))
    lo, hi = rating_scale
    if not lo < hi:
        hint = " (every rating is the same: give the scale with --rating-scale LO,HI)" if lo == hi else ""
        raise DataError(f"{source or name}: rating scale {lo}..{hi} is empty{hint}")
    outside = (ratings < lo) | (ratings > hi)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"{source or name}, row {first + 1}: rating {ratings[first]:g} is outside the scale {lo:g}..{hi:g}"
        )
    user_ids, users = np.unique(np.asarray(user_raw), return_inverse=True)
    item_ids, items = np.unique(np.asarray(item_raw), return_inverse=True)
    users = users.astype(np.int32).ravel()
    items = items.astype(np.int32).ravel()
    key = np.sort(users.astype(np.int64) * len(item_ids) + items)
    if len(key) > 1 and (key[1:] == key[:-1]).any():
        uniq, counts = np.unique(key, return_counts=True)
        dup = uniq[counts > 1]
        u, i = divmod(int(dup[0]), len(item_ids))
        raise DataError(
            f"{source or name}: {int((counts[counts > 1] - 1).sum())} duplicate (user, item) pairs, "
            f"e.g. user {user_ids[u]} item {item_ids[i]}"
        )
    return Ratings(
        users=users,
        items=items,
        ratings=ratings,
        user_ids=user_ids,
        item_ids=item_ids,
        rating_scale=(float(lo), float(hi)),
        timestamps=None if timestamps is None else np.asarray(timestamps, dtype=np.int64),
        name=name,
        source=source,
    )
