"""A fitted model in raw ids: predictions and top-n lists, for any model (no MLflow here).

It holds the model's scorer (``objective.scorer(x)``, see ``pipeline.objectives.serving``), the id
vocabularies, which users and items had training ratings, the training pairs (to leave out
already-rated items) and the range predictions are clipped to. An id training never saw reaches
the scorer as -1 and gets the model's fallback, never an exception and never another id's row.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.ratings import DataError


@dataclass
class Recommender:
    scorer: object
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_known: np.ndarray
    item_known: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    rating_scale: tuple[float, float]   # what predictions are clipped to (the model's output range)
    titles: dict | None = None

    @classmethod
    def from_fit(cls, objective, x: np.ndarray, ratings, train) -> "Recommender":
        titles = ratings.extra.get("titles") if ratings.extra else None
        return cls(objective.scorer(np.asarray(x, dtype=np.float64)), ratings.user_ids, ratings.item_ids,
                   np.bincount(train.users, minlength=len(ratings.user_ids)) > 0,
                   np.bincount(train.items, minlength=len(ratings.item_ids)) > 0,
                   train.users.astype(np.int64), train.items.astype(np.int64),
                   tuple(objective.output_range(ratings.rating_scale)), titles)

    # -- persistence (one .npz file; the scorer's class is named so any model's loads) ---------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        kind = type(self.scorer)
        arrays = {f"scorer_{k}": v for k, v in self.scorer.arrays().items()}
        np.savez_compressed(path, scorer=np.array(f"{kind.__module__}:{kind.__qualname__}"),
                            scale=np.array(self.rating_scale), user_ids=self.user_ids.astype(str),
                            item_ids=self.item_ids.astype(str), user_int=np.array(self.user_ids.dtype.kind in "iu"),
                            item_int=np.array(self.item_ids.dtype.kind in "iu"), user_known=self.user_known,
                            item_known=self.item_known, train_users=self.train_users, train_items=self.train_items,
                            title_keys=np.array(list((self.titles or {}).keys()), dtype=str),
                            title_values=np.array(list((self.titles or {}).values()), dtype=str), **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        """The model saved in ``path``, checked before use (``DataError`` naming the file): its
        scorer a class of this package or of a module already loaded (the file never makes this
        process import anything else), every stored number finite, the id maps, training pairs
        and the scorer's arrays of matching sizes."""
        z = np.load(path, allow_pickle=False)
        module, _, name = str(z["scorer"]).partition(":")
        ours = module == "pipeline" or module.startswith("pipeline.")
        if not name.isidentifier() or not (ours or module in sys.modules):  # a file never makes us import code
            raise DataError(f"{path}: the model names a scorer that is neither this package's nor loaded "
                            f"({module}:{name})")
        kind = getattr(importlib.import_module(module) if ours else sys.modules[module], name, None)
        if not hasattr(kind, "from_arrays"):
            raise DataError(f"{path}: {module}:{name} is not a scorer")
        arrays = {k[len("scorer_"):]: z[k] for k in z.files if k.startswith("scorer_")}
        for key, a in arrays.items():
            if a.dtype.kind not in "fiub" or (a.dtype.kind == "f" and not np.isfinite(a).all()):
                raise DataError(f"{path}: the model's {key} is not all finite numbers")
        scorer = kind.from_arrays(arrays)
        uid = z["user_ids"].astype(np.int64) if bool(z["user_int"]) else z["user_ids"]
        iid = z["item_ids"].astype(np.int64) if bool(z["item_int"]) else z["item_ids"]
        titles = dict(zip(z["title_keys"].tolist(), z["title_values"].tolist())) or None
        out = cls(scorer, uid, iid, z["user_known"], z["item_known"], z["train_users"], z["train_items"],
                  tuple(z["scale"].tolist()), titles)
        out._check(path)
        return out

    def _check(self, path) -> None:
        """Sizes that must agree, and one row of scores for the last user and the fallback."""
        nu, ni = len(self.user_ids), len(self.item_ids)
        lo, hi = self.rating_scale
        ok = (len(self.user_known) == nu and len(self.item_known) == ni
              and len(self.train_users) == len(self.train_items)
              and (len(self.train_users) == 0 or (0 <= self.train_users.min() and self.train_users.max() < nu
                                                  and 0 <= self.train_items.min() and self.train_items.max() < ni))
              and np.isfinite([lo, hi]).all() and lo <= hi)
        if ok:
            try:
                probe = self.scorer.scores(np.array([nu - 1, -1]) if nu else np.array([-1]))
                ok = probe.shape == ((2 if nu else 1), ni) and bool(np.isfinite(probe).all())
            except (IndexError, ValueError):
                ok = False
        if not ok:
            raise DataError(f"{path}: the model's arrays do not match its {nu:,} users and {ni:,} items "
                            "(a damaged or altered file)")

    # -- ids ------------------------------------------------------------------------------------------
    def _index(self, vocab: np.ndarray, raw) -> np.ndarray:
        """Inner indices of raw ids, -1 where unknown. Ids are labels, looked up without changing
        their type through float: with an integer vocabulary an id matches only as a Python or
        numpy integer, or as a string in canonical integer form ("196", not "196.0" or "0196");
        anything else (a float, None, NaN, a bool, another string) is unknown and gets the
        fallback, never another user's list (ids above 2^53 stay exact)."""
        raw = np.asarray(raw) if not isinstance(raw, np.ndarray) else raw
        if vocab.dtype.kind in "iu":
            if raw.dtype.kind in "iu" and raw.dtype != np.uint64:
                keys, valid = raw.astype(np.int64), np.ones(len(raw), bool)
            else:
                parsed = [_int_label(v) for v in raw.tolist()]
                valid = np.array([k is not None for k in parsed], bool)
                keys = np.array([k if k is not None else 0 for k in parsed], np.int64)
        else:
            valid = np.array([isinstance(v, (str, np.str_)) or _is_int(v) for v in raw.tolist()], bool)
            keys = np.array([str(v) for v in raw.tolist()], dtype=vocab.dtype if vocab.dtype.kind == "U" else str)
        if len(vocab) == 0:
            return np.full(len(keys), -1)
        pos = np.clip(np.searchsorted(vocab, keys), 0, len(vocab) - 1)
        found = valid & (vocab[pos] == keys)
        return np.where(found, pos, -1)

    def unknown_users(self, users) -> list:
        """The raw user ids the model has no user for (they get the fallback ranking)."""
        index = self._index(self.user_ids, list(users))
        return [u for u, j in zip(users, index) if j < 0]

    # -- predictions ------------------------------------------------------------------------------------
    def _known(self, index: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Inner indices, -1 where the id is unknown or had no training rating (the fallback)."""
        return np.where((index >= 0) & known[np.maximum(index, 0)], index, -1)

    def predict(self, users, items) -> np.ndarray:
        """Predictions for raw id pairs, clipped to the model's range; unknown ids fall back."""
        u = self._known(self._index(self.user_ids, users), self.user_known)
        i = self._known(self._index(self.item_ids, items), self.item_known)
        return np.clip(self.scorer.predict(u, i), *self.rating_scale)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """Scores of every item for inner user indices (users x items), unclipped; a user with no
        training rating gets the fallback row."""
        return self.scorer.scores(self._known(np.asarray(user_index, np.int64), self.user_known))

    BLOCK_CELLS = 1 << 22  # scores held at once while ranking: 32 MB of float64, whatever the batch

    def recommend(self, users, n: int = 10) -> pd.DataFrame:
        """Top-``n`` items per raw user id, excluding items the user rated in training and items
        nobody rated in training; vectorized over blocks of users (at most ``BLOCK_CELLS`` scores
        at once, so memory does not grow with the number of users asked). Unknown users get the
        fallback ranking."""
        users = list(users)
        idx = self._known(self._index(self.user_ids, users), self.user_known)
        n = min(n, len(self.item_ids))
        if not hasattr(self, "_by_user"):
            order = np.argsort(self.train_users, kind="stable")
            self._by_user = (self.train_users[order], self.train_items[order])
        tu, ti = self._by_user
        step = max(1, self.BLOCK_CELLS // max(1, len(self.item_ids)))
        frames = []
        for start in range(0, len(users), step):
            block = idx[start:start + step]
            s = self.scorer.scores(block)
            s[:, ~self.item_known] = -np.inf  # never recommend items nobody rated in training
            lo, hi = np.searchsorted(tu, block), np.searchsorted(tu, block + 1)
            rated = np.repeat(np.arange(len(block)), np.where(block >= 0, hi - lo, 0))
            cols = np.concatenate([ti[a:b] for a, b, u in zip(lo, hi, block) if u >= 0] or [np.empty(0, np.int64)])
            s[rated, cols] = -np.inf  # already rated in training
            if n == 0:
                continue
            top = np.argpartition(-s, n - 1, axis=1)[:, :n]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), axis=1, kind="stable"), 1)
            score = np.take_along_axis(s, top, 1)
            keep = np.isfinite(score)
            r, c = np.nonzero(keep)
            raw = self.item_ids[top[keep]]
            frames.append(pd.DataFrame({"user": np.asarray(users[start:start + step], dtype=object)[r],
                                        "rank": (np.cumsum(keep, axis=1) * keep)[keep].astype(np.int64),
                                        "item": raw, "score": np.clip(score[keep], *self.rating_scale),
                                        "title": [(self.titles or {}).get(str(v), "") for v in raw]}))
        columns = ["user", "rank", "item", "score", "title"]
        return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _int_label(v) -> int | None:
    """``v`` as an integer id label, or None: integers as they are, strings only in canonical
    integer form; never through float."""
    if _is_int(v):
        v = int(v)
    elif isinstance(v, (str, np.str_)):
        text = v.strip()
        try:
            v = int(text)
        except ValueError:
            return None
        if str(v) != text:  # "0196", "+196", "1_96": other labels than 196
            return None
    else:
        return None
    return v if -(2**63) <= v < 2**63 else None
