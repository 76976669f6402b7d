"""Data passes to ||g||/||g0|| <= 1e-6: newton-pcg against newton-cg and ALS, same start, same rule.

    python benchmarks/preconditioning.py [PATH_TO_ml-100k/u.data] [--synthetic-ratings 1000000]

Passes (a loss+gradient, a Hessian-vector product, one side of an ALS sweep, one side of the
block preconditioner's factorization: one each) do not depend on the machine; seconds do, and are
printed for the record. Issue 14, target (c).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.data import SyntheticSpec, generate, load_dataset, make_splits
from pipeline.objectives import BiasedMF
from pipeline.optim import StoppingRule, minimize

METHODS = ("newton-pcg", "newton-cg", "als")


def race(label: str, ratings, rank: int, reg: float, reg_bias: float, max_seconds: float) -> None:
    train = make_splits(ratings, "random", (0.8, 0.1, 0.1), 0)[0].train
    f = BiasedMF(train, rank=rank, reg=reg, reg_bias=reg_bias)
    f.warm_up()
    x0 = f.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=1e-6, max_passes=20_000, max_seconds=max_seconds)
    passes, reasons = {}, {}
    for name in METHODS:
        t0 = time.perf_counter()
        res = minimize(name, f, x0, rule)
        passes[name], reasons[name] = res.final.data_passes, res.reason
        print(f"{label} rank {rank} reg {reg:g} reg_bias {reg_bias:g}  {name:<10} {res.reason:<12} "
              f"{res.final.data_passes:>6} passes ({res.final.n_hessp} hessp, {res.final.iteration} iterations)  "
              f"f {res.final.loss:.12f}  {time.perf_counter() - t0:.1f} s", flush=True)
    for other in METHODS[1:]:
        ratio = passes["newton-pcg"] / passes[other]
        if reasons[other] == "converged":
            print(f"  newton-pcg / {other}: {ratio:.2f} of the passes")
        else:  # the other stopped first: its count is a lower bound, the ratio an upper one
            print(f"  newton-pcg / {other}: < {ratio:.2f} of the passes ({other} stopped unconverged: {reasons[other]})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ml100k", nargs="?", help="MovieLens 100K u.data (omit for the synthetic set only)")
    ap.add_argument("--synthetic-ratings", type=int, default=1_000_000)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    args = ap.parse_args()
    if args.ml100k:
        ml = load_dataset(args.ml100k)
        for rank in (10, 50):
            race("ml-100k", ml, rank, 0.1, 0.1, args.max_seconds)
    synth = generate(SyntheticSpec(n_users=6040, n_items=3706, n_ratings=args.synthetic_ratings, seed=1))
    race(f"synthetic-{args.synthetic_ratings}", synth, 10, 0.1, 0.1, args.max_seconds)


if __name__ == "__main__":
    main()
