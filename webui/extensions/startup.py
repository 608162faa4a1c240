"""Bringing the extensions up with the app: discover them, bind A1111's `modules.*` names to the
live services, and load every enabled one (install.py, scripts, assets), each timed and isolated."""
from __future__ import annotations

import logging
from typing import Any

from webui.extensions.loader import load_all
from webui.extensions.manager import ExtensionManager

log = logging.getLogger(__name__)


def load_extensions(svc: Any) -> ExtensionManager:
    manager = getattr(svc, "extensions", None)
    if manager is None:
        manager = ExtensionManager(svc.paths.data_dir / "extensions", svc.settings, svc.args)
        svc.extensions = manager
    if manager.base_option_keys is None:
        manager.base_option_keys = set(svc.settings.options)
    manager.refresh()
    for name, err in (getattr(svc.args, "_extension_preload_errors", None) or {}).items():
        ext = manager.get(name)
        if ext is not None and err not in ext.errors:
            ext.errors.append(err)
    enabled = manager.enabled()
    if not enabled:
        return manager
    try:
        from webui.extensions.compat.binding import bind
    except ImportError:
        log.warning("the A1111 compatibility modules are not available; extensions can use the native API only")
    else:
        bind(svc, manager)
    load_all(enabled, svc.pipeline.scripts, skip_install=bool(getattr(svc.args, "skip_install", False)),
             stamps_file=svc.paths.cache_dir / "extensions-installed.json")
    _order_callbacks(manager)
    fire("ui_settings")  # extensions' options exist from here on: /options, config.json, the Settings tab
    return manager


def fire(kind: str, *args: Any) -> list[Any]:
    """Run the extensions' callbacks of an app-time kind (A1111's script_callbacks); [] without any."""
    try:
        from webui.extensions.compat import binding
    except ImportError:
        return []
    if not binding.is_bound():
        return []
    return [result for _, result in binding.fire(kind, *args)]


def _order_callbacks(manager: ExtensionManager) -> None:
    """metadata.ini `[callbacks/<ext>/<file>/<category>[/<name>]]` Before/After (A1111); a section
    naming another extension's callback is refused, as A1111 does."""
    from webui.extensions.compat import binding
    instructions: dict[str, dict[str, list[str]]] = {}
    for ext in manager.enabled():
        for name, rules in ext.metadata.callback_order.items():
            if not name.lower().startswith(ext.canonical_name):
                ext.errors.append(f"metadata.ini: callback order section [callbacks/{name}] names another "
                                  f"extension's callback (it must start with {ext.canonical_name}/)")
                continue
            instructions[name.lower()] = {k: [x.lower() for x in v] for k, v in rules.items()}
    binding.apply_callback_order(instructions)
