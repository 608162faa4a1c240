"""File-mode helpers: files we write get the mode a plain `open()` would give them (0666 minus the umask).

`tempfile.mkstemp` creates 0600 files so that temporary data stays private; once such a file is renamed
into place (config.json, styles.csv, images) it would be unreadable to other users and to a web server
serving the outputs folder, so the atomic writers call `normal_mode` before publishing.
"""
from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask is process-wide and
    setting it, even briefly, races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: set-and-restore is the only portable way to read it
    os.umask(mask)
    return mask


def normal_mode(path: str | os.PathLike[str] | int) -> None:
    """Give a file (path or open descriptor) the mode `open(path, "w")` would have created it with."""
    mode = 0o666 & ~current_umask()
    if isinstance(path, int):
        os.fchmod(path, mode)
    else:
        os.chmod(Path(path), mode)
