"""Runs inside the peers' own virtual environment (.venv-peers): tunes and fits scikit-surprise's SVD
and cmfrec's ALS on the split benchmarks/peers.py writes, and prints one JSON line per fit.
Never imported by the project; the peers are not runtime dependencies.

    .venv-peers/bin/python benchmarks/peers_fit.py SPLIT_DIR LOW HIGH REPEAT TRIALS SEED

SPLIT_DIR holds fit.tsv and val.tsv (the training part and the validation holdout our sweep
selects on), train.tsv (their union) and test.tsv. For each peer:
- "defaults": the library's own defaults, fitted on train, scored on test;
- "tuned": Optuna's TPE (the sampler and seed our sweep uses, TRIALS trials, the first 5 random)
  over the peer's hyperparameters, each trial fitted on fit and scored on val; the winner refitted
  on train and scored once on test.
Every reported fit time is the fastest of REPEAT after a warm-up fit (the rule our side uses), and
includes building the library's data structures from the ratings frame, as ours includes building
the objective. Progress goes to stderr.
"""

import json
import sys
import time

import numpy as np
import optuna
import pandas as pd
from _timing import best_of  # stdlib only: importable from the peers' environment

COLS = ["user", "item", "rating", "timestamp"]
split_dir = sys.argv[1]
low, high = float(sys.argv[2]), float(sys.argv[3])
repeat, n_trials, seed = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
parts = {name: pd.read_csv(f"{split_dir}/{name}.tsv", sep="\t", names=COLS) for name in ("fit", "val", "train", "test")}


def rmse(pred: np.ndarray, truth: pd.DataFrame) -> float:
    return float(np.sqrt(np.mean((np.clip(pred, low, high) - truth["rating"].to_numpy()) ** 2)))


class SurpriseSVD:
    """Funk SVD with biases by SGD (Surprise's SVD); single-threaded by design."""
    name = "surprise SVD"
    defaults = {}  # n_factors 100, n_epochs 20, lr_all 0.005, reg_all 0.02

    @staticmethod
    def space(trial) -> dict:
        return {"n_factors": trial.suggest_int("n_factors", 5, 100, log=True),
                "n_epochs": trial.suggest_int("n_epochs", 5, 60, log=True),
                "lr_all": trial.suggest_float("lr_all", 1e-3, 0.05, log=True),
                "reg_all": trial.suggest_float("reg_all", 1e-3, 1.0, log=True)}

    @staticmethod
    def fit(frame: pd.DataFrame, params: dict):
        from surprise import SVD, Dataset, Reader
        data = Dataset.load_from_df(frame[["user", "item", "rating"]], Reader(rating_scale=(low, high)))
        return SVD(random_state=seed, **params).fit(data.build_full_trainset())

    @staticmethod
    def predict(model, frame: pd.DataFrame) -> np.ndarray:
        return np.array([model.predict(u, i).est for u, i in zip(frame["user"], frame["item"])])


class CmfrecALS:
    """cmfrec's CMF by ALS (conjugate-gradient inner solves, a final Cholesky), biases on, 2 threads.
    Tuned over the same freedoms as our model: rank, factor penalty, bias penalty, the penalty
    scaled by counts or not, plus its number of sweeps."""
    name = "cmfrec ALS"
    defaults = {}  # k 40, lambda_ 10, scale_lam False, niter 10

    @staticmethod
    def space(trial) -> dict:
        lam = trial.suggest_float("lambda", 1e-2, 100.0, log=True)
        lam_bias = trial.suggest_float("lambda_bias", 1e-3, 100.0, log=True)
        return {"k": trial.suggest_int("k", 5, 100, log=True),
                # cmfrec's lambda_ as six numbers: user bias, item bias, then the factor matrices
                "lambda_": [lam_bias, lam_bias, lam, lam, lam, lam],
                "scale_lam": trial.suggest_categorical("scale_lam", [False, True]),
                "niter": trial.suggest_int("niter", 5, 30)}

    @staticmethod
    def fit(frame: pd.DataFrame, params: dict):
        from cmfrec import CMF
        model = CMF(method="als", verbose=False, random_state=seed, nthreads=2, **params)
        return model.fit(frame.rename(columns={"user": "UserId", "item": "ItemId", "rating": "Rating"})
                         [["UserId", "ItemId", "Rating"]])

    @staticmethod
    def predict(model, frame: pd.DataFrame) -> np.ndarray:
        pred = model.predict(frame["user"].to_numpy(), frame["item"].to_numpy())
        return np.where(np.isnan(pred), parts["train"]["rating"].mean(), pred)  # unknown ids: the mean


def timed_fit(peer, params: dict) -> tuple[float, float]:
    """(fastest fit seconds of `repeat` on train, test RMSE of that fit)."""
    out = {}
    seconds = best_of(lambda: out.__setitem__("model", peer.fit(parts["train"], params)), repeat)
    return seconds, rmse(peer.predict(out["model"], parts["test"]), parts["test"])


def report(peer, setting: str, params: dict, **extra) -> None:
    seconds, test = timed_fit(peer, params)
    shown = {k: (v if not isinstance(v, list) else v[0:3:2]) for k, v in params.items()}  # lambda_: (bias, factors)
    print(json.dumps({"peer": peer.name, "setting": setting, "params": shown, "fit_seconds": seconds,
                      "test_rmse": test, **extra}), flush=True)


def tune(peer) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    t0 = time.perf_counter()

    def objective(trial) -> float:
        val = rmse(peer.predict(peer.fit(parts["fit"], peer.space(trial)), parts["val"]), parts["val"])
        print(f"{peer.name} trial {trial.number + 1}/{n_trials}: {trial.params} val_rmse {val:.4f}", file=sys.stderr,
              flush=True)
        return val

    study.optimize(objective, n_trials=n_trials)
    tuning = time.perf_counter() - t0
    params = peer.space(optuna.trial.FixedTrial(study.best_params))
    report(peer, "tuned", params, val_rmse=study.best_value, tuning_seconds=tuning, trials=n_trials)


for peer in (CmfrecALS, SurpriseSVD):
    try:
        report(peer, "defaults", peer.defaults)
        tune(peer)
    except ImportError as exc:
        print(json.dumps({"peer": peer.name, "error": str(exc)}), flush=True)
