"""Saving trained files whole: the extra-network lists read these folders at any time, so a crash or
a concurrent listing must never see a half-written embedding, hypernetwork or LoRA."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from webui.fsutil import normal_mode


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` into a hidden temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        normal_mode(tmp)  # safetensors/torch writers may leave 0600; trained files are normal files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
