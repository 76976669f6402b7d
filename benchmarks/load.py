"""Loading a MovieLens-25M-shaped ratings.csv: first read (typed C parser) against the binary cache.

Writes (once, kept in --work for later runs) a ``ratings.csv`` with the header and layout of
MovieLens 25M (``userId,movieId,rating,timestamp``, half-star ratings), from the seeded synthetic
generator at the 25M shape, then in one run:
  first load    read_ratings with an empty cache: checksum, typed parse, validation, ids, cache write
  cached load   the same call again: checksum and the binary entry
and prints both, their ratio and peak RSS. ``--text-rows N`` also times the text read (every
field as a string, the fallback for malformed files) on the first N rows against the typed read.

    python benchmarks/load.py [--ratings 25000095] [--work benchmarks/results/load]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import ReadOptions, SyntheticSpec, generate, read_ratings
from pipeline.data import readers


def write_movielens_csv(path: Path, ratings: int, users: int, items: int) -> None:
    r = generate(SyntheticSpec(n_users=users, n_items=items, n_ratings=ratings, seed=7))
    stars = np.clip(np.round(r.ratings * 2) / 2, 0.5, 5.0)
    order = np.lexsort((r.items, r.users))  # MovieLens files are sorted by user, then movie
    frame = pd.DataFrame({"userId": r.users[order] + 1, "movieId": r.items[order] + 1, "rating": stars[order],
                          "timestamp": 789652009 + np.arange(len(r)) % 800_000_000})
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False, float_format="%.1f")
    tmp.rename(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=25_000_095)
    ap.add_argument("--users", type=int, default=162_541)
    ap.add_argument("--items", type=int, default=59_047)
    ap.add_argument("--work", default="benchmarks/results/load")
    ap.add_argument("--text-rows", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"ratings-{args.ratings}.csv"
    if not csv.exists():
        t = time.perf_counter()
        write_movielens_csv(csv, args.ratings, args.users, args.items)
        print(f"wrote {csv} ({csv.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - t:.1f} s")
    cache_dir = work / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    t = time.perf_counter()
    first = read_ratings(csv, cache_dir=cache_dir)
    t_first = time.perf_counter() - t
    t = time.perf_counter()
    second = read_ratings(csv, cache_dir=cache_dir)
    t_cached = time.perf_counter() - t
    assert np.array_equal(first.users, second.users) and np.array_equal(first.ratings, second.ratings)
    size = csv.stat().st_size / 1e6
    print(f"{len(first):,} ratings, {first.n_users:,} users, {first.n_items:,} items; {csv.name} {size:,.0f} MB")
    print(f"first load (typed C parser, validation, cache write)  {t_first:7.2f} s")
    print(f"cached load (checksum + binary entry)                  {t_cached:7.2f} s")
    print(f"first / cached: {t_first / t_cached:.1f}x (target: several times faster)")
    if args.text_rows:
        head = work / f"head-{args.text_rows}.csv"
        with open(csv) as src, open(head, "w") as dst:
            for _ in range(args.text_rows + 1):
                dst.write(src.readline())
        t = time.perf_counter()
        read_ratings(head)
        t_typed = time.perf_counter() - t
        t = time.perf_counter()
        frame = readers._read_frame(head, "csv", ReadOptions(), label=str(head))
        readers._to_ratings(frame, "csv", ReadOptions(), label=str(head), name="head")
        t_text = time.perf_counter() - t
        print(f"first {args.text_rows:,} rows: typed read {t_typed:.2f} s, text read {t_text:.2f} s "
              f"({t_text / t_typed:.1f}x)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB")


if __name__ == "__main__":
    main()
