"""Caches that keep the Image Browser fast on large output folders, both kept inside the data dir and
keyed by file path + mtime + size (a changed file is simply a new key):

* `InfotextIndex`: the infotext of every image seen, in a small sqlite file, so a search reads only
  the files that are new or changed since the last one;
* `ThumbnailCache`: small JPEG thumbnails, made once, on demand, a page at a time, in a thread pool.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image

log = logging.getLogger(__name__)

THUMB_SIZE = 256  # longest side, px
THUMB_QUALITY = 82
_LOOKUP_ALL_ABOVE = 400  # past this many files one full read of the table beats IN (...) queries
_SCHEMA = ("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, "
           "size INTEGER NOT NULL, infotext TEXT NOT NULL)")


@dataclass(frozen=True)
class FileStat:
    """One image file as a directory scan found it (no decoding)."""
    path: str  # absolute
    mtime_ns: int
    size: int


def workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def read_infotext(path: str | Path) -> str:
    """The generation parameters of an image file, as the PNG Info tab reads them (PNG text chunk,
    JPEG/WebP EXIF UserComment, GIF comment), else the `.txt` sidecar A1111's `save_txt` writes;
    "" when there are none or the file cannot be read. Only the header is parsed, not the pixels."""
    from webui.infotext import read_info_from_image
    text: str | None = None
    try:
        with Image.open(path) as img:
            text, _ = read_info_from_image(img)
    except Exception as e:  # noqa: BLE001 - a broken file is listed without parameters
        log.debug("no infotext from %s: %s", path, e)
    if not text:
        sidecar = Path(path).with_suffix(".txt")
        try:
            text = sidecar.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = None
    return (text or "").strip()


class InfotextIndex:
    """path → infotext, valid while the file's mtime and size are unchanged."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _rows(self, db: sqlite3.Connection, paths: list[str]) -> dict[str, tuple[int, int, str]]:
        if len(paths) > _LOOKUP_ALL_ABOVE:
            cur = db.execute("SELECT path, mtime_ns, size, infotext FROM files")
        else:
            marks = ",".join("?" * len(paths))
            cur = db.execute(f"SELECT path, mtime_ns, size, infotext FROM files WHERE path IN ({marks})", paths)
        return {p: (m, s, t) for p, m, s, t in cur}

    def lookup(self, files: Iterable[FileStat]) -> dict[str, str]:
        """The infotext of each file; files new or changed since they were indexed are read (in a
        thread pool) and stored."""
        files = list(files)
        if not files:
            return {}
        with self._connect() as db:
            rows = self._rows(db, [f.path for f in files])
        out: dict[str, str] = {}
        stale: list[FileStat] = []
        for f in files:
            row = rows.get(f.path)
            if row is not None and row[0] == f.mtime_ns and row[1] == f.size:
                out[f.path] = row[2]
            else:
                stale.append(f)
        if stale:
            with ThreadPoolExecutor(workers(), thread_name_prefix="infotext") as pool:
                texts = list(pool.map(lambda f: read_infotext(f.path), stale))
            with self._connect() as db:
                db.executemany("INSERT OR REPLACE INTO files (path, mtime_ns, size, infotext) VALUES (?, ?, ?, ?)",
                               [(f.path, f.mtime_ns, f.size, t) for f, t in zip(stale, texts)])
            out.update({f.path: t for f, t in zip(stale, texts)})
        return out

    def forget(self, paths: Iterable[str]) -> None:
        with self._connect() as db:
            db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])

    def prune(self, under: Iterable[str], seen: set[str]) -> int:
        """Drop rows of files that are gone from the given folders (absolute paths with a trailing
        separator); returns how many."""
        prefixes = tuple(under)
        with self._connect() as db:
            gone = [(p,) for (p,) in db.execute("SELECT path FROM files") if p.startswith(prefixes) and p not in seen]
            db.executemany("DELETE FROM files WHERE path = ?", gone)
        return len(gone)


class ThumbnailCache:
    """`<folder>/<ab>/<sha1>.jpg` per (path, mtime, size); made at most once per file version."""

    def __init__(self, folder: Path, size: int = THUMB_SIZE) -> None:
        self.folder = Path(folder)
        self.size = size

    def path_for(self, f: FileStat) -> Path:
        key = hashlib.sha1(f"{f.path}\0{f.mtime_ns}\0{f.size}\0{self.size}".encode("utf-8", "surrogateescape"))
        digest = key.hexdigest()
        return self.folder / digest[:2] / f"{digest}.jpg"

    def _make(self, f: FileStat) -> Path | None:
        dst = self.path_for(f)
        if dst.exists():
            return dst
        try:
            with Image.open(f.path) as img:
                img.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale
                img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
                if img.mode in ("RGBA", "LA", "P"):
                    rgba = img.convert("RGBA")
                    thumb = Image.new("RGB", rgba.size, (128, 128, 128))
                    thumb.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    thumb = img.convert("RGB")
            dst.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-", suffix=".jpg")
            os.close(fd)
            try:
                thumb.save(tmp, format="JPEG", quality=THUMB_QUALITY)
                os.replace(tmp, dst)  # two makers of one thumbnail never leave a half-written file
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return dst
        except Exception as e:  # noqa: BLE001 - an unreadable image gets no thumbnail, the rest do
            log.warning("no thumbnail for %s: %s", f.path, e)
            return None

    def ensure(self, files: list[FileStat]) -> list[Path | None]:
        """Thumbnails for these files (None where the image cannot be read), the missing ones made
        in a thread pool."""
        missing = [f for f in files if not self.path_for(f).exists()]
        if missing:
            with ThreadPoolExecutor(workers(), thread_name_prefix="thumbs") as pool:
                list(pool.map(self._make, missing))
        return [p if p.exists() else None for p in (self.path_for(f) for f in files)]

    def ensure_one(self, f: FileStat) -> Path | None:
        return self._make(f)

    def drop(self, f: FileStat) -> None:
        self.path_for(f).unlink(missing_ok=True)

    def prune(self, keep: Iterable[FileStat]) -> int:
        """Remove thumbnails of file versions not in `keep` (files changed or deleted outside the
        browser); returns how many."""
        wanted = {self.path_for(f).name for f in keep}
        gone = 0
        for thumb in self.folder.glob("*/*.jpg"):
            if thumb.name not in wanted:
                thumb.unlink(missing_ok=True)
                gone += 1
        return gone
