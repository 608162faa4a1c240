"""Which extensions there are, in which order, and which are enabled (A1111's rules).

Extensions are the folders of `<data-dir>/extensions/` (sorted by name, as A1111 lists them); a
folder's `metadata.ini` may name it (`[Extension] Name=`), require others (`Requires=a, b|c`) and
order its script files (`[scripts/<file>.py] Before=/After=`). Enable state: the option
`disabled_extensions` (folder names), the option `disable_all_extensions` ("none", "extra", "all")
and the flags `--disable-all-extensions` / `--disable-extra-extensions`. Extensions shipped with
the app would be "built-in" (none yet); every folder here is "extra".
"""
from __future__ import annotations

import configparser
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ExtensionMetadata:
    name: str | None = None                 # [Extension] Name=
    requires: list[str] = field(default_factory=list)  # each entry "a" or "a|b" (alternatives)
    script_order: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # "scripts/x.py" → Before/After
    # A1111's callback names ("<ext>/<file>/<category>[/<name>]") → Before/After
    callback_order: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    raw: configparser.ConfigParser | None = None

    @classmethod
    def read(cls, folder: Path) -> "ExtensionMetadata":
        path = folder / "metadata.ini"
        meta = cls()
        if not path.is_file():
            return meta
        cp = configparser.ConfigParser()
        try:
            cp.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as e:
            log.warning("extension %s: metadata.ini unreadable (%s); ignored", folder.name, e)
            return meta
        meta.raw = cp
        if cp.has_section("Extension"):
            meta.name = cp.get("Extension", "Name", fallback=None)
            meta.requires = _list(cp.get("Extension", "Requires", fallback=""))
        for section in cp.sections():
            if section.startswith("scripts/"):
                meta.script_order[section] = {k: _list(cp.get(section, k, fallback=""))
                                              for k in ("Requires", "Before", "After")}
            elif section.startswith("callbacks/"):
                meta.callback_order[section[len("callbacks/"):]] = {
                    k: _list(cp.get(section, k, fallback="")) for k in ("Before", "After")}
        return meta


def _list(text: str) -> list[str]:
    """A1111's list syntax: names separated by commas and/or spaces."""
    return [x for x in re.split(r"[,\s]+", text.strip()) if x]


@dataclass
class Extension:
    """One extension folder and what became of it (the Extensions tab and `/sdapi/v1/extensions` show it)."""
    name: str                      # the folder name (A1111's key for enable state)
    path: Path
    is_builtin: bool = False
    enabled: bool = True
    metadata: ExtensionMetadata = field(default_factory=ExtensionMetadata)
    # git checkout facts (filled by git.py; None for a plain folder)
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None  # unix time
    version: str = ""
    update_status: str = "unknown"  # "unknown" | "latest" | "behind" | "error: ..."
    # what loading did
    errors: list[str] = field(default_factory=list)  # each: what failed, then the traceback
    load_seconds: float = 0.0
    scripts: list[Any] = field(default_factory=list)  # Script instances it registered
    javascript: list[Path] = field(default_factory=list)
    stylesheet: Path | None = None

    @property
    def canonical_name(self) -> str:
        return (self.metadata.name or self.name).lower()

    def api_entry(self) -> dict[str, Any]:
        """A1111's `GET /sdapi/v1/extensions` item."""
        return {"name": self.name, "remote": self.remote or "", "branch": self.branch or "",
                "commit_hash": self.commit_hash or "", "version": self.version or "",
                "commit_date": self.commit_date or 0, "enabled": self.enabled}


def discover(extensions_dir: Path, *, disabled: list[str] | None = None, disable_all: str = "none") -> list[Extension]:
    """Every extension folder, sorted by name, with its enable state. ``disable_all``: "none",
    "extra" (only built-ins stay) or "all" (A1111's option and flags)."""
    if not extensions_dir.is_dir():
        return []
    off = set(disabled or [])
    out = []
    for folder in sorted(p for p in extensions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        ext = Extension(folder.name, folder.resolve(), metadata=ExtensionMetadata.read(folder))
        ext.enabled = folder.name not in off and disable_all not in ("all", "extra")
        out.append(ext)
    _check_requirements(out)
    return out


def _check_requirements(exts: list[Extension]) -> None:
    """An enabled extension whose `Requires` names none of the enabled ones is disabled, with the reason."""
    present = {e.canonical_name for e in exts if e.enabled} | {e.name.lower() for e in exts if e.enabled}
    for e in exts:
        if not e.enabled:
            continue
        for req in e.metadata.requires:
            options = [r.strip().lower() for r in req.split("|") if r.strip()]
            if options and not any(o in present for o in options):
                e.enabled = False
                e.errors.append(f"requires {req!r}, which is not installed or not enabled")
                log.warning("extension %s: requires %s; not loaded", e.name, req)
