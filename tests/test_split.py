"""Splits: sizes, disjointness, determinism under a seed, temporal order, folds, filters."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import DataError, filter_min_counts, from_raw, kfold_splits, make_splits, temporal_split, user_split


def keys(r):
    return set(zip(r.users.tolist(), r.items.tolist()))


def assert_partition(split, n):
    parts = [keys(split.train), keys(split.validation), keys(split.test)]
    assert sum(map(len, parts)) == n and len(set.union(*parts)) == n


@pytest.mark.parametrize("method", ["random", "user", "temporal"])
def test_each_method_partitions_and_is_deterministic(small_synthetic, method):
    a = make_splits(small_synthetic, method, seed=3)[0]
    b = make_splits(small_synthetic, method, seed=3)[0]
    assert_partition(a, len(small_synthetic))
    np.testing.assert_array_equal(a.test.ratings, b.test.ratings)
    assert keys(a.test) == keys(b.test)
    assert a.method == method


def test_random_seeds_differ(small_synthetic):
    assert keys(make_splits(small_synthetic, "random", seed=1)[0].test) != keys(make_splits(small_synthetic, "random", seed=2)[0].test)


def test_temporal_split_respects_time(small_synthetic):
    s = temporal_split(small_synthetic, (0.7, 0.1, 0.2))
    assert s.train.timestamps.max() <= s.validation.timestamps.min()
    assert s.validation.timestamps.max() <= s.test.timestamps.min()
    assert len(s.test) == round(0.2 * len(small_synthetic)) or abs(len(s.test) - 0.2 * len(small_synthetic)) <= 1


def test_temporal_cutoff(small_synthetic):
    t = small_synthetic.timestamps
    cutoff = int(np.quantile(t, 0.75))
    s = temporal_split(small_synthetic, cutoff=cutoff)
    assert s.test.timestamps.min() >= cutoff and s.train.timestamps.max() < cutoff
    assert len(s.test) == int((t >= cutoff).sum())


def test_user_last_k_takes_each_users_latest(small_synthetic):
    s = user_split(small_synthetic, last_k=2)
    assert_partition(s, len(small_synthetic))
    r = small_synthetic
    for u in np.unique(r.users)[:20]:
        test_t = s.test.timestamps[s.test.users == u]
        train_t = s.train.timestamps[s.train.users == u]
        assert len(test_t) == min(2, (r.users == u).sum() - 1)
        assert train_t.max() <= test_t.min()
        assert len(train_t) >= 1  # everyone keeps a training rating


def test_user_fraction_split_per_user(small_synthetic):
    s = user_split(small_synthetic, (0.6, 0.2, 0.2), seed=1)
    counts = np.bincount(small_synthetic.users)
    test_counts = np.bincount(s.test.users, minlength=len(counts))
    np.testing.assert_array_equal(test_counts, np.minimum(np.floor(counts * 0.2), counts - 1))


def test_kfold_every_rating_in_exactly_one_test_fold(small_synthetic):
    folds = list(kfold_splits(small_synthetic, k=4, seed=0))
    tests = [keys(f.test) for f in folds]
    assert sum(map(len, tests)) == len(small_synthetic) and len(set.union(*tests)) == len(small_synthetic)
    for f in folds:
        assert_partition(f, len(small_synthetic))
    assert [f.fold for f in folds] == [0, 1, 2, 3]


def test_splits_that_cannot_be_made():
    r = from_raw(np.array([1, 2]), np.array([1, 1]), np.array([3.0, 4.0]), rating_scale=(1, 5))
    with pytest.raises(DataError, match="timestamps"):
        temporal_split(r)
    with pytest.raises(DataError, match="timestamps"):
        user_split(r, last_k=1)
    with pytest.raises(DataError, match="training empty"):
        make_splits(r, "random", (0.0, 0.0, 1.0))
    with pytest.raises(DataError, match="folds"):
        list(kfold_splits(r, k=3))
    with pytest.raises(DataError, match="unknown split"):
        make_splits(r, "bootstrap")


def test_min_count_filters_reach_a_fixed_point(small_synthetic):
    f = filter_min_counts(small_synthetic, min_user=18, min_item=18)
    assert np.bincount(f.users).min() >= 18 and np.bincount(f.items).min() >= 18
    assert len(f) < len(small_synthetic) and f.n_users == len(np.unique(f.users))
    with pytest.raises(DataError, match="no rating is left"):
        filter_min_counts(small_synthetic, min_user=10_000)
