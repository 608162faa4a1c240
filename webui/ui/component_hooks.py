"""A1111's component hooks for extensions: `on_before_component` / `on_after_component` callbacks
and scripts' `before_component` / `after_component` methods see every Gradio component as it is
created, with its keyword arguments (`elem_id="txt2img_width"`, ...), so an extension can read a
control or add its own next to it. Active only while the page is built, and only when an extension
asks for it."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


def _script_hooks(svc: Any, name: str) -> list[Callable[..., Any]]:
    out = []
    catalog = svc.pipeline.scripts
    for runner in (catalog.txt2img, catalog.img2img):
        for script in runner.scripts:
            fn = getattr(script, name, None)
            if callable(fn) and getattr(type(script), name, None) is not None \
                    and type(script).__module__ and not type(script).__module__.startswith("webui."):
                out.append(fn)
    return out


@contextlib.contextmanager
def component_hooks(svc: Any) -> Iterator[None]:
    try:
        from webui.extensions.compat import binding
        bound = binding.is_bound()
    except ImportError:
        bound = False
    before_scripts = _script_hooks(svc, "before_component")
    after_scripts = _script_hooks(svc, "after_component")
    has_callbacks = bound and (binding.callbacks_for("before_component") or binding.callbacks_for("after_component"))
    if not (before_scripts or after_scripts or has_callbacks):
        yield
        return
    from gradio.components.base import Component

    original = Component.__init__

    def call_all(hooks: list[Callable[..., Any]], kind: str, component: Any, kwargs: dict) -> None:
        for fn in hooks:
            try:
                fn(component, **kwargs)
            except Exception:  # noqa: BLE001 - an extension's hook must not break the page
                log.exception("a script's %s failed for %s", kind, kwargs.get("elem_id"))
        if has_callbacks:
            binding.fire(kind, component, **kwargs)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        call_all(before_scripts, "before_component", self, kwargs)
        original(self, *args, **kwargs)
        call_all(after_scripts, "after_component", self, kwargs)

    Component.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        Component.__init__ = original  # type: ignore[method-assign]
