"""Who owns each embedding, hypernetwork and LoRA name when the server has accounts.

A user who is not an admin may create and train only under a name that is free or already theirs;
the first account to create or train under a free name owns it. Files that were there before anyone
claimed them belong to the admins. The owners are kept in `<data-dir>/training-owners.json`
(`{"embedding": {"name": "account"}, ...}`). Without accounts nothing is checked or written (A1111).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from webui.serving.caller import Caller

log = logging.getLogger(__name__)

KINDS = ("embedding", "hypernetwork", "lora")


class NotOwnerError(PermissionError):
    """A name another account owns (HTTP 403 over the API)."""


class TrainOwners:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def owner(self, kind: str, name: str) -> str | None:
        with self._lock:
            return (self._read() or {}).get(kind, {}).get(name)

    def claim(self, caller: Caller | None, kind: str, name: str, exists: bool) -> None:
        """Refuse (NotOwnerError) a name the caller may not write under; otherwise record the caller
        as its owner when it has none yet. `exists`: a file of that name is there already."""
        if caller is None or not caller.accounts:
            return
        with self._lock:
            table = self._read()
            if table is None:  # nobody's names are known: only admins write until it is fixed
                if caller.admin:
                    return
                raise NotOwnerError(f"{self.path.name} cannot be read; an admin must fix or remove it")
            owner = table.get(kind, {}).get(name)
            if not caller.admin and owner != caller.owner and (owner is not None or exists):
                raise NotOwnerError(f"the {kind} '{name}' belongs to {owner or 'the admins'}; "
                                    "choose a name of your own")
            if owner is None:
                table.setdefault(kind, {})[name] = caller.owner
                self._write(table)

    def _read(self) -> dict[str, dict[str, str]] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {k: {str(n): str(o) for n, o in v.items()} for k, v in data.items() if isinstance(v, dict)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as e:
            log.error("%s unreadable: %s", self.path, e)
            return None

    def _write(self, table: dict[str, dict[str, str]]) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(table, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)  # never a half-written ledger
