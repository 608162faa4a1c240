"""One small cache type for everything read from disk or computed and kept for reuse.

An LRU bounded by bytes (each entry measured from the tensors it holds) and, where a count is the
natural limit, by entries.  Entries made from a file are keyed by its path and remembered with the
file's stamp (mtime, size): a file replaced on disk is read again, never served stale.  Thread-safe;
a value is loaded outside the lock, so a slow read does not stop others from using the cache.
A server runs for weeks: without a bound every distinct LoRA, VAE or prompt ever used would stay.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Hashable, TypeVar

import torch

from webui.hashes import file_stamp

log = logging.getLogger(__name__)

V = TypeVar("V")
MB = 1024 * 1024


def tensor_bytes(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by the tensors in ``value``: tensors, modules (parameters and buffers), and any
    nesting of dicts, lists, tuples and objects with a ``__dict__`` (dataclasses).  A tensor reached
    twice, or a view of one already counted, is counted once."""
    seen = _seen if _seen is not None else set()

    def walk(v: Any) -> int:
        if isinstance(v, torch.Tensor):
            storage = v.untyped_storage()
            if storage.data_ptr() in seen:
                return 0
            seen.add(storage.data_ptr())
            return storage.nbytes()
        if id(v) in seen:
            return 0
        if isinstance(v, torch.nn.Module):
            seen.add(id(v))
            return sum(walk(t) for t in v.state_dict(keep_vars=True).values())
        if isinstance(v, dict):
            seen.add(id(v))
            return sum(walk(x) for x in v.values())
        if isinstance(v, (list, tuple, set)):
            seen.add(id(v))
            return sum(walk(x) for x in v)
        if hasattr(v, "__dict__") and not isinstance(v, type):
            seen.add(id(v))
            return sum(walk(x) for x in vars(v).values())
        return 0

    return walk(value)


@dataclass(frozen=True)
class CacheStats:
    name: str
    entries: int
    bytes: int
    max_bytes: int | None
    max_entries: int | None
    hits: int
    misses: int
    evictions: int


@dataclass
class _Entry(Generic[V]):
    value: V
    size: int
    stamp: tuple[int, int] | None


class BoundedCache(Generic[V]):
    """LRU limited to ``max_bytes`` (None: no byte bound) and ``max_entries`` (None: no count bound).

    ``on_evict(value)`` runs for every value that leaves the cache (evicted, replaced, cleared), e.g.
    to tell the memory manager a model's weights can go.  A value larger than the whole byte bound is
    returned to its caller but not kept."""

    def __init__(self, name: str, max_bytes: int | None, max_entries: int | None = None, *,
                 size_of: Callable[[Any], int] = tensor_bytes,
                 on_evict: Callable[[V], None] | None = None) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._size_of = size_of
        self._on_evict = on_evict
        self._items: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self.hits = self.misses = self.evictions = 0

    # ---- files ----
    def get_or_load(self, path: Path, loader: Callable[[Path], V], extra: Hashable = None) -> V:
        """The value ``loader(path)`` made from this version of the file, loading it when the file is
        new or changed.  ``extra`` separates values made from one file in different ways (a dtype)."""
        path = Path(path)
        key = (str(path), extra)
        stamp = file_stamp(path)
        with self._lock:
            entry = self._items.get(key)
            if entry is not None and entry.stamp == stamp:
                self._items.move_to_end(key)
                self.hits += 1
                return entry.value
        value = loader(path)
        self._store(key, value, stamp)
        return value

    # ---- any key ----
    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry.value

    def put(self, key: Hashable, value: V) -> None:
        self._store(key, value, None, count_miss=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def values(self) -> list[V]:
        with self._lock:
            return [e.value for e in self._items.values()]

    def discard(self, key: Hashable) -> None:
        with self._lock:
            entry = self._items.pop(key, None)
            if entry is not None:
                self._bytes -= entry.size
        if entry is not None:
            self._dropped([entry.value])

    def clear(self) -> None:
        with self._lock:
            gone = [e.value for e in self._items.values()]
            self._items.clear()
            self._bytes = 0
        self._dropped(gone)

    def set_limits(self, max_bytes: int | None = None, max_entries: int | None = None) -> None:
        """New bounds (None leaves one unchanged); evicts at once what no longer fits."""
        with self._lock:
            if max_bytes is not None:
                self.max_bytes = max(0, int(max_bytes))
            if max_entries is not None:
                self.max_entries = max(0, int(max_entries))
            gone = self._evict()
        self._dropped(gone)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.name, len(self._items), self._bytes, self.max_bytes, self.max_entries,
                              self.hits, self.misses, self.evictions)

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    # ---- inside ----
    def _store(self, key: Hashable, value: V, stamp: tuple[int, int] | None, count_miss: bool = True) -> None:
        size = int(self._size_of(value))
        gone: list[V] = []
        with self._lock:
            if count_miss:
                self.misses += 1
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.size
                if old.value is not value:
                    gone.append(old.value)
            if self.max_bytes is not None and size > self.max_bytes or self.max_entries == 0:
                log.debug("%s cache: %s (%.1f MB) is larger than the bound; not kept", self.name, key, size / MB)
            else:
                self._items[key] = _Entry(value, size, stamp)
                self._bytes += size
                gone += self._evict()
        self._dropped(gone)

    def _evict(self) -> list[V]:
        gone: list[V] = []
        while self._items and ((self.max_bytes is not None and self._bytes > self.max_bytes) or
                               (self.max_entries is not None and len(self._items) > self.max_entries)):
            key, entry = self._items.popitem(last=False)
            self._bytes -= entry.size
            self.evictions += 1
            gone.append(entry.value)
            log.debug("%s cache: evicted %s (%.1f MB); %d entries, %.1f MB kept", self.name, key,
                      entry.size / MB, len(self._items), self._bytes / MB)
        return gone

    def _dropped(self, values: list[V]) -> None:
        if self._on_evict is None:
            return
        for v in values:
            try:
                self._on_evict(v)
            except Exception:  # noqa: BLE001 - a failing release must not break the caller's load
                log.exception("%s cache: releasing an evicted entry failed", self.name)
