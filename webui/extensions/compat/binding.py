"""The live state behind A1111's `modules.*` names: the one place the compatibility layer keeps
module-global state.

A1111's modules are module-global by nature (`shared.opts`, `script_callbacks.on_*`,
`scripts.scripts_data`), and extensions import them as such. Our app has no globals: one
`Services` object is built by the composition root and passed around. This module is where the two
meet, and it is the compat layer's ONLY global (`_state`): the extension loader calls
`bind(services, manager)` once before any extension imports, and every `modules.*` function reads
the live services through `current()`. Nothing else in `webui/` reads this module's state, and
our own code never imports `modules`.

What the loader and the UI call here:

* `bind(services, manager)` — first, before preload/scripts import `modules.*`.
* `set_current_extension(name, basedir)` (or the `importing(name, basedir)` context manager) around
  each extension's files: callbacks registered meanwhile are recorded as that extension's, and
  `modules.scripts.basedir()` answers `basedir`. `set_current_extension(None, None)` afterwards.
  `set_current_basedir(path)` sets the directory only.
* `callbacks_for(kind)` / `fire(kind, *args, **kwargs)` for the callbacks fired outside a job
  (`APP_KINDS`: app_started, ui_tabs, ui_settings, before_component, ...): `fire` calls each one,
  logs a failure with the extension's name and traceback, records it on that extension (the
  Extensions tab shows it), and returns `[(entry, result), ...]` of those that returned.
* `add_script_data(script_class, path, basedir, module)` for every Script class imported
  (A1111's `scripts.scripts_data`, which some extensions search).
* `unload()` before scripts are imported again ("Apply and restart UI"): fires `script_unloaded`,
  then forgets every registered callback (also those put into `Pipeline.callbacks`) and
  `scripts_data`.
* For the UI: `state().option_labels` (A1111's OptionInfo of each extension option: gradio
  component, component_args, refresh), `state().paste_fields` and `state().param_bindings`
  (`infotext_utils.add_paste_fields` / `register_paste_params_button`).

Callbacks of the kinds the pipeline fires (`webui.processing.callbacks.KINDS`: cfg_denoiser,
cfg_denoised, cfg_after_cfg, before_image_saved, image_saved, image_grid, model_loaded,
infotext_pasted) go into the bound `Pipeline.callbacks` under the label "<extension>: <name>", so a
failing one is named in the job's warnings. `bind` makes model loads fire `model_loaded` (nothing
else in the app does yet); `infotext_pasted` is fired by the UI with
`pipeline.callbacks.run("infotext_pasted", InfotextPastedParams(text, params))`.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import traceback
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from webui.processing.callbacks import KINDS as PIPELINE_KINDS

if TYPE_CHECKING:
    from webui.extensions.manager import ExtensionManager
    from webui.services.container import Services

log = logging.getLogger(__name__)

COMPAT_DIR = Path(__file__).resolve().parent

# callbacks fired outside a job, by the loader, the app or the UI (A1111's names without "on_")
APP_KINDS: tuple[str, ...] = ("app_started", "before_reload", "ui_tabs", "ui_train_tabs", "ui_settings",
                              "before_component", "after_component", "script_unloaded", "before_ui",
                              "before_token_counter")
ALL_KINDS: tuple[str, ...] = tuple(PIPELINE_KINDS) + APP_KINDS


# A1111's `scripts.scripts_data` entries (what extensions search to find e.g. another script's module)
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


class NotBoundError(RuntimeError):
    """A `modules.*` name that needs the app was used before the loader called `bind()`."""


@dataclass
class InfotextPastedParams:
    """What the UI hands to `Pipeline.callbacks.run("infotext_pasted", ...)`: the pasted text and the
    parsed fields (A1111 calls `fn(infotext, params)`; extensions may edit `params`)."""
    infotext: str
    params: dict[str, Any]


@dataclass
class CallbackEntry:
    """One registered callback: which kind, the extension's function, A1111's name, and who added it."""
    kind: str
    fn: Callable[..., Any]
    name: str
    extension: str | None
    script: str | None                              # the file that registered it
    registered: Callable[..., Any] | None = None    # what went into Pipeline.callbacks (pipeline kinds)

    a1111_name: str = ""                             # "<ext>/<file>/<category>[/<name>]" (metadata.ini ordering)

    @property
    def label(self) -> str:
        return f"{self.extension}: {self.name}" if self.extension else self.name


@dataclass
class CompatState:
    """Everything the compat modules share; replaced as a whole by `bind()` for another app."""
    services: "Services | None" = None
    manager: "ExtensionManager | None" = None
    entries: list[CallbackEntry] = field(default_factory=list)
    extension: str | None = None      # set by the loader while an extension's files run
    basedir: Path | None = None
    scripts_data: list[Any] = field(default_factory=list)     # modules.scripts.scripts_data
    option_labels: dict[str, Any] = field(default_factory=dict)  # A1111 OptionInfo of each option added
    onchange_keys: set[str] = field(default_factory=set)  # options whose A1111 onchange is wired
    paste_fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # infotext_utils.paste_fields
    param_bindings: list[Any] = field(default_factory=list)  # infotext_utils.registered_param_bindings


_lock = threading.RLock()
_state = CompatState()  # the compat layer's only global


# ---- binding ----
def bind(services: "Services", manager: "ExtensionManager | None" = None) -> None:
    """Point every `modules.*` name at `services` (and the extension `manager`). Binding the same
    services again keeps what was registered; binding other services starts afresh."""
    global _state
    with _lock:
        if _state.services is services:
            _state.manager = manager or _state.manager
        else:
            _state = CompatState(services=services, manager=manager or getattr(services, "extensions", None))
        _fire_model_loaded_on_load(services)


def unbind() -> None:
    """Forget the bound services and every registration (tests; an app shutting down)."""
    global _state
    with _lock:
        services = _state.services
        if services is not None:
            for e in _state.entries:
                if e.registered is not None:
                    services.pipeline.callbacks.remove(e.registered)
            services.models.listeners[:] = [fn for fn in services.models.listeners
                                            if not getattr(fn, "_compat_model_loaded", False)]
        _state = CompatState()


def _fire_model_loaded_on_load(services: "Services") -> None:
    models = services.models
    if any(getattr(fn, "_compat_model_loaded", False) for fn in models.listeners):
        return
    pipeline = services.pipeline

    def on_load(loaded: Any) -> None:
        pipeline.callbacks.run("model_loaded", loaded)

    on_load._compat_model_loaded = True  # type: ignore[attr-defined]
    models.listeners.append(on_load)


def current() -> "Services":
    """The bound services; raises NotBoundError before `bind()`."""
    services = _state.services
    if services is None:
        raise NotBoundError("A1111 compatibility modules used before the app bound them: the extension loader "
                            "calls webui.extensions.compat.binding.bind(services, manager) first")
    return services


def is_bound() -> bool:
    return _state.services is not None


def state() -> CompatState:
    return _state


def manager() -> "ExtensionManager | None":
    return _state.manager


# ---- which extension is running ----
def set_current_extension(name: str | None, basedir: str | Path | None = None) -> None:
    """The loader names the extension whose files run now (None when done)."""
    with _lock:
        _state.extension = name
        _state.basedir = Path(basedir) if basedir else None


def set_current_basedir(path: str | Path | None) -> None:
    """What `modules.scripts.basedir()` answers while a script file imports (None: found from the caller)."""
    with _lock:
        _state.basedir = Path(path) if path else None


@contextlib.contextmanager
def importing(name: str | None, basedir: str | Path | None) -> Iterator[None]:
    previous = (_state.extension, _state.basedir)
    set_current_extension(name, basedir)
    try:
        yield
    finally:
        _state.extension, _state.basedir = previous


def caller_file() -> str | None:
    """The file of the nearest caller outside this compat package (and outside importlib)."""
    frame = sys._getframe(1)
    compat = str(COMPAT_DIR)
    while frame is not None:
        fn = frame.f_code.co_filename
        if not fn.startswith(compat) and not fn.startswith("<frozen"):
            return fn
        frame = frame.f_back
    return None


def extension_of_file(filename: str | None) -> tuple[str, Path] | None:
    """(extension name, root) of the extension a file belongs to, or None."""
    if not filename:
        return None
    mgr = _state.manager
    try:
        path = Path(filename).resolve()
    except OSError:
        return None
    roots: list[tuple[str, Path]] = [(e.name, Path(e.path)) for e in (mgr.extensions if mgr else [])]
    for name, root in roots:
        if path.is_relative_to(root.resolve()):
            return name, root
    if mgr is not None:
        base = Path(mgr.extensions_dir).resolve()
        if path.is_relative_to(base) and path != base:
            first = path.relative_to(base).parts[0]
            return first, base / first
    return None


def current_extension(filename: str | None = None) -> str | None:
    """The extension the loader says is running, else the one the calling file belongs to."""
    if _state.extension:
        return _state.extension
    found = extension_of_file(filename if filename is not None else caller_file())
    return found[0] if found else None


def current_basedir() -> Path | None:
    """The directory the loader set, else the root of the calling file's extension (None if neither)."""
    if _state.basedir is not None:
        return _state.basedir
    found = extension_of_file(caller_file())
    return found[1] if found else None


