"""Short fits of every optimizer, printed as digests of their bits (run by tests/test_reproducible.py
in subprocesses under other BLAS kernel sets, compile targets and numpy dispatch settings).

    python tests/bits_probe.py   ->  one JSON object: {method: sha256 of its iterate and history}
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pipeline  # noqa: E402,F401  (first: it fixes the numerical environment)
import numpy as np  # noqa: E402

from pipeline.data import SyntheticSpec, generate  # noqa: E402
from pipeline.objectives import BiasedMF  # noqa: E402
from pipeline.optim import REGISTRY, StoppingRule, minimize  # noqa: E402
from pipeline.reproducible import blas_kernels  # noqa: E402


def digest(result) -> str:
    h = hashlib.sha256(np.ascontiguousarray(result.x).tobytes())
    for r in result.history:
        h.update(np.array([r.loss, r.grad_norm, r.data_passes], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    # Four user blocks (block_count), a rank that is not a multiple of the kernels' 8 lanes.
    ratings = generate(SyntheticSpec(n_users=120, n_items=90, n_ratings=4000, min_per_user=5, seed=3))
    out = {"blas": blas_kernels()}
    for kernel in ("numba", "numpy"):
        model = BiasedMF(ratings, rank=5, reg=0.1, reg_bias=0.1, weighting="count", kernel=kernel)
        x0 = model.init(np.random.default_rng(0))
        names = list(REGISTRY) if kernel == "numba" else ["lbfgs", "newton-cg"]
        for name in names:
            res = minimize(name, model, x0, StoppingRule(gtol=1e-9, max_passes=150))
            out[f"{name}/{kernel}"] = digest(res)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
