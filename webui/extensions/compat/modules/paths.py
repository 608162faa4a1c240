"""A1111's `modules.paths`: the same folders as `modules.paths_internal`."""
from __future__ import annotations

from typing import Any

from .paths_internal import NAMES, app_paths, modules_path  # noqa: F401



def __getattr__(name: str) -> Any:
    if name in NAMES:
        return app_paths()[name]
    raise AttributeError(f"module 'modules.paths' has no attribute {name!r}")

__all__ = [
    "NAMES", "app_paths", "modules_path"
]
