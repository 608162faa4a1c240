"""File hashes used in titles and infotext, plus a small on-disk hash cache.

Why: hashing a multi-GB checkpoint takes seconds, so results are cached in a
JSON file keyed by absolute path and invalidated when mtime or size change.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from webui.fsutil import normal_mode

CHUNK = 1024 * 1024  # 1 MiB reads keep memory flat on multi-GB files


def sha256_file(path: Path | str, chunk_size: int = CHUNK) -> str:
    """Full-file sha256 hex digest (A1111 `Model hash` = first 10 hex chars)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def addnet_hash_safetensors(path: Path | str, chunk_size: int = CHUNK) -> str:
    """sha256 of the tensor payload only (bytes after 8 + header length).

    Why: metadata edits must not change a LoRA's identity; `Lora hashes`
    infotext uses the first 12 hex chars of this digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        header = f.read(8)
        if len(header) < 8:
            raise ValueError(f"{path}: too short to be a safetensors file")
        f.seek(8 + int.from_bytes(header, "little"))
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def legacy_model_hash(path: Path | str) -> str:
    """Old A1111 checkpoint hash: sha256 of 64 KiB at offset 1 MiB, 8 hex chars."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(0x100000)
        h.update(f.read(0x10000))
    return h.hexdigest()[:8]


def file_stamp(path: Path) -> tuple[int, int]:
    """(mtime_ns, size) identifying a file version; folders aggregate their files."""
    if path.is_dir():
        mtime, size = int(path.stat().st_mtime_ns), 0
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                mtime, size = max(mtime, st.st_mtime_ns), size + st.st_size
        return mtime, size
    st = path.stat()
    return int(st.st_mtime_ns), int(st.st_size)


def sha256_folder(path: Path) -> str:
    """Deterministic hash of a folder model: relative names plus contents, sorted."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode("utf-8") + b"\0")
        h.update(sha256_file(p).encode("ascii"))
    return h.hexdigest()


HASHERS: dict[str, Callable[[Path], str]] = {
    "sha256": lambda p: sha256_folder(p) if p.is_dir() else sha256_file(p),
    "addnet": addnet_hash_safetensors,
}


class HashCache:
    """JSON cache `{kind: {abs_path: {"mtime_ns", "size", "sha256"}}}`.

    Writes are atomic (temp file + os.replace) and merge with what is on disk,
    so several registries (checkpoints, LoRA, VAE) can share one file.
    """

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = Path(cache_file)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict]] = {}
        self._data_stamp: tuple[int, int, int] | None = None

    def _load(self) -> dict[str, dict[str, dict]]:
        """Parsed cache file; re-read only when the file changed (listing calls this per model)."""
        try:
            st = self.cache_file.stat()
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)  # os.replace gives a new inode
        if stamp != self._data_stamp:
            try:
                data = json.loads(self.cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}  # corrupt cache just means "hash again"
            self._data = data if isinstance(data, dict) else {}
            self._data_stamp = stamp
        return self._data

    def lookup(self, path: Path, kind: str = "sha256") -> str | None:
        """Cached digest if the file's mtime and size still match, else None."""
        path = Path(path).absolute()
        entry = self._load().get(kind, {}).get(str(path))
        if not entry:
            return None
        try:
            mtime, size = file_stamp(path)
        except OSError:
            return None
        if entry.get("mtime_ns") != mtime or entry.get("size") != size:
            return None
        return entry.get("sha256")

    def store(self, path: Path, digest: str, kind: str = "sha256",
              stamp: tuple[int, int] | None = None) -> None:
        """Record a digest; pass the stamp taken *before* hashing to avoid races."""
        path = Path(path).absolute()
        mtime, size = stamp or file_stamp(path)
        with self._lock:
            data = json.loads(json.dumps(self._load()))  # private copy: merge with other writers' entries
            data.setdefault(kind, {})[str(path)] = {"mtime_ns": mtime, "size": size, "sha256": digest}
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_file.parent, prefix=".hashes-", suffix=".tmp")
            try:
                normal_mode(fd)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, self.cache_file)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def get_or_compute(self, path: Path, kind: str = "sha256") -> str:
        cached = self.lookup(path, kind)
        if cached:
            return cached
        stamp = file_stamp(Path(path))
        digest = HASHERS[kind](Path(path))
        self.store(path, digest, kind, stamp)
        return digest
