"""Seeded train / validation / test splits.

A split never changes the vocabularies: indices mean the same users and items in every part.
Users or items of validation and test that have no training rating are *cold*: they stay in
the evaluation sets, are counted, and are predicted from what is known (see
:func:`pipeline.evaluate.predict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.ratings import DataError, Ratings


@dataclass(frozen=True)
class Split:
    train: Ratings
    validation: Ratings
    test: Ratings
    seed: int
    method: str = "random"

    def cold_counts(self) -> dict:
        """Rows of validation / test whose user or item has no training rating."""
        seen_u = np.zeros(self.train.n_users, bool)
        seen_u[self.train.users] = True
        seen_i = np.zeros(self.train.n_items, bool)
        seen_i[self.train.items] = True
        out = {}
        for part in ("validation", "test"):
            r = getattr(self, part)
            out[f"{part}_cold_user_rows"] = int((~seen_u[r.users]).sum())
            out[f"{part}_cold_item_rows"] = int((~seen_i[r.items]).sum())
        return out


def random_split(ratings: Ratings, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Random holdout: shuffle with ``default_rng(seed)`` and cut at the given fractions."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions must be three non-negative numbers adding to 1, got {fractions}")
    n = len(ratings)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n_train == 0:
        raise DataError(f"the split leaves training empty ({n} ratings, train fraction {fractions[0]})")
    train_idx = np.sort(order[:n_train])
    val_idx = np.sort(order[n_train:n_train + n_val])
    test_idx = np.sort(order[n_train + n_val:])
    return Split(ratings.subset(train_idx), ratings.subset(val_idx), ratings.subset(test_idx), seed=seed)
