"""A small LRU of loaded image models (upscalers, face restorers) keyed by file and its stamp; a model
dropped from it is also forgotten by the memory manager, so its weights can go."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable


class ModelLRU:
    def __init__(self, size: int, memory: Any = None) -> None:
        self.size = max(1, size)
        self.memory = memory
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        return self._items.get(key)

    def put(self, key: Hashable, desc: Any) -> None:
        """Remember ``desc`` as the most recently used; beyond the size the oldest is dropped."""
        self._items[key] = desc
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._drop(self._items.popitem(last=False)[1])

    def clear(self) -> None:
        for desc in self._items.values():
            self._drop(desc)
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, desc: Any) -> None:
        if self.memory is not None and (part := self.memory.part_of(desc.model)) is not None:
            self.memory.forget(part)
