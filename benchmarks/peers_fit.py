"""Runs inside the peers' own virtual environment (.venv-peers): fits scikit-surprise and cmfrec on
a split written by `recsys data split` and prints one JSON line per peer (fit seconds, test RMSE).
Never imported by the project; the peers are not runtime dependencies.

    .venv-peers/bin/python benchmarks/peers_fit.py SPLIT_DIR [LOW HIGH [REPEAT]]
      (the rating scale, default 1 5; each fit once to warm up, then REPEAT times, default 3, the
      fastest reported: the same rule our side uses, so interference on a shared machine does not
      pick the winner)
"""

import json
import sys

import numpy as np
import pandas as pd
from _timing import best_of  # stdlib only: importable from the peers' environment

cols = ["user", "item", "rating", "timestamp"]
split = sys.argv[1]
low, high = (float(a) for a in sys.argv[2:4]) if len(sys.argv) >= 4 else (1.0, 5.0)
repeat = int(sys.argv[4]) if len(sys.argv) >= 5 else 3
train = pd.read_csv(f"{split}/train.tsv", sep="\t", names=cols)
test = pd.read_csv(f"{split}/test.tsv", sep="\t", names=cols)


def rmse(pred):
    return float(np.sqrt(np.mean((np.clip(pred, low, high) - test["rating"].to_numpy()) ** 2)))


try:
    from surprise import SVD, Dataset, Reader
    data = Dataset.load_from_df(train[["user", "item", "rating"]], Reader(rating_scale=(low, high)))
    trainset = data.build_full_trainset()
    for name, algo in (("surprise SVD (defaults: k=100, 20 epochs)", SVD(random_state=0)),
                       ("surprise SVD (k=50, 40 epochs, reg 0.05)", SVD(n_factors=50, n_epochs=40, reg_all=0.05,
                                                                         lr_all=0.007, random_state=0)),
                       ("surprise SVD (k=5, 40 epochs, reg 0.05)", SVD(n_factors=5, n_epochs=40, reg_all=0.05,
                                                                        lr_all=0.007, random_state=0))):
        seconds = best_of(lambda: algo.fit(trainset), repeat)
        pred = np.array([algo.predict(u, i).est for u, i in zip(test["user"], test["item"])])
        print(json.dumps({"peer": name, "fit_seconds": seconds, "test_rmse": rmse(pred)}))
except ImportError as exc:
    print(json.dumps({"peer": "surprise", "error": str(exc)}))

try:
    from cmfrec import CMF
    for name, model in (("cmfrec CMF ALS (k=50, lambda 10)", CMF(method="als", k=50, lambda_=10.0, verbose=False,
                                                                  random_state=0, nthreads=2)),
                        ("cmfrec CMF ALS (k=5, lambda 10)", CMF(method="als", k=5, lambda_=10.0, verbose=False,
                                                                 random_state=0, nthreads=2)),
                        ("cmfrec CMF ALS (k=5, lambda 1)", CMF(method="als", k=5, lambda_=1.0, verbose=False,
                                                                random_state=0, nthreads=2))):
        frame = train.rename(columns={"user": "UserId", "item": "ItemId", "rating": "Rating"})[["UserId", "ItemId", "Rating"]]
        seconds = best_of(lambda: model.fit(frame), repeat)
        pred = model.predict(test["user"].to_numpy(), test["item"].to_numpy())
        pred = np.where(np.isnan(pred), train["rating"].mean(), pred)
        print(json.dumps({"peer": name, "fit_seconds": seconds, "test_rmse": rmse(pred)}))
except ImportError as exc:
    print(json.dumps({"peer": "cmfrec", "error": str(exc)}))
