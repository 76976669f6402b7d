"""The embedded default dataset: a seeded generator shaped like MovieLens 100K.

Model of the data (all draws from one ``numpy.random.Generator`` seeded by ``seed``):

* user activity ``n_u`` is log-normal, at least ``min_per_user`` (MovieLens keeps users with
  20 or more ratings), scaled so that the counts add up to exactly ``n_ratings``;
* item popularity follows a Zipf-like law ``pop_i ∝ (rank_i + 10)^-1.1`` over a random
  permutation of the items, and each user's items are drawn without replacement in
  proportion to it (a long tail of rarely rated items, as in MovieLens);
* the rating is ``mu + b_u + c_i + p_u·q_i + noise`` with a planted rank ``true_rank``
  structure, item biases that grow with popularity (popular films are rated higher), then
  rounded to whole stars and clipped to 1..5.

Defaults give 943 users, 1,682 items and 100,000 ratings, mean near 3.5 and a spread of
about one star, like the real MovieLens 100K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.data.ratings import DataError, Ratings, from_raw


@dataclass(frozen=True)
class SyntheticSpec:
    n_users: int = 943
    n_items: int = 1682
    n_ratings: int = 100_000
    true_rank: int = 5
    noise: float = 0.75
    min_per_user: int = 20
    seed: int = 0

    def validate(self) -> None:
        if self.n_users < 1 or self.n_items < 2:
            raise DataError("synthetic data needs at least 1 user and 2 items")
        cap = self.n_users * (self.n_items // 2)
        if not self.n_users <= self.n_ratings <= cap:
            raise DataError(
                f"synthetic n_ratings must be between n_users ({self.n_users}) and "
                f"n_users * n_items / 2 ({cap}); got {self.n_ratings}"
            )


def _user_counts(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """Per-user counts: log-normal shape, floor ``min_per_user``, cap n_items/2, exact total."""
    cap = spec.n_items // 2
    floor = min(spec.min_per_user, spec.n_ratings // spec.n_users, cap)
    raw = rng.lognormal(mean=0.0, sigma=1.0, size=spec.n_users)
    spare = spec.n_ratings - floor * spec.n_users
    counts = floor + np.floor(raw / raw.sum() * spare).astype(np.int64)
    counts = np.minimum(counts, cap)
    # Hand out what rounding and the cap left over, one rating at a time to users with room.
    short = spec.n_ratings - int(counts.sum())
    while short > 0:
        room = np.flatnonzero(counts < cap)
        take = rng.choice(room, size=min(short, len(room)), replace=False)
        counts[take] += 1
        short = spec.n_ratings - int(counts.sum())
    return counts


def _unique_sorted(key: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort + compare; numpy 2's hash-based ``unique`` is far slower here)."""
    key = np.sort(key)
    return key[np.concatenate([[True], key[1:] != key[:-1]])] if len(key) else key


def _draw_items(counts: np.ndarray, pop: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each user u, ``counts[u]`` distinct items drawn in proportion to ``pop``.

    Vectorized rejection: draw with replacement, drop repeated (user, item) pairs, redraw the
    shortfall. Heavy users run out of popular items, so after a few popularity-weighted rounds
    the shortfall is drawn uniformly (few collisions), and the last few users short after that
    take uniformly from their unrated items. Work stays O(N log N) at any size.
    """
    n_items, n_users = len(pop), len(counts)
    p = pop / pop.sum()
    users = np.repeat(np.arange(n_users), counts)
    items = rng.choice(n_items, size=len(users), p=p)
    for round_ in range(60):
        key = _unique_sorted(users.astype(np.int64) * n_items + items)
        users, items = np.divmod(key, n_items)
        deficit = counts - np.bincount(users, minlength=n_users)
        if not deficit.any():
            return users, items
        extra_users = np.repeat(np.arange(n_users), deficit)
        extra_items = (rng.choice(n_items, size=len(extra_users), p=p) if round_ < 8
                       else rng.integers(0, n_items, size=len(extra_users)))
        users = np.concatenate([users, extra_users])
        items = np.concatenate([items, extra_items])
    key = _unique_sorted(users.astype(np.int64) * n_items + items)
    users, items = np.divmod(key, n_items)
    have = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(have)])
    extra_u, extra_i = [], []
    for u in np.flatnonzero(have < counts):
        rated = items[starts[u]:starts[u + 1]]  # users are sorted: the user's items are one slice
        free = np.setdiff1d(np.arange(n_items), rated)
        pick = rng.choice(free, size=counts[u] - have[u], replace=False)
        extra_u.append(np.full(len(pick), u))
        extra_i.append(pick)
    users = np.concatenate([users, *extra_u])
    items = np.concatenate([items, *extra_i])
    return users, items


def generate(spec: SyntheticSpec = SyntheticSpec()) -> Ratings:
    """Generate the dataset described by ``spec`` (deterministic in ``spec.seed``)."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    counts = _user_counts(spec, rng)
    popularity_rank = rng.permutation(spec.n_items)
    pop = (popularity_rank + 10.0) ** -1.1
    users, items = _draw_items(counts, pop, rng)

    k = spec.true_rank
    scale = (0.6 / np.sqrt(k)) ** 0.5  # p·q has standard deviation about 0.6
    P = rng.normal(0.0, scale, size=(spec.n_users, k))
    Q = rng.normal(0.0, scale, size=(spec.n_items, k))
    b = rng.normal(0.0, 0.35, size=spec.n_users)
    log_pop = np.log(pop)
    c = 0.25 * (log_pop - log_pop.mean()) / log_pop.std() + rng.normal(0.0, 0.35, size=spec.n_items)
    signal = 3.3 + b[users] + c[items] + np.einsum("nk,nk->n", P[users], Q[items])
    value = signal + rng.normal(0.0, spec.noise, size=len(users))
    stars = np.clip(np.rint(value), 1.0, 5.0)
    start = 874_724_710  # 1997-09-20, the start of MovieLens 100K
    timestamps = start + rng.integers(0, 215 * 86_400, size=len(users))
    order = rng.permutation(len(users))  # files are not sorted by user
    return from_raw(
        users[order] + 1,
        items[order] + 1,
        stars[order],
        timestamps[order],
        rating_scale=(1.0, 5.0),
        name="synthetic",
        source=f"synthetic(seed={spec.seed}, users={spec.n_users}, items={spec.n_items}, ratings={spec.n_ratings})",
    )