def add_script_data(script_class: type, path: str | Path, basedir: str | Path, module: Any) -> None:
    """Record an imported Script class in `modules.scripts.scripts_data`."""
    with _lock:
        _state.scripts_data.append(ScriptClassData(script_class, str(path), str(basedir), module))


# ---- callbacks ----
def add_callback(kind: str, fn: Callable[..., Any], name: str | None = None,
                 adapter: Callable[..., Any] | None = None) -> CallbackEntry:
    """Register `fn` for `kind` on behalf of the calling extension. Pipeline kinds go into the bound
    `Pipeline.callbacks` (through `adapter` when A1111's call differs from `fn(params)`)."""
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown callback kind {kind!r}")
    if not callable(fn):
        raise TypeError(f"on_{kind}: {fn!r} is not callable")
    script = caller_file()
    entry = CallbackEntry(kind, fn, name or f"{Path(script).name if script else '?'}/"
                                            f"{getattr(fn, '__name__', type(fn).__name__)}",
                          current_extension(script), script)
    base = f"{(entry.extension or 'base').lower()}/{Path(script).name if script else 'unknown file'}/{kind}"
    base += f"/{name}" if name else ""
    with _lock:
        taken = {e.a1111_name for e in _state.entries}
        entry.a1111_name = base
        for i in range(1, 1000):  # A1111 numbers repeated names
            if entry.a1111_name not in taken:
                break
            entry.a1111_name = f"{base}-{i}"
        if kind in PIPELINE_KINDS:
            entry.registered = adapter or fn
            current().pipeline.callbacks.add(kind, entry.registered, entry.label)
        _state.entries.append(entry)
    return entry


