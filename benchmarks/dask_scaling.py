"""Local kernels against Dask with 1 and 2 local workers, side by side in one run.

On synthetic ratings (default 5M, rank 32): seconds per loss+gradient and per Hessian-vector
product on the local backend and on Dask LocalClusters of 1 and 2 worker processes (one thread
each), and the communication per call (bytes out and back, and the seconds that are not compute:
Dask time minus the local time of the same work).

    python benchmarks/dask_scaling.py [--ratings 5000000] [--rank 32] [--repeat 5]
"""

from __future__ import annotations

import argparse
import numpy as np
from _timing import timed

from pipeline.data import SyntheticSpec, generate
from pipeline.distributed import DaskMF, connect
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
    rows = [("local (numba, 2 threads)", timed(lambda: local.loss_grad(x + 0.0), args.repeat),
             (local.loss_grad(x), timed(lambda: local.hessp(x, v), args.repeat))[1], 0, 0)]
    for workers in (1, 2):
        client = connect(workers=workers, threads_per_worker=1)
        try:
            dist = DaskMF(data, client, rank=args.rank, reg=0.1, reg_bias=0.1)
            lg = timed(lambda: dist.loss_grad(x + 0.0), args.repeat)
            dist.loss_grad(x)
            hp = timed(lambda: dist.hessp(x, v), args.repeat)
            calls = 2 * (args.repeat + 1) + 1
            rows.append((f"dask, {workers} worker{'s' * (workers > 1)}", lg, hp,
                         dist.bytes_sent / calls, dist.bytes_received / calls))
        finally:
            client.close()
            client.cluster.close()
    print(f"{len(data):,} ratings, {data.n_users:,} users, {data.n_items:,} items, rank {args.rank}, "
          f"{local.n_params:,} parameters ({local.n_params * 8 / 1e6:.1f} MB); median of {args.repeat}")
    print(f"{'backend':26}{'loss_grad s':>12}{'hessp s':>10}{'MB out/call':>13}{'MB back/call':>14}")
    for name, lg, hp, out_b, back_b in rows:
        print(f"{name:26}{lg:12.3f}{hp:10.3f}{out_b / 1e6:13.1f}{back_b / 1e6:14.1f}")
    base_lg, base_hp = rows[0][1], rows[0][2]
    for name, lg, hp, *_ in rows[1:]:
        print(f"{name}: loss_grad {lg / base_lg:.2f}x local, hessp {hp / base_hp:.2f}x local")


if __name__ == "__main__":
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):  # as during fits (pipeline/optim/registry.py)
        main()
