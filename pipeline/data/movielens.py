"""MovieLens by name: the catalog, checksummed downloads, unpacking into ``data/``.

``fetch(name)`` downloads ``https://files.grouplens.org/datasets/movielens/NAME.zip`` into
``data/NAME.zip``, verifies it, and unpacks it into ``data/NAME/``. It is a no-op when a verified
copy is already there.

Integrity
---------
* The download goes to ``NAME.zip.part``; only a verified file is renamed to ``NAME.zip``, so a
  half-written archive is never taken as good. An interrupted download resumes with an HTTP
  ``Range`` request (or restarts if the server ignores it); a ``.part`` that fails verification is
  deleted.
* Pins: GroupLens publishes an MD5 for each archive (``NAME.zip.md5``); those are pinned here.
  SHA-256 pins could not be obtained on the machine this was written on (no access to the
  archives), so the SHA-256 of every verified archive is recorded beside it in
  ``NAME.zip.sha256`` and checked on every later use; add it to ``sha256`` below to pin it.
  ``ml-latest-small`` is republished by GroupLens from time to time and ``ml-32m`` had no published
  pin we could read: those are trusted on first download (said in the message) and pinned locally
  from then on.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.data.ratings import DataError

BASE_URL = "https://files.grouplens.org/datasets/movielens"


MB = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A MovieLens archive: its pins, its size as published, and the most a download of it (and
    its unpacked members) may take; beyond them the server is not sending that archive."""

    name: str
    md5: str | None = None
    sha256: str | None = None
    size_hint: str = ""
    max_download: int = 64 * MB
    max_unpacked: int = 256 * MB


CATALOG: dict[str, Archive] = {a.name: a for a in (
    Archive("ml-100k", md5="0e33842e24a9c977be4e0107933c0723", size_hint="5 MB", max_download=16 * MB,
            max_unpacked=64 * MB),
    Archive("ml-1m", md5="c4d9eecfca2ab87c1945afe126590906", size_hint="6 MB", max_download=16 * MB,
            max_unpacked=128 * MB),
    Archive("ml-latest-small", size_hint="1 MB", max_download=16 * MB, max_unpacked=64 * MB),
    Archive("ml-10m", md5="ce571fd55effeba0271552578f2648bd", size_hint="63 MB", max_download=160 * MB,
            max_unpacked=1024 * MB),
    Archive("ml-25m", md5="6b51fb2759a8657d3bfcbfc42b592ada", size_hint="250 MB", max_download=512 * MB,
            max_unpacked=3072 * MB),
    Archive("ml-32m", size_hint="239 MB", max_download=512 * MB, max_unpacked=3072 * MB),
)}
MIN_RATE = 50_000  # bytes/s a download must average: its deadline is max(DEADLINE_FLOOR, max_download / MIN_RATE)
DEADLINE_FLOOR = 300.0

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


def base_url() -> str:
    """``$RECSYS_MOVIELENS_URL`` (a mirror, or a test server) or the GroupLens site."""
    return os.environ.get("RECSYS_MOVIELENS_URL", BASE_URL).rstrip("/")


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def verify(archive: Archive, path: Path) -> str:
    """Check ``path`` against the pins (and a recorded SHA-256); return its SHA-256."""
    md5, sha = _digests(path)
    recorded = path.with_name(path.name.replace(".part", "") + ".sha256")
    if archive.sha256 and sha != archive.sha256:
        raise DataError(f"{path}: SHA-256 {sha} does not match the pinned {archive.sha256}")
    if archive.md5 and md5 != archive.md5:
        raise DataError(f"{path}: MD5 {md5} does not match the pinned {archive.md5} (published by GroupLens)")
    if recorded.exists() and not path.name.endswith(".part"):
        want = recorded.read_text().split()[0]
        if want != sha:
            raise DataError(f"{path}: SHA-256 {sha} does not match the one recorded at first download ({want})")
    return sha


def extracted_dir(name: str, data_dir: Path) -> Path:
    return Path(data_dir) / name


def ratings_path(name: str, data_dir: Path) -> Path | None:
    """The ratings file of an unpacked archive, if it is there."""
    folder = extracted_dir(name, data_dir)
    for member in ("u.data", "ratings.dat", "ratings.csv"):
        if (folder / member).is_file():
            return folder / member
    return None


