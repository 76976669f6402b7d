"""The one timing helper the benchmark scripts share."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls of ``fn``, after one warm-up call (compilation, caches)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def best_of(fn, repeat: int) -> float:
    """Fastest of ``repeat`` calls after a warm-up: for kernels, where the spread on a shared virtual
    machine (about 15 % between medians of runs) comes from interference, never from the code."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
