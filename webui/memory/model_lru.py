"""A small LRU of loaded image models (upscalers, face restorers) keyed by file and its stamp; a model
dropped from it is also forgotten by the memory manager, so its weights can go.  The shared
``BoundedCache`` bounded by a count (image models are few and large: a count is the natural limit)."""
from __future__ import annotations

from typing import Any

from webui.memory.bounded_cache import BoundedCache


class ModelLRU(BoundedCache[Any]):
    def __init__(self, size: int, memory: Any = None, name: str = "image model") -> None:
        self.memory = memory
        super().__init__(name, None, max(1, size), on_evict=self._drop)

    @property
    def size(self) -> int:
        return self.max_entries or 1

    def _drop(self, desc: Any) -> None:
        if any(d.model is desc.model for d in self.values()):
            return  # replaced by a description of the same model (moved or cast): it is still in use
        if self.memory is not None and (part := self.memory.part_of(desc.model)) is not None:
            self.memory.forget(part)
