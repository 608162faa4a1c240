"""A1111's `modules.hashes`: file hashes, cached on disk by path, size and mtime (the app's hash
cache, `<data-dir>/cache/hashes.json`, shared with the checkpoint list).

`sha256(filename, title, use_addnet_hash=False)`, `sha256_from_cache(filename, title,
use_addnet_hash=False)` (None when not cached), `calculate_sha256(filename)`,
`addnet_hash_safetensors(b)` (an open binary file, as A1111, or a path). `title` is accepted for
A1111's signature; the cache is keyed by the file itself.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

from webui import hashes as _hashes
from webui.extensions.compat import binding


def _cache() -> Any:
    return binding.current().registry.hash_cache


def calculate_sha256(filename: str | os.PathLike[str]) -> str:
    return _hashes.sha256_file(Path(filename))


def sha256_from_cache(filename: str | os.PathLike[str], title: str = "", use_addnet_hash: bool = False) -> str | None:
    return _cache().lookup(Path(filename), "addnet" if use_addnet_hash else "sha256")


def sha256(filename: str | os.PathLike[str], title: str = "", use_addnet_hash: bool = False) -> str:
    return _cache().get_or_compute(Path(filename), "addnet" if use_addnet_hash else "sha256")


def addnet_hash_safetensors(b: IO[bytes] | str | os.PathLike[str]) -> str:
    """sha256 of a safetensors file's tensor data (after the header), as kohya's sd-scripts compute it."""
    if isinstance(b, (str, os.PathLike)):
        return _hashes.addnet_hash_safetensors(Path(b))
    h = hashlib.sha256()
    b.seek(0)
    n = int.from_bytes(b.read(8), "little")
    b.seek(n + 8)
    for chunk in iter(lambda: b.read(1024 * 1024), b""):
        h.update(chunk)
    return h.hexdigest()

__all__ = [
    "addnet_hash_safetensors", "calculate_sha256", "sha256", "sha256_from_cache"
]
