"""MovieLens side information: titles, item genres, user age / gender / occupation.

Read from the files that sit beside the ratings in the official layouts, when they are there:

* 100K: ``u.item`` (``id|title|release|video release|url|19 genre flags``, latin-1) and
  ``u.user`` (``id|age|gender|occupation|zip``);
* 1M / 10M: ``movies.dat`` (``id::title::Genre|Genre``, latin-1) and, for 1M, ``users.dat``
  (``id::gender::age::occupation::zip``);
* latest / 25M / 32M: ``movies.csv`` (``movieId,title,genres``).

Returns ``{"titles": {item id (str): title}, "item_features": DataFrame indexed by item id (str),
"user_features": DataFrame indexed by user id (str)}`` with whatever was found; numeric feature
columns only (one-hot for categories, age standardized). Missing or unreadable side files are
simply absent: side information is never required.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western"]


def _user_frame(ids, age, gender, occupation) -> pd.DataFrame:
    age = pd.to_numeric(pd.Series(age), errors="coerce").fillna(0.0).to_numpy(float)
    frame = pd.DataFrame({"age": (age - age.mean()) / (age.std() or 1.0)}, index=pd.Index(ids, dtype=str))
    frame["gender_F"] = (np.asarray(gender) == "F").astype(float)
    occ = pd.get_dummies(pd.Series(np.asarray(occupation, dtype=str), index=frame.index), prefix="occ", dtype=float)
    return pd.concat([frame, occ], axis=1)


def _parse(name: str, data: bytes) -> dict:
    text = data.decode("latin-1")
    out: dict = {}
    if name == "u.item":
        f = pd.read_csv(io.StringIO(text), sep="|", header=None, dtype=str, keep_default_na=False)
        ids = f[0].str.strip().to_numpy()
        out["titles"] = dict(zip(ids, f[1]))
        genres = f.iloc[:, 5:5 + len(GENRES_100K)].astype(float).to_numpy()
        out["item_features"] = pd.DataFrame(genres, index=pd.Index(ids, dtype=str),
                                            columns=[f"genre_{g}" for g in GENRES_100K[:genres.shape[1]]])
    elif name == "u.user":
        f = pd.read_csv(io.StringIO(text), sep="|", header=None, dtype=str, keep_default_na=False)
        out["user_features"] = _user_frame(f[0].str.strip(), f[1], f[2], f[3])
    elif name in ("movies.dat", "movies.csv"):
        if name == "movies.dat":
            rows = [line.split("::") for line in text.splitlines() if line.strip()]
            f = pd.DataFrame([r[:3] for r in rows], columns=["id", "title", "genres"])
        else:
            f = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).iloc[:, :3]
            f.columns = ["id", "title", "genres"]
        ids = f["id"].str.strip().to_numpy()
        out["titles"] = dict(zip(ids, f["title"]))
        genres = f["genres"].str.get_dummies(sep="|").astype(float)
        genres.index = pd.Index(ids, dtype=str)
        out["item_features"] = genres.add_prefix("genre_")
    elif name == "users.dat":
        rows = [line.split("::") for line in text.splitlines() if line.strip()]
        f = pd.DataFrame([r[:4] for r in rows], columns=["id", "gender", "age", "occupation"])
        out["user_features"] = _user_frame(f["id"].str.strip(), f["age"], f["gender"], f["occupation"])
    return out


SIDE_FILES = ("u.item", "u.user", "movies.dat", "users.dat", "movies.csv")


def read_side_info(ratings_path: str | Path, member: str | None = None) -> dict:
    """Side information next to ``ratings_path`` (a file) or next to ``member`` inside a zip."""
    out: dict = {}
    path = Path(ratings_path)
    try:
        if member is not None:
            folder = member.rsplit("/", 1)[0] + "/" if "/" in member else ""
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                for name in SIDE_FILES:
                    if folder + name in names:
                        out.update(_parse(name, zf.read(folder + name)))
        else:
            for name in SIDE_FILES:
                side = path.parent / name
                if side.is_file():
                    out.update(_parse(name, side.read_bytes()))
    except Exception:  # side information is optional: a broken side file is ignored, never fatal
        return {}
    return out
