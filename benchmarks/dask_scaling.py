"""Local kernels against Dask with 1 and 2 local workers, side by side in one run.

On synthetic ratings (default 5M, rank 32): seconds per loss+gradient, per Hessian-vector
product, per ALS sweep and per block preconditioner (built and applied once) on this machine and
on Dask LocalClusters of 1 and 2 worker processes (one thread each), and the communication per
loss+gradient or product (bytes out and back).

    python benchmarks/dask_scaling.py [--ratings 5000000] [--rank 32] [--repeat 5]
"""

from __future__ import annotations

import argparse
import numpy as np
from _timing import timed

from pipeline.data import SyntheticSpec, generate
from pipeline.distributed import DaskEngine, connect
from pipeline.objectives import BiasedMF




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=32_000)
    ap.add_argument("--items", type=int, default=12_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = generate(SyntheticSpec(n_users=args.users, n_items=args.items, n_ratings=args.ratings, seed=3))
    rng = np.random.default_rng(0)
    local = BiasedMF(data, rank=args.rank, reg=0.1, reg_bias=0.1)
    x = local.init(rng) + 0.01 * rng.normal(size=local.n_params)
    v = rng.normal(size=local.n_params)
    def costs(f):
        lg = timed(lambda: f.loss_grad(x + 0.0), args.repeat)
        f.loss_grad(x)
        hp = timed(lambda: f.hessp(x, v), args.repeat)
        als = timed(lambda: f.als_sweep(x), args.repeat)
        pre = timed(lambda: f.precondition(x)(v), args.repeat)
        return lg, hp, als, pre

    rows = [("local (numba, 2 threads)", *costs(local), 0, 0)]
    for workers in (1, 2):
        client = connect(workers=workers, threads_per_worker=1)
        try:
            dist = BiasedMF(data, rank=args.rank, reg=0.1, reg_bias=0.1, engine=DaskEngine(client))
            lg, hp, _, _ = costs(dist)
            calls = 2 * (args.repeat + 1) + 1
            sent, back = dist.sums.bytes_sent, dist.sums.bytes_received  # the loss+gradients and products only
            als, pre = (timed(lambda: dist.als_sweep(x), args.repeat), timed(lambda: dist.precondition(x)(v), args.repeat))
            rows.append((f"dask, {workers} worker{'s' * (workers > 1)}", lg, hp, als, pre, sent / calls, back / calls))
        finally:
            client.close()
            client.cluster.close()
    print(f"{len(data):,} ratings, {data.n_users:,} users, {data.n_items:,} items, rank {args.rank}, "
          f"{local.n_params:,} parameters ({local.n_params * 8 / 1e6:.1f} MB); median of {args.repeat}")
    print(f"{'backend':26}{'loss_grad s':>12}{'hessp s':>10}{'als s':>8}{'precond s':>11}{'MB out/call':>13}"
          f"{'MB back/call':>14}")
    for name, lg, hp, als, pre, out_b, back_b in rows:
        print(f"{name:26}{lg:12.3f}{hp:10.3f}{als:8.3f}{pre:11.3f}{out_b / 1e6:13.1f}{back_b / 1e6:14.1f}")
    base = rows[0][1:5]
    for name, *times in rows[1:]:
        print(f"{name}: " + ", ".join(f"{op} {t / b:.2f}x local" for op, t, b in
                                      zip(("loss_grad", "hessp", "als_sweep", "precondition"), times[:4], base)))


if __name__ == "__main__":
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):  # as during fits (pipeline/optim/registry.py)
        main()
