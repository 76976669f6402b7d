"""Kernels with 2, 4 and 8 user blocks, side by side in one process (1M synthetic ratings, rank 32):
what the data-chosen block count (8 here, whatever the thread count) costs against one block per
core. python benchmarks/blocks.py"""
import time, numpy as np
from pipeline.data import SyntheticSpec, generate
from pipeline.objectives import BiasedMF
from pipeline.objectives import mf_kernels as K
from threadpoolctl import threadpool_limits
r = generate(SyntheticSpec(n_users=6040, n_items=3706, n_ratings=1_000_000, seed=0))
objs = {}
for nb in (2, 4, 8):
    K.MAX_BLOCKS = nb
    objs[nb] = BiasedMF(r, rank=32, kernel="numba")
    print(nb, len(objs[nb].sums.sched[0]) - 1)
rng = np.random.default_rng(0)
x = objs[2].init(rng); v = rng.normal(size=objs[2].n_params)
best = {(nb, op): 1e9 for nb in objs for op in ("lg", "hp")}
with threadpool_limits(1, "blas"):
    for rep in range(15):
        for nb, f in objs.items():
            t = time.perf_counter(); f.loss_grad(x); best[(nb, "lg")] = min(best[(nb, "lg")], time.perf_counter() - t)
            t = time.perf_counter(); f.hessp(x, v); best[(nb, "hp")] = min(best[(nb, "hp")], time.perf_counter() - t)
for k, val in best.items(): print(k, f"{val*1e3:.2f} ms")
