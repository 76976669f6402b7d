"""Ratings files in, validated ``Ratings`` out: MovieLens layouts, CSV / TSV / Parquet, zip archives.

Formats (``--format``; detected from the name, then the content, when not given):

==========  ===========================================================================
``udata``   tab-separated ``user item rating timestamp``, no header (MovieLens 100K ``u.data``,
            ``u1.base`` ... ``ub.test``; also what ``recsys data synth`` writes)
``dat``     ``user::item::rating::timestamp``, no header (MovieLens 1M and 10M ``ratings.dat``)
``csv``     comma-separated with a header (MovieLens latest / 25M / 32M ``ratings.csv``, your exports)
``tsv``     tab-separated with a header
``parquet`` a Parquet table
``zip``     an archive; the ratings file inside is found by the MovieLens layout
            (``*/u.data``, ``*/ratings.dat``, ``*/ratings.csv``)
==========  ===========================================================================

Text files may be gzip-compressed (``.gz``). Columns of files with a header are found by name
(``userId``/``user``/``user_id``, ``movieId``/``itemId``/``item``/``item_id``, ``rating``,
``timestamp``/``time``) or given with ``user_col`` etc. Every problem is a :class:`DataError`
naming the file and, where it can, the line or column.

Speed: text is read by pandas' C parser, first with typed columns (integer ids and timestamps,
float ratings), which is what MovieLens and most exports hold; only if that fails (string ids,
date timestamps, or a malformed line) is the file read again as text, which is slower but finds
and names the bad line. Validation is vectorized. With ``cache_dir`` set, a file read once is
kept as a binary entry keyed by its checksum (:mod:`pipeline.data.cache`), and later loads skip
the parsing.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import cache
from pipeline.data.ratings import DataError, Ratings, from_raw
from pipeline.limits import memory_limit

FORMATS = ("udata", "dat", "csv", "tsv", "parquet", "zip")
NO_HEADER_COLUMNS = ["user", "item", "rating", "timestamp"]
CANDIDATES = {
    "user": ("userid", "user_id", "user", "uid", "userId"),
    "item": ("movieid", "itemid", "item_id", "item", "movie_id", "iid", "movie"),
    "rating": ("rating", "ratings", "score", "stars"),
    "timestamp": ("timestamp", "time", "ts", "date", "datetime"),
}
ARCHIVE_MEMBERS = (("u.data", "udata"), ("ratings.dat", "dat"), ("ratings.csv", "csv"))
MOVIELENS_SCALES = {"udata": (1.0, 5.0), "dat": None}  # 10M uses half stars: infer for .dat
TEXT_FACTOR = 5  # parsing takes about 5x the text in memory (ML-25M-sized, 654 MB: 3.11 GB peak RSS, docs/data.md)


@dataclass(frozen=True)
class ReadOptions:
    """How to read one ratings file (the CLI's data options)."""

    format: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None
    rating_scale: tuple[float, float] | None = None
    duplicates: str = "error"  # or "last": keep the latest rating of a (user, item) pair

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise DataError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")
        if self.duplicates not in ("error", "last"):
            raise DataError(f"duplicates must be 'error' or 'last', got {self.duplicates!r}")


def dataset_name(path: Path) -> str:
    """A short name for the experiment: ``ml-100k/u.data`` -> ``ml-100k``, ``ml-1m.zip`` -> ``ml-1m``."""
    path = Path(path)
    name = path.name
    for suffix in (".gz", ".zip", ".parquet", ".pq"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name in {"u.data", "ratings.csv", "ratings.dat"}:
        folder = path.absolute().parent.resolve().name  # "../u.data" is named by the folder, not ".."
        if folder:
            return folder
    return Path(name).stem if "." in name else name


def check_path(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a ratings file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: not readable (permission denied)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def detect_format(path: Path, head: bytes) -> str:
    """From the file name, then from the first bytes."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".zip") or head.startswith(b"PK\x03\x04"):
        return "zip"
    if name.endswith((".parquet", ".pq")) or head.startswith(b"PAR1"):
        return "parquet"
    if name == "u.data" or re.fullmatch(r"u\d?\.(base|test)|u[ab]\.(base|test)", name):
        return "udata"
    if name.endswith(".dat"):
        return "dat"
    if name.endswith(".csv"):
        return "csv"
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")
    if "\t" in first and not name.endswith(".csv"):
        fields = first.rstrip("\r").split("\t")
        # a headerless file of 3-4 numeric columns is u.data's layout, whatever its extension
        if 3 <= len(fields) <= 4 and all(re.fullmatch(r"-?[\d.]+", f.strip()) for f in fields):
            return "udata"
    if name.endswith(".tsv"):
        return "tsv"
    if "::" in first:
        return "dat"
    if "\t" in first:
        fields = first.rstrip("\r").split("\t")
        return "udata" if all(re.fullmatch(r"-?[\d.]+", f.strip()) for f in fields) else "tsv"
    return "csv"


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(8192)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(8192)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: truncated or corrupt gzip ({exc})") from None
    return head


def read_ratings(path: str | os.PathLike, options: ReadOptions = ReadOptions(),
                 cache_dir: str | os.PathLike | None = None) -> Ratings:
    """Read and validate the ratings in ``path`` (see the module docstring).

    With ``cache_dir``, a file already read with the same options is loaded from its binary
    cache entry instead of parsed (see :mod:`pipeline.data.cache`).
    """
    path = Path(path)
    check_path(path)
    key = None
    if cache_dir is not None:
        digest = cache.file_sha256(path)
        key = cache.cache_key(digest, options)
        hit = cache.load(Path(cache_dir), key, path, digest)
        if hit is not None:
            ratings, member = hit
            # The entry is keyed by content: name and source are this run's file, not the one that
            # happened to write the entry (a copy elsewhere must not log the other path).
            name = (member.split("/")[0] if member and "/" in member else dataset_name(path))
            source = f"{path}!{member}" if member else str(path)
            ratings = Ratings(**{**ratings.__dict__, "name": name, "source": source})
            return _with_side(ratings, path, member)
    ratings, member = _parse(path, options)
    if key is not None:
        cache.store(Path(cache_dir), key, ratings, path, digest, member)
    return _with_side(ratings, path, member)


def _parse(path: Path, options: ReadOptions) -> tuple[Ratings, str | None]:
    """The validated ratings and, for an archive, the member they came from."""
    head = _head(path)
    fmt = options.format or detect_format(path, head)
    if fmt == "zip":
        return _read_zip(path, options)
    if fmt != "parquet" and b"\x00" in head:
        raise DataError(f"{path}: looks binary, not a text ratings file (use --format if it is Parquet)")
    return _read_table(path, fmt, options, label=str(path), name=dataset_name(path)), None


def _read_table(source, fmt: str, options: ReadOptions, label: str, name: str) -> Ratings:
    """Typed fast read first; on any failure the text read, whose errors name the bad line."""
    # The byte scan reads the text pandas will parse: decompressed, and never a binary format
    # (Parquet's own bytes are not lines: an uncompressed file was refused as "line 190 too long").
    text_only = fmt != "parquet" and _noncanonical_integers(source, label)  # raises on a line too long
    try:
        frame = None if text_only else _read_typed(source, fmt, options)
        if frame is not None:
            return _to_ratings(frame, fmt, options, label=label, name=name)
    except (DataError, ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, zlib.error):
        pass
    if hasattr(source, "seek"):
        source.seek(0)
    frame = _read_frame(source, fmt, options, label=label)
    return _to_ratings(frame, fmt, options, label=label, name=name)


def _with_side(ratings: Ratings, path: Path, member: str | None) -> Ratings:
    from pipeline.data.side import read_side_info
    side = read_side_info(path, member)
    return Ratings(**{**ratings.__dict__, "extra": side}) if side else ratings


def _read_zip(path: Path, options: ReadOptions) -> tuple[Ratings, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            candidates = [n for n in names if n.split("/")[-1] in {m for m, _ in ARCHIVE_MEMBERS}]
            if len(candidates) > 1:  # which one was meant is not ours to guess
                raise DataError(f"{path}: the archive holds {len(candidates)} ratings files "
                                f"({', '.join(sorted(candidates)[:4])}); unpack the one you mean and give its path")
            for member_name, fmt in ARCHIVE_MEMBERS:
                found = sorted((n for n in names if n.split("/")[-1] == member_name), key=len)
                if found:
                    member = found[0]
                    label = f"{path}!{member}"
                    size, limit = zf.getinfo(member).file_size, memory_limit() // TEXT_FACTOR
                    if size > limit:  # a zip bomb, or a file too big for this machine: before reading it
                        raise DataError(f"{label}: unpacks to {size:,} bytes; parsing it needs about {TEXT_FACTOR}x "
                                        f"that, more than the {memory_limit():,} bytes this process may use")
                    with zf.open(member) as fh:
                        data = fh.read()  # reads the whole member: a CRC error shows up here
                    top = member.split("/")[0] if "/" in member else dataset_name(path)
                    inner = options.format if options.format not in (None, "zip") else fmt
                    return _read_table(io.BytesIO(data), inner, options, label=label, name=top), member
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt zip archive ({exc})") from None
    shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    raise DataError(f"{path}: no ratings file in the archive (looked for u.data, ratings.dat, ratings.csv; "
                    f"it holds: {shown or 'nothing'})")


_ID, _VALUE = np.int64, np.float64
_TYPED = {0: _ID, 1: _ID, 2: _VALUE, 3: _ID}  # user, item, rating, timestamp


def _read_typed(source, fmt: str, options: ReadOptions) -> pd.DataFrame | None:
    """The table with numeric columns, or an exception / ``None`` when the file needs the text read.

    Strict on shape: a line with too many fields is a parser error and one with too few leaves a
    gap that an integer column refuses, so a malformed file always falls through to
    :func:`_read_frame`.
    """
    if fmt == "udata":
        frame = pd.read_csv(source, sep="\t", header=None, dtype=_TYPED, engine="c")
        return frame.set_axis(NO_HEADER_COLUMNS[:frame.shape[1]], axis=1) if frame.shape[1] in (3, 4) else None
    if fmt == "dat":
        dtype = {0: _ID, 2: _ID, 4: _VALUE, 6: _ID}
        frame = pd.read_csv(source, sep=":", header=None, dtype=dtype, engine="c")
        if frame.shape[1] != 7 or not frame[[1, 3, 5]].isna().all().all():
            return None
        return frame[[0, 2, 4, 6]].set_axis(NO_HEADER_COLUMNS, axis=1)
    if fmt in ("csv", "tsv"):
        sep = "\t" if fmt == "tsv" else ","
        columns = pd.read_csv(source, sep=sep, nrows=0, engine="c")
        if hasattr(source, "seek"):
            source.seek(0)
        picked = _pick_all(columns, options, label="")
        dtype = {col: (_VALUE if role == "rating" else _ID) for role, col in picked.items() if col is not None}
        frame = pd.read_csv(source, sep=sep, header=0, dtype=dtype, engine="c")
        return frame if len(frame) else None
    return None


def _read_frame(source, fmt: str, options: ReadOptions, label: str) -> pd.DataFrame:
    """The raw table, every column as text (validation converts)."""
    common = dict(dtype=str, keep_default_na=False, on_bad_lines="error", engine="c")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(source)
            return frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
        if fmt == "udata":
            frame = pd.read_csv(source, sep="\t", header=None, **common)
            return _fixed_columns(frame, 4, "tab", label, optional_time=True)
        if fmt == "dat":
            # '::' split on ':' gives user, '', item, '', rating, '', timestamp: keeps the C parser
            frame = pd.read_csv(source, sep=":", header=None, **common)
            if frame.shape[1] == 7 and (frame[[1, 3, 5]] == "").all().all():
                frame = frame[[0, 2, 4, 6]].set_axis(range(4), axis=1)
            else:
                raise DataError(f"{label}, line 1: expected user::item::rating::timestamp")
            return _fixed_columns(frame, 4, "'::'", label)
        sep = "\t" if fmt == "tsv" else ","
        frame = pd.read_csv(source, sep=sep, header=0, **common)
        if frame.empty:
            raise DataError(f"{label}: header only, no ratings")
        if frame.shape[1] == 1:
            raise DataError(f"{label}: one column only ({frame.columns[0]!r}): wrong delimiter? "
                            f"expected {'tabs' if sep == chr(9) else 'commas'}; use --format")
        return frame
    except pd.errors.EmptyDataError:
        raise DataError(f"{label}: no ratings (empty)") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            raise DataError(f"{label}, line {found.group(2)}: expected {found.group(1)} fields, found {found.group(3)}") from None
        raise DataError(f"{label}: cannot parse ({str(exc).strip().splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise DataError(f"{label}: not a text file (cannot decode as UTF-8)") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{label}: truncated or corrupt compressed file ({exc})") from None
    except (OSError, ValueError) as exc:  # pyarrow errors on a bad Parquet file are among these
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{label}: cannot read ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None


def _delimiter_hint(text: str) -> str:
    for sep, sep_name in (("::", "'::'"), (",", "comma"), (";", "semicolon"), (" ", "space")):
        if sep in text:
            return f"; the line looks {sep_name}-separated: wrong delimiter? (--format)"
    return ""


def _fixed_columns(frame: pd.DataFrame, n: int, delimiter: str, label: str, optional_time: bool = False) -> pd.DataFrame:
    if optional_time and frame.shape[1] == n - 1:  # user, item, rating without a timestamp
        n = n - 1
    if frame.shape[1] != n:
        hint = _delimiter_hint(str(frame.iloc[0, 0])) if frame.shape[1] == 1 and len(frame) else ""
        raise DataError(f"{label}, line 1: expected {n} {delimiter}-separated fields "
                        f"(user, item, rating, timestamp), found {frame.shape[1]}{hint}")
    frame = frame.set_axis(NO_HEADER_COLUMNS[:n], axis=1)
    empty = (frame.isna() | frame.eq("")).to_numpy()
    if empty.any():
        row, col = (int(a[0]) for a in np.nonzero(empty))
        filled = int((~empty[row]).sum())
        if filled < n and all(empty[row, filled:]):
            raise DataError(f"{label}, line {row + 1}: expected {n} {delimiter}-separated fields, found {filled}"
                            + _delimiter_hint(str(frame.iloc[row, 0])))
        raise DataError(f"{label}, line {row + 1}: the {NO_HEADER_COLUMNS[col]} field is empty")
    return frame


def _pick(frame: pd.DataFrame, role: str, given: str | None, label: str, required: bool) -> str | None:
    cols = list(frame.columns)
    if given:
        if given not in cols:
            raise DataError(f"{label}: no column {given!r} (columns: {', '.join(map(str, cols))})")
        return given
    lower = {str(c).lower(): c for c in cols}
    for cand in CANDIDATES[role]:
        if cand.lower() in lower:
            return lower[cand.lower()]
    if required:
        raise DataError(f"{label}: no {role} column (looked for {', '.join(CANDIDATES[role][:4])}; "
                        f"columns: {', '.join(map(str, cols))}); name it with --{role}-col")
    return None


def _pick_all(frame: pd.DataFrame, options: ReadOptions, label: str) -> dict:
    """Column of each role (user, item, rating required; timestamp optional), by option or by name."""
    return {role: _pick(frame, role, getattr(options, "time_col" if role == "timestamp" else f"{role}_col"),
                        label, required=role != "timestamp")
            for role in ("user", "item", "rating", "timestamp")}


def _to_ratings(frame: pd.DataFrame, fmt: str, options: ReadOptions, label: str, name: str) -> Ratings:
    header = fmt in ("csv", "tsv", "parquet")
    if header:
        cols = _pick_all(frame, options, label)
    else:
        cols = {role: (role if role in frame.columns else None) for role in ("user", "item", "rating", "timestamp")}
    line0 = 2 if fmt in ("csv", "tsv") else 1  # file line of row 0

    def where(row: int) -> str:
        return f"{label}, line {row + line0}" if fmt != "parquet" else f"{label}, row {row + 1}"

    for role in ("user", "item"):
        col = frame[cols[role]]
        numeric = col.dtype.kind in "iuf"  # the typed read: no blanks possible, and no 25M strings made
        missing = col.isna() if numeric else col.isna() | (col.astype(str).str.strip() == "")
        if missing.any():
            raise DataError(f"{where(int(np.flatnonzero(missing.to_numpy())[0]))}: missing {role} id")
    raw_rating = frame[cols["rating"]]
    rating = pd.to_numeric(raw_rating, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(rating)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where(row)}: rating {raw_rating.iloc[row]!r} is not a finite number")
    timestamps = None
    if cols["timestamp"] is not None:
        raw_t = frame[cols["timestamp"]]
        t = pd.to_numeric(raw_t, errors="coerce")
        if t.isna().any():
            parsed = pd.to_datetime(raw_t, errors="coerce", utc=True)
            if parsed.isna().any():
                row = int(np.flatnonzero((t.isna() & parsed.isna()).to_numpy())[0])
                raise DataError(f"{where(row)}: timestamp {raw_t.iloc[row]!r} is neither a number nor a date")
            t = pd.Series((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1))
        timestamps = t.to_numpy(dtype=np.int64)
    users = _ids(frame[cols["user"]])
    items = _ids(frame[cols["item"]])
    scale = options.rating_scale or MOVIELENS_SCALES.get(fmt)
    if scale is not None:
        lo, hi = scale
        outside = (rating < lo) | (rating > hi)
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            raise DataError(f"{where(row)}: rating {rating[row]:g} is outside the scale {lo:g}..{hi:g}"
                            + ("" if options.rating_scale else " (set --rating-scale)"))
    if options.duplicates == "last":
        users, items, rating, timestamps = _keep_last(users, items, rating, timestamps)
    return from_raw(users, items, rating, timestamps, rating_scale=scale, name=name, source=label)


_SCAN_CHUNK = 1 << 24
_FIELD_START = np.zeros(256, bool)  # bytes after which a field starts
_FIELD_START[[ord(c) for c in "\t,:;\n"]] = True
_DIGIT = np.zeros(256, bool)
_DIGIT[ord("0"):ord("9") + 1] = True
_ZERO = np.zeros(256, bool)
_ZERO[ord("0")] = True


MAX_LINE_BYTES = 1 << 16  # a ratings line is tens of bytes; one of 5 MB took 22 GB in the parsers


def _open_text_bytes(path):
    """The bytes pandas will parse from ``path``: decompressed where it is gzip, bz2 or xz (by
    their magic bytes; pandas infers the same from the name). Scanning the compressed bytes let
    "007" and "7" merge and a 1 MB line through in a 14 KB .gz (the parser then spun for minutes)."""
    import bz2
    import lzma
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _noncanonical_integers(source, label: str = "") -> bool:
    """Whether any field of the file starts like a non-canonical integer: a leading zero before a
    digit ("007"), a plus sign, or "-0". Then the typed read, which would merge "007" and "7" into
    one id, is skipped for the text read, which keeps them as two labels. One streaming pass over
    the bytes in 16 MB chunks, vectorized (ratings like "0.5" do not count). The same pass bounds
    memory on hostile files: a line over ``MAX_LINE_BYTES``, or a text (decompressed) larger than
    ``memory_limit() / TEXT_FACTOR``, is a one-line error naming it."""
    opened = _open_text_bytes(source) if isinstance(source, (str, os.PathLike)) else None
    fh = opened or source
    try:
        tail, carry, lines, found, total = b"\n", 0, 0, False, 0  # carry: bytes of the line still open
        limit = memory_limit() // TEXT_FACTOR
        while block := fh.read(_SCAN_CHUNK):
            total += len(block)
            if total > limit:  # a gzip bomb, or a text too big for this machine: before parsing it
                raise DataError(f"{label or 'the file'}: more than {limit:,} bytes of text; parsing it needs about "
                                f"{TEXT_FACTOR}x that, more than the {memory_limit():,} bytes this process may use")
            nl = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            if len(nl):
                lengths = np.concatenate([[carry + nl[0]], np.diff(nl) - 1])  # every line this block ends
                carry = len(block) - nl[-1] - 1
            else:
                lengths, carry = np.empty(0, np.int64), carry + len(block)
            if (len(lengths) and lengths.max() > MAX_LINE_BYTES) or carry > MAX_LINE_BYTES:
                long = np.flatnonzero(lengths > MAX_LINE_BYTES)
                bad = lines + (int(long[0]) + 1 if len(long) else len(lengths) + 1)
                raise DataError(f"{label or 'the file'}, line {bad}: longer than {MAX_LINE_BYTES // 1024} KB; "
                                "not a ratings file (a line holds a user, an item, a rating and a time)")
            lines += len(lengths)
            if not found:
                a = np.frombuffer(tail + block + b"\n", np.uint8)  # a[j - 1], a[j + 1] exist for every j tested
                # '0' before a digit, '+', and '-' before '0', at the start of a field. '0' is common
                # inside numbers, so the (sparse) candidates are found first and only they are tested.
                for char, after in ((48, _DIGIT), (43, None), (45, _ZERO)):
                    at = np.flatnonzero(a[1:-1] == char) + 1
                    if len(at) and (_FIELD_START[a[at - 1]] & (after is None or after[a[at + 1]])).any():
                        found = True
                        break
            tail = block[-2:]
        return found
    finally:
        if opened:
            opened.close()
        elif hasattr(fh, "seek"):
            fh.seek(0)


def _ids(column: pd.Series) -> np.ndarray:
    """Ids are labels: integer ids stay integers (sorted numerically) when every id is written as
    a canonical integer ("7", "-3"; parsed exactly, never through float); otherwise every id is
    its stripped text, so "007", "7", "1e3", "1000" and "5.0" stay distinct users or items."""
    if column.dtype.kind in "iu":
        return column.to_numpy(dtype=np.int64)
    text = column.astype(str).str.strip()
    if len(text) and text.str.fullmatch(r"-?(?:0|[1-9][0-9]{0,18})").all():
        try:
            return text.astype(np.int64).to_numpy()
        except (OverflowError, ValueError):  # beyond int64: labels as text
            pass
    return text.to_numpy(dtype=str)


def _keep_last(users, items, rating, timestamps):
    """For duplicate (user, item) pairs keep the latest by timestamp (ties: the later row)."""
    order = np.arange(len(rating))
    frame = pd.DataFrame({"u": users, "i": items, "t": timestamps if timestamps is not None else order, "o": order})
    frame = frame.sort_values(["t", "o"], kind="stable").drop_duplicates(["u", "i"], keep="last").sort_values("o")
    keep = frame["o"].to_numpy()
    return users[keep], items[keep], rating[keep], None if timestamps is None else timestamps[keep]
