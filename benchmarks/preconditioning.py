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

from pipeline.config import ModelConfig
from pipeline.data import SyntheticSpec, generate, load_dataset, make_splits
from pipeline.objectives import build_objective
from pipeline.optim import StoppingRule, minimize

METHODS = ("newton-pcg", "newton-cg", "als")


def race(label: str, train, model: ModelConfig, max_seconds: float, starts: int = 1) -> dict[str, tuple[float, bool]]:
    """Each of METHODS from the same ``starts`` starting points (seeds 0, 1, ...) on ``train``
    under ||g||/||g0|| <= 1e-6; prints a line per fit and the ratios of the medians; returns
    {method: (median data passes, converged from every start)}. Several starts, because one path
    is sensitive to rounding: the same problem with its ratings in another order can take 15 %
    more or fewer passes."""
    f = build_objective(train, model)
    f.warm_up()
    h = model.hyper
    setting = f"rank {h.rank} reg {h.reg:.4g} reg_bias {h.reg_bias:.4g} weighting {h.weighting}"
    rule = StoppingRule(gtol=1e-6, max_passes=20_000, max_seconds=max_seconds)
    out = {}
    for name in METHODS:
        counts, converged = [], True
        for seed in range(starts):
            t0 = time.perf_counter()
            res = minimize(name, f, f.init(np.random.default_rng(seed)), rule)
            counts.append(res.final.data_passes)
            converged &= res.reason == "converged"
            print(f"{label} {setting}  start {seed}  {name:<10} {res.reason:<12} "
                  f"{res.final.data_passes:>6} passes ({res.final.n_hessp} hessp, {res.final.iteration} iterations)  "
                  f"f {res.final.loss:.12f}  {time.perf_counter() - t0:.1f} s", flush=True)
        out[name] = (float(np.median(counts)), converged)
    what = "median passes" if starts > 1 else "passes"
    for other in METHODS[1:]:
        ratio = out["newton-pcg"][0] / out[other][0]
        if out[other][1]:
            print(f"  newton-pcg / {other}: {ratio:.2f} of the {what}")
        else:  # the other stopped first: its count is a lower bound, the ratio an upper one
            print(f"  newton-pcg / {other}: < {ratio:.2f} of the {what} ({other} stopped unconverged)")
    return out


def train_part(ratings):
    return make_splits(ratings, "random", (0.8, 0.1, 0.1), 0)[0].train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ml100k", nargs="?", help="MovieLens 100K u.data (omit for the synthetic set only)")
    ap.add_argument("--synthetic-ratings", type=int, default=1_000_000)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    args = ap.parse_args()
    if args.ml100k:
        ml = load_dataset(args.ml100k)
        for rank in (10, 50):
            race("ml-100k", train_part(ml), ModelConfig.of("mf", rank=rank, reg=0.1, reg_bias=0.1), args.max_seconds)
    synth = generate(SyntheticSpec(n_users=6040, n_items=3706, n_ratings=args.synthetic_ratings, seed=1))
    race(f"synthetic-{args.synthetic_ratings}", train_part(synth), ModelConfig.of("mf", rank=10, reg=0.1, reg_bias=0.1),
         args.max_seconds)


if __name__ == "__main__":
    main()
