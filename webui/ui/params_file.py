"""A1111's params.txt: the last UI generation's infotext, which ↙️ pastes when the prompt box is empty.

Without accounts there is one file, `<data>/params.txt` (A1111's place). With accounts each account
has its own, `<data>/params/<account>.txt`, so one user's ↙️ never pastes another user's prompt.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from webui.serving.caller import Caller

log = logging.getLogger(__name__)


def params_path(data_dir: Path, caller: Caller) -> Path:
    if not caller.accounts:
        return data_dir / "params.txt"
    # a file name from any account name: its safe characters, plus a hash so two names never share one
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", caller.owner).strip("._")[:40] or "user"
    digest = hashlib.sha256(caller.owner.encode("utf-8")).hexdigest()[:8]
    return data_dir / "params" / f"{safe}-{digest}.txt"


def save_params(data_dir: Path, caller: Caller, infotext: str) -> None:
    path = params_path(data_dir, caller)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(infotext, encoding="utf-8")
    except OSError as e:  # a read-only data dir must not fail the generation that just worked
        log.warning("could not write %s: %s", path, e)


def load_params(data_dir: Path, caller: Caller) -> str:
    path = params_path(data_dir, caller)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