def callbacks_for(kind: str) -> list[CallbackEntry]:
    """The callbacks registered for `kind`, in registration order."""
    return [e for e in list(_state.entries) if e.kind == kind]


def fire(kind: str, *args: Any, **kwargs: Any) -> list[tuple[CallbackEntry, Any]]:
    """Call every callback of `kind` with the arguments; a raising one is logged and recorded on its
    extension, the others still run. Returns (entry, result) of those that returned."""
    out: list[tuple[CallbackEntry, Any]] = []
    for entry in callbacks_for(kind):
        try:
            out.append((entry, entry.fn(*args, **kwargs)))
        except Exception:  # noqa: BLE001 - a broken extension must not stop the app
            report_error(entry.extension, f"callback {entry.name} ({kind}) failed")
    return out


def remove_callbacks(predicate: Callable[[CallbackEntry], bool]) -> int:
    """Forget the callbacks `predicate` selects (also from Pipeline.callbacks); returns how many."""
    with _lock:
        gone = [e for e in _state.entries if predicate(e)]
        _state.entries = [e for e in _state.entries if not predicate(e)]
        services = _state.services
        for e in gone:
            if e.registered is not None and services is not None:
                services.pipeline.callbacks.remove(e.registered)
    return len(gone)


def unload() -> None:
    """Before scripts are imported again: `script_unloaded` callbacks, then every registration goes."""
    fire("script_unloaded")
    remove_callbacks(lambda e: True)
    _state.scripts_data.clear()


def report_error(extension: str | None, what: str) -> None:
    """Log the current exception with the extension's name and keep it on the extension."""
    tb = traceback.format_exc()
    log.error("extension %s: %s\n%s", extension or "?", what, tb)
    mgr = _state.manager
    ext = mgr.get(extension) if mgr is not None and extension else None
    if ext is not None:
        ext.errors.append(f"{what}\n{tb}")


def apply_callback_order(instructions: dict[str, dict[str, list[str]]]) -> None:
    """Order each kind's callbacks as extensions' metadata.ini sections `[callbacks/<name>]` say
    (`Before=` / `After=` other callbacks' A1111 names); a stable topological sort, as A1111's
    sort_callbacks. Applied to the app-time list and to Pipeline.callbacks."""
    if not instructions:
        return
    with _lock:
        kinds = list(dict.fromkeys(e.kind for e in _state.entries))
        for kind in kinds:
            items = [e for e in _state.entries if e.kind == kind]
            names = {e.a1111_name.lower(): e for e in items}  # matched case-insensitively
            after: dict[str, set[str]] = {e.a1111_name.lower(): set() for e in items}
            for name, rules in instructions.items():
                name = name.lower()
                if name not in names:
                    continue
                for other in (x.lower() for x in rules.get("After", [])):
                    if other in names:
                        after[name].add(other)
                for other in (x.lower() for x in rules.get("Before", [])):
                    if other in names:
                        after[other].add(name)
            ordered: list[CallbackEntry] = []
            done: set[str] = set()
            pending = list(items)
            while pending:
                ready = next((e for e in pending if after[e.a1111_name.lower()] <= done), None)
                if ready is None:  # a cycle: keep the rest in registration order
                    log.warning("callback order instructions form a cycle for %s; left as registered", kind)
                    ready = pending[0]
                ordered.append(ready)
                done.add(ready.a1111_name.lower())
                pending.remove(ready)
            others = [e for e in _state.entries if e.kind != kind]
            _state.entries = others + ordered
            if kind in PIPELINE_KINDS and _state.services is not None:
                _state.services.pipeline.callbacks.reorder(kind, [e.registered for e in ordered if e.registered])
