"""A fitted recommender in raw ids: predictions and top-n lists (no MLflow here).

It holds what a fit produced (``mu``, factors, biases), the id vocabularies, which users and items
had training ratings, the training pairs (to leave out already-rated items) and the rating scale.
Unknown users or items get the documented fallback, never an exception: the global mean plus any
known bias (an unknown user of a known item gets ``mu + c_i``), clipped to the scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Recommender:
    mu: float
    P: np.ndarray
    Q: np.ndarray
    b: np.ndarray
    c: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_known: np.ndarray
    item_known: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    rating_scale: tuple[float, float]
    titles: dict | None = None

    @classmethod
    def from_fit(cls, objective, x: np.ndarray, ratings, train) -> "Recommender":
        P, Q, b, c = objective.unpack(np.asarray(x, dtype=np.float64))
        titles = ratings.extra.get("titles") if ratings.extra else None
        return cls(objective.mu, P.copy(), Q.copy(), b.copy(), c.copy(), ratings.user_ids, ratings.item_ids,
                   objective.user_counts > 0, objective.item_counts > 0, train.users.astype(np.int64),
                   train.items.astype(np.int64), tuple(ratings.rating_scale), titles)

    # -- persistence (one .npz file) ----------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {k: getattr(self, k) for k in ("P", "Q", "b", "c", "user_known", "item_known",
                                                "train_users", "train_items")}
        np.savez_compressed(path, mu=self.mu, scale=np.array(self.rating_scale), user_ids=self.user_ids.astype(str),
                            item_ids=self.item_ids.astype(str), user_int=np.array(self.user_ids.dtype.kind in "iu"),
                            item_int=np.array(self.item_ids.dtype.kind in "iu"), **arrays,
                            title_keys=np.array(list((self.titles or {}).keys()), dtype=str),
                            title_values=np.array(list((self.titles or {}).values()), dtype=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recommender":
        z = np.load(path, allow_pickle=False)
        uid = z["user_ids"].astype(np.int64) if bool(z["user_int"]) else z["user_ids"]
        iid = z["item_ids"].astype(np.int64) if bool(z["item_int"]) else z["item_ids"]
        titles = dict(zip(z["title_keys"].tolist(), z["title_values"].tolist())) or None
        return cls(float(z["mu"]), z["P"], z["Q"], z["b"], z["c"], uid, iid, z["user_known"], z["item_known"],
                   z["train_users"], z["train_items"], tuple(z["scale"].tolist()), titles)

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

    # -- predictions ------------------------------------------------------------------------------------
    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings for raw id pairs, clipped to the scale; unknown ids fall back."""
        u = self._index(self.user_ids, users)
        i = self._index(self.item_ids, items)
        ku = (u >= 0) & self.user_known[np.maximum(u, 0)]
        ki = (i >= 0) & self.item_known[np.maximum(i, 0)]
        out = np.full(len(u), self.mu)
        out[ku] += self.b[u[ku]]
        out[ki] += self.c[i[ki]]
        both = ku & ki
        out[both] += np.einsum("nk,nk->n", self.P[u[both]], self.Q[i[both]])
        return np.clip(out, *self.rating_scale)

    def scores(self, user_index: np.ndarray) -> np.ndarray:
        """Predicted ratings of every item for inner user indices (users x items), unclipped:
        ``mu + b_u + c_i + p_u . Q^T`` for known users, the item part alone for unknown ones."""
        user_index = np.asarray(user_index, np.int64)
        known_u = self.user_known[user_index]
        base = self.mu + np.where(self.item_known, self.c, 0.0)[None, :]
        s = np.repeat(base, len(user_index), axis=0)
        s[known_u] += self.b[user_index[known_u]][:, None]
        s[np.ix_(known_u, self.item_known)] += self.P[user_index[known_u]] @ self.Q[self.item_known].T
        return s

    def recommend(self, users, n: int = 10) -> pd.DataFrame:
        """Top-``n`` items per raw user id, excluding items the user rated in training; vectorized
        over users. Unknown users get the most popular-by-bias items (the fallback)."""
        users = list(users)
        idx = self._index(self.user_ids, users)
        rows = []
        safe = np.where(idx >= 0, idx, 0)
        s = self.scores(safe)
        s[idx < 0] = self.mu + np.where(self.item_known, self.c, -np.inf)
        s[:, ~self.item_known] = -np.inf  # never recommend items nobody rated in training
        if not hasattr(self, "_by_user"):
            order = np.argsort(self.train_users, kind="stable")
            self._by_user = (self.train_users[order], self.train_items[order])
        tu, ti = self._by_user
        for r, u in enumerate(idx):
            if u >= 0:
                a, b = np.searchsorted(tu, [u, u + 1])
                s[r, ti[a:b]] = -np.inf  # already rated in training
        n = min(n, s.shape[1])
        top = np.argpartition(-s, n - 1, axis=1)[:, :n]
        for r, user in enumerate(users):
            cand = top[r][np.argsort(-s[r, top[r]], kind="stable")]
            cand = cand[np.isfinite(s[r, cand])]
            for rank, item in enumerate(cand, 1):
                raw = self.item_ids[item]
                rows.append({"user": user, "rank": rank, "item": raw,
                             "score": float(np.clip(s[r, item], *self.rating_scale)),
                             "title": (self.titles or {}).get(str(raw), "")})
        return pd.DataFrame(rows, columns=["user", "rank", "item", "score", "title"])


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
