"""Every format and archive layout, built in the test from a few rows; one test per bad input."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data import DataError, ReadOptions, load_predefined, read_ratings

ROWS = [(1, 10, 4, 881250949), (1, 20, 3, 881250950), (2, 10, 5, 881250951), (3, 30, 1, 881250952),
        (2, 30, 2, 881250953)]


def udata_text(rows=ROWS):
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)


def dat_text(rows=ROWS):
    return "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows)


def csv_text(rows=ROWS):
    return "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r}.0,{t}\n" for u, i, r, t in rows)


def check_rows(r):
    assert len(r) == len(ROWS)
    got = sorted(zip(r.user_ids[r.users].tolist(), r.item_ids[r.items].tolist(), r.ratings.tolist()))
    assert got == sorted((u, i, float(x)) for u, i, x, _ in ROWS)
    assert sorted(r.timestamps.tolist()) == sorted(t for *_, t in ROWS)


@pytest.mark.parametrize("name, text", [("u.data", udata_text()), ("u1.base", udata_text()),
                                        ("ratings.dat", dat_text()), ("ratings.csv", csv_text())])
def test_movielens_files_by_name(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    check_rows(read_ratings(p))


@pytest.mark.parametrize("text", [udata_text(), dat_text(), csv_text()])
def test_format_detected_from_content(tmp_path, text):
    p = tmp_path / "ratings.txt"
    p.write_text(text)
    check_rows(read_ratings(p))


@pytest.mark.parametrize("inner, member, text", [
    ("ml-100k", "u.data", udata_text()), ("ml-1m", "ratings.dat", dat_text()),
    ("ml-latest-small", "ratings.csv", csv_text()), ("ml-10M100K", "ratings.dat", dat_text())])
def test_official_archive_layouts(tmp_path, inner, member, text):
    p = tmp_path / f"{inner}.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr(f"{inner}/README", "readme")
        zf.writestr(f"{inner}/u.item" if member == "u.data" else f"{inner}/movies.csv", "x")
        zf.writestr(f"{inner}/{member}", text)
    r = read_ratings(p)
    check_rows(r)
    assert r.name == inner


def test_gzip_and_parquet(tmp_path):
    gz = tmp_path / "ratings.csv.gz"
    gz.write_bytes(gzip.compress(csv_text().encode()))
    check_rows(read_ratings(gz))
    pq = tmp_path / "mine.parquet"
    pd.DataFrame(ROWS, columns=["who", "what", "stars", "when"]).to_parquet(pq)
    r = read_ratings(pq, ReadOptions(user_col="who", item_col="what", rating_col="stars", time_col="when"))
    check_rows(r)


def test_own_csv_with_string_ids_mapping_and_scale(tmp_path):
    p = tmp_path / "export.tsv"
    p.write_text("customer\tproduct\tscore\n alice \tA-1\t0.5\nbob\tA-1\t5\nalice\tB-2\t3.5\n")
    r = read_ratings(p, ReadOptions(user_col="customer", item_col="product", rating_col="score",
                                    rating_scale=(0.5, 5.0)))
    assert list(r.user_ids) == ["alice", "bob"] and list(r.item_ids) == ["A-1", "B-2"]
    assert r.rating_scale == (0.5, 5.0) and r.timestamps is None


def test_scale_inferred_for_own_files(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("user,item,rating\n1,1,0.5\n1,2,10\n")
    assert read_ratings(p).rating_scale == (0.5, 10.0)


def test_dates_as_timestamps(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("user,item,rating,date\n1,1,3,2020-01-01\n1,2,4,2020-01-02\n")
    r = read_ratings(p)
    assert r.timestamps[1] - r.timestamps[0] == 86400


def test_duplicates_error_or_keep_last(tmp_path):
    p = tmp_path / "u.data"
    p.write_text("1\t1\t2\t300\n1\t1\t5\t100\n1\t2\t3\t200\n1\t1\t4\t200\n")
    with pytest.raises(DataError, match=r"2 duplicate \(user, item\) pairs, e.g. user 1 item 1"):
        read_ratings(p)
    r = read_ratings(p, ReadOptions(duplicates="last"))
    got = dict(zip(r.item_ids[r.items].tolist(), r.ratings.tolist()))
    assert got == {1: 2.0, 2: 3.0}  # the latest (t=300) rating of (1, 1) is kept


def test_predefined_split_shares_one_vocabulary(tmp_path):
    (tmp_path / "u1.base").write_text(udata_text(ROWS[:4]))
    (tmp_path / "u1.test").write_text(udata_text(ROWS[4:] + [(9, 99, 3, 1)]))
    s = load_predefined(str(tmp_path / "u1.base"), str(tmp_path / "u1.test"))
    assert (len(s.train), len(s.validation), len(s.test)) == (4, 0, 2)
    assert s.train.n_users == s.test.n_users == 4
    assert s.cold_counts()["test_cold_user_rows"] == 1  # user 9 only in test
    (tmp_path / "leak.test").write_text(udata_text(ROWS[:1]))
    with pytest.raises(DataError, match="share"):
        load_predefined(str(tmp_path / "u1.base"), str(tmp_path / "leak.test"))


# -- bad inputs: one specific line each ------------------------------------------------------
def _zip_without_ratings(p):
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("ml-100k/README", "nothing here")


def _truncated_zip(p):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/u.data", udata_text() * 200)
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _truncated_gzip(p):
    data = gzip.compress((csv_text() * 50).encode())
    p.write_bytes(data[: len(data) // 2])


BAD = [
    ("empty.csv", lambda p: p.write_text(""), "file is empty"),
    ("header.csv", lambda p: p.write_text("userId,movieId,rating,timestamp\n"), "header only, no ratings"),
    ("norating.csv", lambda p: p.write_text("userId,movieId,timestamp\n1,2,3\n"), "no rating column"),
    ("text.csv", lambda p: p.write_text("user,item,rating\n1,2,good\n"), "line 2: rating 'good' is not a finite number"),
    ("nan.csv", lambda p: p.write_text("user,item,rating\n1,2,4\n1,3,NaN\n"), "line 3: rating 'NaN' is not a finite number"),
    ("inf.csv", lambda p: p.write_text("user,item,rating\n1,2,inf\n"), "line 2: rating 'inf' is not a finite number"),
    ("u.data", lambda p: p.write_text("1\t2\t6\t5\n"), "line 1: rating 6 is outside the scale 1..5"),
    ("nouser.csv", lambda p: p.write_text("user,item,rating\n,2,4\n"), "line 2: missing user id"),
    ("noitem.csv", lambda p: p.write_text("user,item,rating\n1,2,4\n1,,3\n"), "line 3: missing item id"),
    ("few.data", lambda p: p.write_text("1\t2\t4\t5\n1\t3\n"), "line 2: expected 4 tab-separated fields, found 2"),
    ("many.csv", lambda p: p.write_text("user,item,rating\n1,2,4\n1,3,4,5,6\n"), "line 3: expected 3 fields, found 5"),
    ("u.data", lambda p: p.write_text("1,2,4,5\n1,3,4,5\n"), "wrong delimiter"),
    ("semi.csv", lambda p: p.write_text("user;item;rating\n1;2;4\n"), "one column only"),
    ("blob.data", lambda p: p.write_bytes(b"\x7fELF\x00\x01\x02binary"), "looks binary"),
    ("latin.csv", lambda p: p.write_bytes("user,item,rating\n\xe9,2,4\n".encode("latin-1")), "not a text file"),
    ("ml-100k.zip", _zip_without_ratings, "no ratings file in the archive"),
    ("broken.zip", _truncated_zip, "truncated or corrupt zip"),
    ("ratings.csv.gz", _truncated_gzip, "truncated or corrupt"),
    ("dups.csv", lambda p: p.write_text("user,item,rating\n1,2,4\n1,2,5\n"), "1 duplicate (user, item) pairs"),
]


@pytest.mark.parametrize("name, make, message", BAD, ids=[b[0] + ":" + b[2][:20] for b in BAD])
def test_bad_input_gives_a_specific_error(tmp_path, name, make, message):
    p = tmp_path / name
    make(p)
    with pytest.raises(DataError) as info:
        read_ratings(p)
    text = str(info.value)
    assert message in text and str(p) in text and "\n" not in text


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_ratings(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_ratings(tmp_path)


def test_bad_options():
    with pytest.raises(DataError, match="unknown format"):
        ReadOptions(format="xlsx")
    with pytest.raises(DataError, match="duplicates"):
        ReadOptions(duplicates="first")


def test_large_file_uses_the_fast_path(tmp_path):
    """200k rows of ratings.dat: read by the C parser (this would take many seconds line by line)."""
    rng = np.random.default_rng(0)
    n = 200_000
    u = rng.integers(1, 5000, n)
    i = rng.integers(1, 4000, n)
    key = np.unique(u * 10_000 + i)
    u, i = key // 10_000, key % 10_000
    frame = pd.DataFrame({"u": u, "i": i, "r": rng.integers(1, 6, len(u)), "t": 1})
    p = tmp_path / "ratings.dat"
    p.write_text(frame.to_csv(sep=":", header=False, index=False).replace(":", "::"))
    r = read_ratings(p)
    assert len(r) == len(u)


def test_side_information_from_the_100k_layout(tmp_path):
    item_rows = ["10|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
                 "20|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
                 "30|Four Rooms (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0"]
    user_rows = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|32067"]
    p = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("ml-100k/u.data", udata_text())
        zf.writestr("ml-100k/u.item", "\n".join(item_rows).encode("latin-1"))
        zf.writestr("ml-100k/u.user", "\n".join(user_rows))
    r = read_ratings(p)
    assert r.extra["titles"]["20"] == "GoldenEye (1995)"
    items = r.extra["item_features"]
    assert items.loc["10", "genre_Animation"] == 1.0 and items.loc["20", "genre_Action"] == 1.0
    users = r.extra["user_features"]
    assert users.loc["2", "gender_F"] == 1.0 and "occ_writer" in users.columns
    assert abs(users["age"].mean()) < 1e-12


def test_side_information_beside_a_ratings_dat(tmp_path):
    (tmp_path / "ratings.dat").write_text(dat_text())
    (tmp_path / "movies.dat").write_text("10::Toy Story (1995)::Animation|Comedy\n20::Heat (1995)::Action\n")
    r = read_ratings(tmp_path / "ratings.dat")
    assert r.extra["titles"]["10"] == "Toy Story (1995)"
    assert r.extra["item_features"].loc["10", "genre_Comedy"] == 1.0


# -- the typed read and the text read agree -------------------------------------------------------
def _same(a, b):
    for name in ("users", "items", "ratings", "user_ids", "item_ids", "timestamps"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype.kind == y.dtype.kind and np.array_equal(x, y), name
    assert a.rating_scale == b.rating_scale and a.name == b.name and a.source == b.source


@pytest.mark.parametrize("name, text, fmt", [("u.data", udata_text(), "udata"), ("ratings.dat", dat_text(), "dat"),
                                             ("ratings.csv", csv_text(), "csv")])
def test_typed_read_gives_what_the_text_read_gives(tmp_path, monkeypatch, name, text, fmt):
    from pipeline.data import readers
    p = tmp_path / name
    p.write_text(text)
    assert readers._read_typed(p, fmt, ReadOptions()) is not None  # the fast path takes these files
    fast = read_ratings(p)
    monkeypatch.setattr(readers, "_read_typed", lambda *a: None)  # force the text read
    _same(fast, read_ratings(p))


def test_typed_read_falls_back_for_string_ids_and_dates(tmp_path):
    from pipeline.data import readers
    p = tmp_path / "mine.csv"
    p.write_text("user,item,rating,time\nalice,x,4,2020-01-01\nbob,x,3,2020-01-02\n")
    with pytest.raises(ValueError):
        readers._read_typed(p, "csv", ReadOptions())
    r = read_ratings(p)
    assert sorted(r.user_ids.tolist()) == ["alice", "bob"] and r.timestamps[1] - r.timestamps[0] == 86400


# -- the binary cache ------------------------------------------------------------------------------
def test_cache_hit_skips_parsing_and_gives_the_same_ratings(tmp_path, monkeypatch):
    from pipeline.data import readers
    p = tmp_path / "ratings.csv"
    p.write_text(csv_text())
    cache_dir = tmp_path / "cache"
    first = read_ratings(p, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*.npz"))) == 1

    def no_parse(*a):
        raise AssertionError("parsed although cached")
    monkeypatch.setattr(readers, "_parse", no_parse)
    _same(first, read_ratings(p, cache_dir=cache_dir))


def test_cache_key_follows_content_and_options(tmp_path):
    from pipeline.data import cache
    p = tmp_path / "u.data"
    p.write_text(udata_text())
    key = cache.cache_key(cache.file_sha256(p), ReadOptions())
    assert cache.cache_key(cache.file_sha256(p), ReadOptions(rating_scale=(0.0, 5.0))) != key
    p.write_text(udata_text(ROWS[:-1]))  # same name, new content: a new entry, never the stale one
    assert cache.cache_key(cache.file_sha256(p), ReadOptions()) != key
    cache_dir = tmp_path / "cache"
    read_ratings(p, cache_dir=cache_dir)
    p.write_text(udata_text())
    check_rows(read_ratings(p, cache_dir=cache_dir))


def test_bad_or_unwritable_cache_is_skipped(tmp_path):
    from pipeline.data import cache
    p = tmp_path / "u.data"
    p.write_text(udata_text())
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / f"{cache.cache_key(cache.file_sha256(p), ReadOptions())}.npz").write_bytes(b"PK\x03\x04 truncated")
    check_rows(read_ratings(p, cache_dir=cache_dir))
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    check_rows(read_ratings(p, cache_dir=blocked / "cache"))  # cannot be created: read anyway


def test_cache_keeps_the_archive_member_for_side_information(tmp_path):
    p = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("ml-100k/u.data", udata_text())
        zf.writestr("ml-100k/u.item", "10|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n")
    first = read_ratings(p, cache_dir=tmp_path / "cache")
    second = read_ratings(p, cache_dir=tmp_path / "cache")
    _same(first, second)
    assert first.extra.keys() == second.extra.keys() and first.extra


# -- ids are labels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, body", [
    ("u.data", "007\t1\t4\t1\n7\t1\t3\t2\n0007\t2\t5\t3\n7\t2\t1\t4\n"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n007,1,4,1\n7,1,3,2\n0007,2,5,3\n7,2,1,4\n")])
def test_ids_differing_only_in_leading_zeros_stay_distinct(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(body)
    r = read_ratings(p)
    assert sorted(r.user_ids.tolist()) == ["0007", "007", "7"] and len(r) == 4


def test_float_looking_ids_never_merge_with_integers(tmp_path):
    p = tmp_path / "ratings.csv"
    big = 2**62 + 1
    p.write_text(f"userId,movieId,rating\n1e3,1,4\n1000,1,3\n5.0,2,4\n5,2,2\n{big},1,5\n{big + 2},2,1\n")
    r = read_ratings(p)
    assert len(r) == 6 and r.n_users == 6
    assert {"1e3", "1000", "5.0", "5", str(big), str(big + 2)} == set(map(str, r.user_ids))


def test_keep_last_only_merges_true_duplicates(tmp_path):
    p = tmp_path / "u.data"
    p.write_text("007\t1\t4\t1\n7\t1\t3\t2\n7\t1\t5\t3\n")
    r = read_ratings(p, ReadOptions(duplicates="last"))
    assert len(r) == 2  # "007" and "7" are two users; only 7's two ratings of item 1 were duplicates
    assert sorted(r.ratings.tolist()) == [4.0, 5.0]


def test_canonical_big_integer_ids_stay_exact_integers(tmp_path):
    p = tmp_path / "u.data"
    big = 2**53
    p.write_text(f"{big + 1}\t1\t4\t1\n{big + 2}\t1\t3\t2\n")
    r = read_ratings(p)
    assert r.user_ids.dtype.kind == "i" and r.user_ids.tolist() == [big + 1, big + 2]


def test_a_cache_hit_reports_the_file_read_in_this_run(tmp_path):
    first = tmp_path / "alpha" / "u.data"
    copy = tmp_path / "beta" / "u.data"
    for p in (first, copy):
        p.parent.mkdir()
        p.write_text(udata_text())
    cache_dir = tmp_path / "cache"
    assert read_ratings(first, cache_dir=cache_dir).name == "alpha"
    again = read_ratings(copy, cache_dir=cache_dir)  # same bytes: a cache hit
    assert len(list(cache_dir.glob("*.npz"))) == 1
    assert again.name == "beta" and again.source == str(copy)


@pytest.mark.parametrize("tamper", ["index", "nan", "scale"])
def test_a_crafted_cache_entry_is_not_trusted(tmp_path, tamper):
    from pipeline.data import cache
    p = tmp_path / "u.data"
    p.write_text(udata_text())
    cache_dir = tmp_path / "cache"
    honest = read_ratings(p, cache_dir=cache_dir)
    entry = next(cache_dir.glob("*.npz"))
    with np.load(entry, allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    if tamper == "index":
        fields["users"] = fields["users"].copy()
        fields["users"][0] = 10**6
    elif tamper == "nan":
        fields["ratings"] = fields["ratings"].copy()
        fields["ratings"][0] = np.nan
    else:
        fields["ratings"] = fields["ratings"] + 100.0
    np.savez(entry, **fields)
    assert cache.load(cache_dir, entry.stem, p, cache.file_sha256(p)) is None  # invariants fail: dropped
    _same(honest, read_ratings(p, cache_dir=cache_dir))


def test_another_files_entry_under_this_files_key_is_parsed_again(tmp_path, small_synthetic):
    """Issue 22, class 12: a structurally valid entry holding another file's ratings (3,000 of
    them) under this file's key (8,000) was used as this file's data, and its member field named
    the experiment."""
    from pipeline.data import cache, random_split, write_udata
    small, big = tmp_path / "small" / "u.data", tmp_path / "big" / "u.data"
    write_udata(random_split(small_synthetic, (0.5, 0.0, 0.5), 0).train, small)
    write_udata(small_synthetic, big)
    cache_dir = tmp_path / "cache"
    read_ratings(small, cache_dir=cache_dir)
    [small_entry] = cache_dir.glob("*.npz")
    big_key = cache.cache_key(cache.file_sha256(big), ReadOptions())
    small_entry.rename(cache_dir / f"{big_key}.npz")
    assert len(read_ratings(big, cache_dir=cache_dir)) == len(small_synthetic)
    # an entry that names a member its source does not hold (a crafted path, or another archive's)
    with np.load(cache_dir / f"{big_key}.npz", allow_pickle=False) as z:
        fields = {k: z[k] for k in z.files}
    np.savez(cache_dir / f"{big_key}.npz", **{**fields, "member": np.array("../../x/u.data")})
    again = read_ratings(big, cache_dir=cache_dir)
    assert again.name == "big" and again.source == str(big) and len(again) == len(small_synthetic)


def test_a_dataset_in_a_folder_reached_through_dot_dot_is_named_by_the_folder(tmp_path, monkeypatch):
    """``../u.data`` named the experiment ``..``, and its artifacts landed in the project root."""
    (tmp_path / "films").mkdir()
    (tmp_path / "films" / "u.data").write_text(udata_text())
    (tmp_path / "films" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "films" / "sub")
    assert read_ratings(Path("..") / "u.data").name == "films"


@pytest.mark.parametrize("size", [70_000, 5_000_000])
def test_a_hostile_long_line_is_a_one_line_error_not_gigabytes(tmp_path, size):
    p = tmp_path / "ratings.csv"
    p.write_text("userId,movieId,rating,timestamp\n1,2,4,5\n1," + "9" * size + ",4,5\n2,3,4,5\n")
    with pytest.raises(DataError, match=r"line 3: longer than 64 KB"):
        read_ratings(p)


@pytest.mark.parametrize("name, body", [("ratings.tsv", "1\t2\t4\t10\n2\t3\t5\t11\n"),
                                        ("export.txt", "\ufeff1\t2\t4\n2\t3\t5\n"),
                                        ("u.data", "1\t2\t4\n2\t3\t5\n")])
def test_a_headerless_file_of_numeric_columns_reads_like_udata(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    r = read_ratings(p)
    assert len(r) == 2 and r.user_ids.tolist() == [1, 2] and r.item_ids.tolist() == [2, 3]


def test_an_empty_scale_says_how_to_give_one(tmp_path):
    p = tmp_path / "ratings.csv"
    p.write_text("userId,movieId,rating\n1,2,4\n2,3,4\n")
    with pytest.raises(DataError, match="every rating is the same: give the scale with --rating-scale"):
        read_ratings(p)


def test_a_zip_with_two_ratings_files_is_refused_naming_them(tmp_path):
    p = tmp_path / "two.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a/u.data", udata_text())
        zf.writestr("b/ratings.csv", csv_text())
    with pytest.raises(DataError, match=r"holds 2 ratings files \(a/u.data, b/ratings.csv\)"):
        read_ratings(p)


# -- the byte scan reads what pandas parses (issue 22, classes 3 and 4) -------------------------------
def test_gzip_input_gets_the_same_scan_as_plain_text(tmp_path):
    import gzip
    p = tmp_path / "u.data.gz"
    p.write_bytes(gzip.compress(b"007\t1\t4\t1\n7\t1\t3\t2\n0007\t2\t5\t3\n7\t2\t1\t4\n"))
    r = read_ratings(p)
    assert sorted(r.user_ids.tolist()) == ["0007", "007", "7"] and len(r) == 4  # merged into one before
    long = tmp_path / "ratings.csv.gz"
    long.write_bytes(gzip.compress(b"userId,movieId,rating\n1," + b"9" * 1_000_000 + b",4\n2,3,4\n"))
    assert long.stat().st_size < 20_000
    with pytest.raises(DataError, match=r"line 2: longer than 64 KB"):
        read_ratings(long)


def test_an_uncompressed_parquet_file_is_read_not_scanned_as_lines(tmp_path):
    # ids and ratings none of whose bytes is a newline (10): the column chunks are then runs of
    # far more than 64 KB without one, which the line scan took for a hostile long line
    users = np.repeat(np.arange(11, 211), 500)
    items = np.tile(np.arange(11, 511), 200)
    frame = pd.DataFrame({"userId": users, "movieId": items, "rating": np.resize([1.0, 2.0, 3.0, 4.0, 5.0], len(users))})
    p = tmp_path / "big.parquet"
    frame.to_parquet(p, compression=None, use_dictionary=False)
    assert b"\n" not in p.read_bytes()[4:70_000]
    r = read_ratings(p)
    assert len(r) == len(frame)


def test_a_zip_or_gzip_bomb_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """Issue 22, class 9: a 5 MB zip holding a 5 GiB member was read whole into memory."""
    monkeypatch.setattr("pipeline.data.readers.memory_limit", lambda: 5 << 20)  # 5 MiB: 1 MiB of text
    text = udata_text() + "".join(f"{u}\t{i}\t3\t1\n" for u in range(100, 2100) for i in range(1, 60))
    assert len(text) > 1 << 20
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x/u.data", text)
    with pytest.raises(DataError, match=r"bomb.zip!x/u.data: unpacks to [\d,]+ bytes; parsing it needs about 5x"):
        read_ratings(z)
    g = tmp_path / "u.data.gz"
    g.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=r"u.data.gz: more than 1,048,576 bytes of text"):
        read_ratings(g)
    small = tmp_path / "small" / "u.data"
    small.parent.mkdir()
    small.write_text(udata_text())
    check_rows(read_ratings(small))  # under the bound: read as ever