def fetch(name: str, data_dir: str | os.PathLike = "data", progress: Progress | None = None,
          timeout: float = 30.0, deadline: float | None = None) -> Path:
    """Make sure ``data_dir/NAME/`` holds the verified, unpacked archive; return the ratings file.

    ``timeout`` bounds each wait for the server, ``deadline`` (seconds; default from the archive's
    ``max_download`` at ``MIN_RATE``) the whole download; the body may not exceed ``max_download``
    nor the members ``max_unpacked``. A download stopped by its deadline keeps its ``.part`` and
    resumes on the next run."""
    if name not in CATALOG:
        raise DataError(f"unknown MovieLens dataset {name!r}; choose from {', '.join(CATALOG)}")
    archive = CATALOG[name]
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    zip_path = data_dir / f"{name}.zip"
    sha_path = data_dir / f"{name}.zip.sha256"
    if zip_path.exists():
        verify(archive, zip_path)
    else:
        url = f"{base_url()}/{name}.zip"
        part = data_dir / f"{name}.zip.part"
        limit = deadline if deadline is not None else max(DEADLINE_FLOOR, archive.max_download / MIN_RATE)
        _download(url, part, progress, timeout, zip_path, archive.max_download, time.monotonic() + limit)
        try:
            sha = verify(archive, part)
        except DataError as exc:
            part.unlink(missing_ok=True)
            raise DataError(f"{url}: download failed verification and was deleted: {exc}") from None
        os.replace(part, zip_path)
        sha_path.write_text(f"{sha}  {name}.zip\n")
    found = ratings_path(name, data_dir)
    if found is None:
        _unpack(zip_path, data_dir, name, archive.max_unpacked)
        found = ratings_path(name, data_dir)
        if found is None:
            raise DataError(f"{zip_path}: no ratings file (u.data, ratings.dat, ratings.csv) under {name}/")
    return found


def _download(url: str, part: Path, progress: Progress | None, timeout: float, final: Path, max_bytes: int,
              deadline: float, retried: bool = False) -> None:
    """Append the body to ``part`` (resuming it with a Range request); a 206 whose Content-Range
    does not start where ``part`` ends is a fresh start, not appended. DataError past ``max_bytes``
    (the ``.part`` deleted: that server is not sending the archive) or past ``deadline`` (kept)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            if resumed and _range_start(response.headers.get("Content-Range")) != have:
                if retried:
                    part.unlink(missing_ok=True)
                    raise DataError(f"{url}: the server answers a range request with another range "
                                    f"({response.headers.get('Content-Range')}); download it by hand and put it at {final}")
                part.unlink(missing_ok=True)
                response.close()
                return _download(url, part, progress, timeout, final, max_bytes, deadline, retried=True)
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None and length.isdigit() else None
            if total is not None and total > max_bytes:
                raise DataError(f"{url}: the server offers {total:,} bytes, more than the {max_bytes:,} this archive "
                                f"can be; download it by hand and put it at {final}")
            with open(part, "ab" if resumed else "wb") as out:
                done = have
                while True:
                    block = response.read1(1 << 16)  # what has arrived: a slow server still shows progress
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                    if done > max_bytes:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise DataError(f"{url}: the body passed {max_bytes:,} bytes, more than this archive can be; "
                                        "deleted it")
                    if time.monotonic() > deadline:
                        raise DataError(f"{url}: the download is too slow ({done:,} bytes when its deadline passed); "
                                        "run the command again to resume, or download it by hand and put it at "
                                        f"{final}")
            if total is not None and done < total:
                raise DataError(f"{url}: connection closed after {done:,} of {total:,} bytes; "
                                f"run the command again to resume")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: the .part is suspicious, start over
            part.unlink(missing_ok=True)
            return _download(url, part, progress, timeout, final, max_bytes, deadline, retried)
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}; download it by hand and put it at {final}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url} ({reason}); download it by hand and put it at {final}") from None


def _range_start(header: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``, or None if it is not one."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", header or "")
    return int(m.group(1)) if m else None


def _unpack(zip_path: Path, data_dir: Path, name: str, max_bytes: int) -> None:
    """Unpack into a temporary folder, then move ``NAME/`` into place (never half-unpacked); the
    members' sizes are added up first, and more than ``max_bytes`` is refused before any is written."""
    try:
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            with zipfile.ZipFile(zip_path) as zf:
                unpacked = sum(i.file_size for i in zf.infolist())
                if unpacked > max_bytes:
                    raise DataError(f"{zip_path}: its members unpack to {unpacked:,} bytes, more than the {max_bytes:,} "
                                    f"this archive can hold; not unpacked")
                for member in zf.namelist():  # refuse paths that would escape the folder
                    target = (Path(tmp) / member).resolve()
                    if not str(target).startswith(str(Path(tmp).resolve())):
                        raise DataError(f"{zip_path}: unsafe path in archive: {member}")
                zf.extractall(tmp)
            inner = Path(tmp) / name
            if not inner.is_dir():
                tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
                inner = tops[0] if len(tops) == 1 else Path(tmp)
            dest = extracted_dir(name, data_dir)
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(str(inner), str(dest))
    except zipfile.BadZipFile as exc:
        raise DataError(f"{zip_path}: corrupt zip archive ({exc}); delete it and fetch again") from None
