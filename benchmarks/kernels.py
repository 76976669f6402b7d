"""Kernel throughput, measured side by side in one run (issue: fast and large, benchmark 1).

On synthetic ratings (default 1M, rank 32) times:
  floor       one fused pass that only computes the residuals (numba)
  loss_grad   numba fast path, numpy reference
  hessp       numba fast path, numpy reference (exact product, at a cached x)
each the fastest of --repeat calls (see _timing.best_of), and prints the ratios fast/floor
(targets: loss_grad <= 2x, hessp <= 3x) and numpy/fast.

    python benchmarks/kernels.py [--ratings 1000000] [--rank 32] [--repeat 21]
"""

from __future__ import annotations

import argparse
import numpy as np
from _timing import best_of as timed

from pipeline.data import SyntheticSpec, generate
from pipeline.objectives import BiasedMF
from pipeline.objectives import mf_kernels as K


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--items", type=int, default=3706)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    r = generate(SyntheticSpec(n_users=args.users, n_items=args.items, n_ratings=args.ratings, seed=1))
    fast = BiasedMF(r, rank=args.rank, kernel="numba")
    ref = BiasedMF(r, rank=args.rank, kernel="numpy")
    rng = np.random.default_rng(0)
    x = fast.init(rng) + 0.01 * rng.normal(size=fast.n_params)
    v = rng.normal(size=fast.n_params)
    P, Q, b, c = fast.unpack(x)
    e = np.empty(fast.n_ratings)
    V = np.empty((fast.n_items, fast.rank + 1))  # the kernels' item rows (q_i, c_i), by popularity
    K.item_rows(fast.sums.item_order, Q, c, Q, c, V)
    run_floor = lambda: K.residuals(fast.sums.sched, fast.sums.ratings, fast.mu, P, b, V, e)  # noqa: E731
    for _ in range(20):  # the first calls in a process run slower (about 6.5 against 4.1 ms for the floor)
        run_floor(), fast.loss_grad(x + 0.0), fast.hessp(x, v)
    floor = timed(run_floor, args.repeat)
    lg_fast = timed(lambda: fast.loss_grad(x + 0.0), args.repeat)  # a new array each time: no cache hit
    lg_ref = timed(lambda: ref.loss_grad(x + 0.0), args.repeat)
    fast.loss_grad(x)
    ref.loss_grad(x)
    hp_fast = timed(lambda: fast.hessp(x, v), args.repeat)
    hp_ref = timed(lambda: ref.hessp(x, v), args.repeat)
    # The floor again, last: the fastest of both rounds is the floor (a slow floor flatters the ratios).
    floor = min(floor, timed(run_floor, args.repeat))
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    print(f"{len(r):,} ratings, {r.n_users:,} users, {r.n_items:,} items, rank {args.rank}; fastest of {args.repeat}")
    print(f"{'':12}{'seconds':>10}{'ns/rating':>11}{'/ floor':>9}{'numpy/fast':>12}")
    print(f"{'floor':12}{floor:10.4f}{floor / len(r) * 1e9:11.1f}{1.0:9.2f}")
    print(f"{'loss_grad':12}{lg_fast:10.4f}{lg_fast / len(r) * 1e9:11.1f}{lg_fast / floor:9.2f}{lg_ref / lg_fast:12.1f}"
          f"   target <= 2x floor: {'met' if lg_fast <= 2 * floor else 'MISSED'}")
    print(f"{'hessp':12}{hp_fast:10.4f}{hp_fast / len(r) * 1e9:11.1f}{hp_fast / floor:9.2f}{hp_ref / hp_fast:12.1f}"
          f"   target <= 3x floor: {'met' if hp_fast <= 3 * floor else 'MISSED'}")
    print(f"{'numpy ref':12} loss_grad {lg_ref:.4f} s, hessp {hp_ref:.4f} s")
    print(f"fast vs reference: loss_grad rel. diff {rel(fast.loss_grad(x)[1], ref.loss_grad(x)[1]):.1e}, "
          f"hessp {rel(fast.hessp(x, v), ref.hessp(x, v)):.1e}")


if __name__ == "__main__":
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):  # as during fits (pipeline/optim/registry.py)
        main()
