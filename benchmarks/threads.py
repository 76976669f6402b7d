"""What the kernels' threads cost, per setting: one loss+gradient plus one Hessian-vector product
on the default problem's shape (80,000 ratings, rank 10), mean of 2,000 pairs after 50 warm-ups.

Run it once per setting, alternating, quiet and with a CPU-bound job beside it:

    for s in NUMBA_NUM_THREADS=1 X=1 OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=1000 GOMP_SPINCOUNT=3000; do
        env $s python benchmarks/threads.py; done
    python3 -c "while True: pass" &  # ... the same loop ...; kill %1

(docs/performance.md, section 0: the figures and the policy chosen from them.)
"""

from __future__ import annotations

import os
import sys
import time

import pipeline  # noqa: F401  (first: the numerical environment, pipeline.reproducible)
import numpy as np

from pipeline.data import SyntheticSpec, generate
from pipeline.objectives import BiasedMF


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 80_000
    ratings = generate(SyntheticSpec(n_users=943, n_items=1682, n_ratings=n, seed=1))
    model = BiasedMF(ratings, rank=10, reg=0.1, reg_bias=0.1, weighting="count")
    rng = np.random.default_rng(0)
    x, v = model.init(rng), rng.normal(size=model.n_params)
    for _ in range(50):
        model.loss_grad(x + 0.0)
        model.hessp(x, v)
    reps = 2000
    t0 = time.perf_counter()
    for j in range(reps):
        model.loss_grad(x + 1e-12 * j)  # a new point each time: no cache helps
        model.hessp(x + 1e-12 * j, v)
    setting = " ".join(f"{k}={os.environ[k]}" for k in ("NUMBA_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                       if k in os.environ) or "default"
    print(f"{setting}: {(time.perf_counter() - t0) / reps * 1e3:.3f} ms per loss+gradient and hessp")


if __name__ == "__main__":
    main()
