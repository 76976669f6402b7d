"""Data: the synthetic generator, u.data files, validation, the random split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import DataError, SyntheticSpec, from_raw, generate, load_dataset, random_split, read_udata, write_udata


def test_default_synthetic_is_shaped_like_movielens_100k():
    r = generate()
    assert (r.n_users, r.n_items, len(r)) == (943, 1682, 100_000)
    assert set(np.unique(r.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.3 < r.ratings.mean() < 3.8 and 0.9 < r.ratings.std() < 1.25
    per_user = np.bincount(r.users)
    per_item = np.bincount(r.items, minlength=r.n_items)
    assert per_user.min() >= 20 and per_item.min() >= 1
    # skew: the most active user and the most popular item are far above the median
    assert per_user.max() > 5 * np.median(per_user) and per_item.max() > 10 * np.median(per_item)
    assert r.users.dtype == np.int32 and r.items.dtype == np.int32 and r.ratings.dtype == np.float64


def test_synthetic_is_deterministic_in_the_seed():
    a = generate(SyntheticSpec(n_users=50, n_items=40, n_ratings=800, seed=7))
    b = generate(SyntheticSpec(n_users=50, n_items=40, n_ratings=800, seed=7))
    c = generate(SyntheticSpec(n_users=50, n_items=40, n_ratings=800, seed=8))
    for name in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.ratings, c.ratings) or not np.array_equal(a.items, c.items)


def test_synthetic_rejects_impossible_sizes():
    with pytest.raises(DataError, match="n_ratings"):
        generate(SyntheticSpec(n_users=10, n_items=4, n_ratings=1000))


def test_udata_round_trip(tmp_path, small_synthetic):
    path = write_udata(small_synthetic, tmp_path / "synthetic" / "u.data")
    back = read_udata(path)
    assert back.name == "synthetic" and len(back) == len(small_synthetic)
    np.testing.assert_array_equal(back.ratings, small_synthetic.ratings)
    np.testing.assert_array_equal(back.user_ids[back.users], small_synthetic.user_ids[small_synthetic.users])
    np.testing.assert_array_equal(back.timestamps, small_synthetic.timestamps)
    assert not (tmp_path / "synthetic" / "u.data.part").exists()


def test_ids_are_mapped_in_numeric_order(tmp_path):
    p = tmp_path / "u.data"
    p.write_text("10\t2\t5\t100\n9\t10\t3\t101\n10\t10\t4\t102\n")
    r = read_udata(p)
    assert list(r.user_ids) == [9, 10] and list(r.item_ids) == [2, 10]
    assert list(r.users) == [1, 0, 1] and list(r.items) == [0, 1, 1]


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("1\t2\tfive\t100\n", "line 1: rating 'five' is not a finite number"),
    ("1\t2\t4\t100\n1\t3\tnan\t100\n", "line 2: rating 'nan' is not a finite number"),
    ("1\t2\t4\t100\n1\t3\t9\t100\n", "line 2: rating 9 is outside the scale 1..5"),
    ("1\t2\t4\t100\n1\t2\t3\t101\n", "1 duplicate (user, item) pairs, e.g. user 1 item 2"),
    ("1\t2\t4\t100\n1,3,4,100\n", "line 2: expected 4 tab-separated fields, found 1; the line looks comma-separated"),
    ("1\t2\t4\t100\t7\n", "line 1: expected 4 tab-separated fields (user, item, rating, timestamp), found 5"),
    ("1\t2\t4\t100\n1\t3\t4\t100\t7\n", "line 2: expected 4 fields, found 5"),
    ("1\t2\n", "found 2"),
    ("1\t2\t4\t100\n1\t3\t4\n", "line 2: expected 4 tab-separated fields, found 3"),
    ("1\t\t4\t100\n", "line 1: the item field is empty"),
])
def test_bad_udata_gives_a_specific_error(tmp_path, content, message):
    p = tmp_path / "u.data"
    p.write_text(content)
    with pytest.raises(DataError) as info:
        read_udata(p)
    assert message in str(info.value) and str(p) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_directory_and_binary_inputs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope.data"))
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(str(tmp_path))
    binary = tmp_path / "blob.data"
    binary.write_bytes(b"\x89PNG\x00\x00\x01")
    with pytest.raises(DataError, match="binary"):
        load_dataset(str(binary))


def test_random_split_sizes_disjoint_deterministic(small_synthetic):
    s1 = random_split(small_synthetic, (0.8, 0.1, 0.1), seed=4)
    s2 = random_split(small_synthetic, (0.8, 0.1, 0.1), seed=4)
    s3 = random_split(small_synthetic, (0.8, 0.1, 0.1), seed=5)
    n = len(small_synthetic)
    assert (len(s1.train), len(s1.validation), len(s1.test)) == (1600, 200, 200)
    key = lambda r: set(zip(r.users.tolist(), r.items.tolist()))
    parts = [key(s1.train), key(s1.validation), key(s1.test)]
    assert sum(map(len, parts)) == n and len(set.union(*parts)) == n
    np.testing.assert_array_equal(s1.test.ratings, s2.test.ratings)
    assert key(s1.test) != key(s3.test)


def test_split_keeps_vocabulary_and_counts_cold_rows():
    r = from_raw(np.array([1, 1, 2, 3]), np.array([1, 2, 1, 3]), np.array([4.0, 3.0, 5.0, 1.0]), rating_scale=(1, 5))
    s = random_split(r, (0.5, 0.0, 0.5), seed=0)
    assert s.test.n_users == r.n_users == 3
    cold = s.cold_counts()
    seen_u = set(s.train.users.tolist())
    assert cold["test_cold_user_rows"] == sum(u not in seen_u for u in s.test.users.tolist())


def test_split_rejects_bad_fractions_and_empty_train(small_synthetic):
    with pytest.raises(DataError, match="adding to 1"):
        random_split(small_synthetic, (0.5, 0.1, 0.1))
    with pytest.raises(DataError, match="training empty"):
        random_split(small_synthetic, (0.0, 0.5, 0.5))
