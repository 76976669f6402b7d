"""Seeded, reproducible splits, and minimum-count filters.

A split never changes the vocabularies: indices mean the same users and items in every part.
Validation / test rows whose user or item has no training rating are *cold*: they stay, are
counted (:meth:`Split.cold_counts`) and are predicted from what is known.

Methods (one registry, :data:`SPLITTERS`):

``random``    shuffle all ratings with ``default_rng(seed)``, cut at the train/val/test fractions.
``user``      per-user holdout: each user's last ``k`` ratings by time go to test and the ``k``
              before those to validation (``last_k``); or, with ``last_k=None``, a random
              val/test fraction of each user's ratings (rounded down; a user keeps at least one
              training rating).
``temporal``  global by time: the earliest ratings train, the latest test. Cut at timestamp
              quantiles from the fractions, or test = ``timestamp >= cutoff`` and validation the
              latest val-fraction of the rest.
``kfold``     ``k`` folds of a random permutation; fold ``j`` is the test set of split ``j``, the
              validation set is a random val-fraction of the other folds. Every rating is in
              exactly one test fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from pipeline.data.ratings import DataError, Ratings, from_raw


@dataclass(frozen=True)
class Split:
    train: Ratings
    validation: Ratings
    test: Ratings
    seed: int
    method: str = "random"
    fold: int | None = None

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


def _check_fractions(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions must be three non-negative numbers adding to 1, got {fractions}")
    return fractions


def _make(ratings: Ratings, train_idx, val_idx, test_idx, seed: int, method: str, fold=None) -> Split:
    if len(train_idx) == 0:
        raise DataError(f"the {method} split leaves training empty ({len(ratings)} ratings)")
    return Split(ratings.subset(np.sort(train_idx)), ratings.subset(np.sort(val_idx)),
                 ratings.subset(np.sort(test_idx)), seed=seed, method=method, fold=fold)


FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test: the default split, said once


def random_split(ratings: Ratings, fractions=FRACTIONS, seed: int = 0) -> Split:
    """Random holdout at the given train / validation / test fractions."""
    fractions = _check_fractions(fractions)
    n = len(ratings)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return _make(ratings, order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:], seed, "random")


def user_split(ratings: Ratings, fractions=FRACTIONS, seed: int = 0, last_k: int | None = None) -> Split:
    """Per-user holdout: the last ``last_k`` by time (needs timestamps), or random fractions per user."""
    fractions = _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    n = len(ratings)
    if last_k is not None:
        if last_k < 1:
            raise DataError(f"last_k must be at least 1, got {last_k}")
        if ratings.timestamps is None:
            raise DataError("a last-k per-user split needs timestamps; this dataset has none")
        tiebreak = rng.random(n)
        order = np.lexsort((tiebreak, -ratings.timestamps, ratings.users))  # per user, newest first
    else:
        order = np.lexsort((rng.random(n), ratings.users))  # per user, random order
    users_sorted = ratings.users[order]
    starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)  # position within the user's block
    per_user = np.repeat(counts, counts)
    if last_k is not None:
        n_test = np.minimum(last_k, per_user - 1)
        n_val = np.minimum(last_k if fractions[1] > 0 else 0, np.maximum(per_user - 1 - n_test, 0))
    else:
        n_test = np.minimum(np.floor(per_user * fractions[2]).astype(int), per_user - 1)
        n_val = np.minimum(np.floor(per_user * fractions[1]).astype(int), per_user - 1 - n_test)
    in_test = rank < n_test
    in_val = ~in_test & (rank < n_test + n_val)
    in_train = ~in_test & ~in_val
    return _make(ratings, order[in_train], order[in_val], order[in_test], seed, "user")


def temporal_split(ratings: Ratings, fractions=FRACTIONS, seed: int = 0, cutoff: int | None = None) -> Split:
    """Global split by time: by timestamp quantiles, or at ``cutoff`` (test = ``t >= cutoff``)."""
    fractions = _check_fractions(fractions)
    if ratings.timestamps is None:
        raise DataError("a temporal split needs timestamps; this dataset has none")
    t = ratings.timestamps
    order = np.lexsort((np.arange(len(t)), t))  # oldest first, stable
    n = len(t)
    if cutoff is not None:
        test_mask = t[order] >= cutoff
        n_rest = int((~test_mask).sum())
        share = fractions[1] / max(fractions[0] + fractions[1], 1e-12)
        n_val = int(round(share * n_rest))
        rest = order[~test_mask]
        return _make(ratings, rest[:n_rest - n_val], rest[n_rest - n_val:], order[test_mask], seed, "temporal")
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return _make(ratings, order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:], seed, "temporal")


def kfold_splits(ratings: Ratings, k: int = 5, seed: int = 0, val_fraction: float = 0.1) -> Iterator[Split]:
    """``k`` splits; fold ``j`` is test once. Validation: ``val_fraction`` of the other folds."""
    if k < 2:
        raise DataError(f"k-fold needs at least 2 folds, got {k}")
    if len(ratings) < k:
        raise DataError(f"{len(ratings)} ratings cannot make {k} folds")
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(len(ratings)), k)
    for j in range(k):
        rest = np.concatenate([folds[i] for i in range(k) if i != j])
        rest = rest[np.random.default_rng([seed, j]).permutation(len(rest))]
        n_val = int(round(val_fraction * len(rest)))
        yield _make(ratings, rest[n_val:], rest[:n_val], folds[j], seed, "kfold", fold=j)


SPLITTERS: dict[str, Callable[..., Split]] = {"random": random_split, "user": user_split, "temporal": temporal_split}
METHODS = ("random", "user", "temporal", "kfold")


def make_splits(ratings: Ratings, method: str = "random", fractions=FRACTIONS, seed: int = 0,
                last_k: int | None = None, cutoff: int | None = None, folds: int = 5) -> list[Split]:
    """The split(s) of ``method``: one, or ``folds`` for k-fold."""
    if method == "kfold":
        fr = _check_fractions(fractions)
        return list(kfold_splits(ratings, folds, seed, val_fraction=fr[1] / max(fr[0] + fr[1], 1e-12)))
    if method == "user":
        return [user_split(ratings, fractions, seed, last_k=last_k)]
    if method == "temporal":
        return [temporal_split(ratings, fractions, seed, cutoff=cutoff)]
    if method == "random":
        return [random_split(ratings, fractions, seed)]
    raise DataError(f"unknown split method {method!r}; choose from {', '.join(METHODS)}")


def filter_min_counts(ratings: Ratings, min_user: int = 0, min_item: int = 0, max_rounds: int = 50) -> Ratings:
    """Drop users with fewer than ``min_user`` and items with fewer than ``min_item`` ratings,
    repeating until both hold (dropping items can push a user below the bar: a k-core).
    Vocabularies shrink to what is left, so indices stay dense."""
    if min_user <= 1 and min_item <= 1:
        return ratings
    keep = np.ones(len(ratings), bool)
    for _ in range(max_rounds):
        u_counts = np.bincount(ratings.users[keep], minlength=ratings.n_users)
        i_counts = np.bincount(ratings.items[keep], minlength=ratings.n_items)
        ok = keep & (u_counts[ratings.users] >= min_user) & (i_counts[ratings.items] >= min_item)
        if ok.sum() == keep.sum():
            break
        keep = ok
    if not keep.any():
        raise DataError(f"no rating is left after the minimum-count filters (users >= {min_user}, items >= {min_item})")
    sub = ratings.subset(np.flatnonzero(keep))
    return from_raw(sub.user_ids[sub.users], sub.item_ids[sub.items], sub.ratings, sub.timestamps,
                    rating_scale=ratings.rating_scale, name=ratings.name, source=ratings.source)
