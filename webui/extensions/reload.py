"""Reloading extensions inside the running process (A1111's "Apply and restart UI").

Unload: `script_unloaded` callbacks run, every callback, script and option an extension registered
goes, and the per-extension load records are cleared. Load: the folder is read again and every
enabled extension's scripts are imported afresh (install.py only where its stamp says so). The
composition root then builds a new API + UI app from the same services and swaps it in (see
`webui.app.AppReloader`), so the model, the queue and running jobs are untouched.

What a process restart still does that this does not: flags an extension adds in `preload.py` are
parsed once, at launch.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.extensions.manager import ExtensionManager
from webui.extensions.startup import fire, load_extensions

log = logging.getLogger(__name__)


@dataclass
class ReloadReport:
    loaded: list[str] = field(default_factory=list)      # enabled extensions loaded again
    failed: list[str] = field(default_factory=list)      # ... of which some recorded errors
    needs_restart: list[str] = field(default_factory=list)  # newly enabled ones with a preload.py

    def text(self) -> str:
        parts = [f"Reloaded scripts and UI: {len(self.loaded)} extension(s) loaded"
                 + (f" ({', '.join(self.loaded)})" if self.loaded else "") + "."]
        if self.failed:
            parts.append(f"With errors (see Load errors): {', '.join(self.failed)}.")
        if self.needs_restart:
            parts.append("Restart the server for the command-line flags of: " + ", ".join(self.needs_restart) + ".")
        return " ".join(parts)


def unload_extensions(svc: Any) -> None:
    """Take back everything loaded extensions registered with the running services."""
    manager: ExtensionManager | None = getattr(svc, "extensions", None)
    fire("before_reload")
    try:
        from webui.extensions.compat import binding
    except ImportError:
        binding = None  # type: ignore[assignment]
    if binding is not None and binding.is_bound():
        binding.unload()  # script_unloaded callbacks, then every callback registration
        st = binding.state()
        st.option_labels.clear()
        st.onchange_keys.clear()
        st.paste_fields.clear()
        st.param_bindings.clear()
    catalog = svc.pipeline.scripts
    for runner in (catalog.txt2img, catalog.img2img):
        runner.remove_where(lambda s: getattr(s, "extension", None) is not None)
    svc.settings.remove_listeners(lambda fn: getattr(fn, "_from_extension", False))
    base = getattr(manager, "base_option_keys", None) if manager is not None else None
    if base is not None:
        for key in [k for k in svc.settings.options if k not in base]:
            svc.settings.unregister_option(key)
    if manager is not None:
        _forget_modules([e.path for e in manager.extensions])
        manager.extensions = []  # fresh records: errors, scripts and assets of the next load only


def _forget_modules(roots: list[Path]) -> None:
    """Modules imported from inside an extension (its own packages, `scripts.helper`) are imported
    afresh on the next load, so an updated extension runs its new code."""
    resolved = [r.resolve() for r in roots]
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        try:
            path = Path(file).resolve()
        except (OSError, ValueError):
            continue
        if any(path.is_relative_to(r) for r in resolved):
            del sys.modules[name]


def reload_extensions(svc: Any) -> ReloadReport:
    """Unload, then load every enabled extension again; says what happened."""
    manager: ExtensionManager | None = getattr(svc, "extensions", None)
    before = {e.name for e in manager.enabled()} if manager is not None else set()
    unload_extensions(svc)
    manager = load_extensions(svc)
    report = ReloadReport()
    ran = getattr(svc.args, "_preloaded_extensions", None)
    preloaded = set(before if ran is None else ran)
    for ext in manager.enabled():
        report.loaded.append(ext.name)
        if ext.errors:
            report.failed.append(ext.name)
        if (ext.path / "preload.py").is_file() and ext.name not in preloaded:
            report.needs_restart.append(ext.name)
    log.info("%s", report.text())
    return report
