"""Loading extensions as A1111 does: `preload.py` before the flags are parsed, `install.py` in a
subprocess once after install and whenever it (or requirements.txt) changes, then every
`scripts/*.py` imported with the extension's root first on `sys.path`, its Script classes
registered with the pipeline's script runners, its `javascript/` and `style.css` served in the page.

A broken extension never stops the app: whatever fails is logged with the extension's name and
the traceback, kept on the `Extension` (the Extensions tab shows it), and the rest load.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from webui.extensions.discovery import Extension, discover
from webui.processing.scripts import Script, ScriptCatalog

log = logging.getLogger(__name__)
COMPAT_DIR = Path(__file__).resolve().parent / "compat"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 900


def _record(ext: Extension, what: str) -> None:
    text = f"{what}\n{traceback.format_exc()}"
    ext.errors.append(text)
    log.error("extension %s: %s", ext.name, text)


def compat_on_path() -> None:
    """Make `import modules.*` (A1111's names) resolve to our compatibility package. Only
    extension code imports it; our own code never does."""
    p = str(COMPAT_DIR)
    if p not in sys.path:
        sys.path.insert(0, p)


class _ExtensionRoot:
    """While an extension's file runs, its root is first on sys.path (A1111), so `import mypackage`
    and `from scripts.helper import x` inside it work."""

    def __init__(self, ext: Extension) -> None:
        self.root = str(ext.path)

    def __enter__(self) -> None:
        sys.path.insert(0, self.root)
        # a previous extension's `scripts` namespace must not shadow this one's
        mod = sys.modules.get("scripts")
        if mod is not None and getattr(mod, "__file__", None) is None:
            del sys.modules["scripts"]

    def __exit__(self, *exc: Any) -> None:
        try:
            sys.path.remove(self.root)
        except ValueError:
            pass


def _set_context(ext: Extension | None) -> None:
    """Tell the compat layer which extension is running (callbacks and basedir() name it)."""
    try:
        from webui.extensions.compat import binding
    except ImportError:
        return
    setter = getattr(binding, "set_current_extension", None)
    if setter is not None:
        setter(ext.name if ext else None, ext.path if ext else None)


def _compat() -> Any:
    """The A1111 compatibility binding, when it is bound (extensions are loaded with the app)."""
    try:
        from webui.extensions.compat import binding
    except ImportError:
        return None
    return binding if binding.is_bound() else None


def _exec_file(ext: Extension, path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with _ExtensionRoot(ext):
        spec.loader.exec_module(module)
    return module


# ---- preload.py: flags before parsing ----
def run_preloads(parser: argparse.ArgumentParser, extensions_dir: Path, disabled: list[str],
                 disable_all: str, ran: list[str] | None = None) -> dict[str, str]:
    """Call each enabled extension's `preload(parser)` so flags it adds are accepted at launch.
    Returns {extension name: error text} for the ones that failed; `ran` collects the names of
    those whose preload.py ran (a later in-process reload knows which flags are missing)."""
    errors: dict[str, str] = {}
    compat_on_path()
    for ext in discover(extensions_dir, disabled=disabled, disable_all=disable_all):
        pre = ext.path / "preload.py"
        if not ext.enabled or not pre.is_file():
            continue
        if ran is not None:
            ran.append(ext.name)
        try:
            module = _exec_file(ext, pre, f"preload_{ext.name}")
            fn = getattr(module, "preload", None)
            if callable(fn):
                fn(parser)
        except BaseException:  # noqa: BLE001 - a broken preload.py must not stop the app
            errors[ext.name] = f"preload.py failed\n{traceback.format_exc()}"
            log.error("extension %s: preload.py failed:\n%s", ext.name, errors[ext.name])
    return errors


# ---- install.py: once, and again when it changes ----
def _install_stamp(ext: Extension) -> str:
    h = hashlib.sha256()
    for name in ("install.py", "requirements.txt"):
        f = ext.path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def run_install(ext: Extension, stamps_file: Path | None = None, *, force: bool = False) -> str | None:
    """Run the extension's install.py in a subprocess with the app's interpreter and A1111's `launch`
    helpers importable; skipped when it ran before with the same install.py/requirements.txt.
    Returns the error text, or None."""
    script = ext.path / "install.py"
    if not script.is_file():
        return None
    stamps: dict[str, str] = {}
    if stamps_file is not None and stamps_file.is_file():
        try:
            stamps = json.loads(stamps_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            stamps = {}
    stamp = _install_stamp(ext)
    if not force and stamps.get(str(ext.path)) == stamp:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(COMPAT_DIR), str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["WEBUI_EXTENSION_DIR"] = str(ext.path)
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, str(script)], cwd=ext.path, env=env, capture_output=True, text=True,
                           timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"install.py could not run: {e}"
    if r.returncode != 0:
        tail = (r.stdout[-2000:] + "\n" + r.stderr[-4000:]).strip()
        return f"install.py failed (exit code {r.returncode})\n{tail}"
    log.info("extension %s: install.py ran in %.1fs", ext.name, time.perf_counter() - t0)
    if stamps_file is not None:
        stamps[str(ext.path)] = stamp
        stamps_file.parent.mkdir(parents=True, exist_ok=True)
        stamps_file.write_text(json.dumps(stamps, indent=1), encoding="utf-8")
    return None


# ---- scripts/*.py ----
def script_files(ext: Extension) -> list[Path]:
    """The extension's script files, by name, then moved as its metadata.ini's Before/After say."""
    folder = ext.path / "scripts"
    files = sorted(folder.glob("*.py")) if folder.is_dir() else []
    order = ext.metadata.script_order
    if not order:
        return files
    names = [f"scripts/{f.name}" for f in files]
    for section, rules in order.items():
        if section not in names:
            continue
        for other in rules.get("After", []):
            key = other if other.startswith("scripts/") else f"scripts/{other}"
            if key in names and names.index(key) > names.index(section):
                names.remove(section)
                names.insert(names.index(key) + 1, section)
        for other in rules.get("Before", []):
            key = other if other.startswith("scripts/") else f"scripts/{other}"
            if key in names and names.index(key) < names.index(section):
                names.remove(section)
                names.insert(names.index(key), section)
    return [ext.path / n for n in names]


def _script_classes(module: ModuleType) -> Iterator[type]:
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, Script) and obj.__module__ == module.__name__ and "title" in _defined(obj):
            yield obj


def _defined(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("webui."):
            break
        names.update(vars(klass))
    return names


def load_scripts(ext: Extension, catalog: ScriptCatalog) -> None:
    """Import each script file and register its Script classes with both tabs' runners (each tab
    gets its own instance, as in A1111; `show(is_img2img)` decides where it appears)."""
    for path in script_files(ext):
        try:
            module = _exec_file(ext, path, path.name)
        except BaseException:  # noqa: BLE001
            _record(ext, f"scripts/{path.name} failed to import")
            continue
        for cls in _script_classes(module):
            compat = _compat()
            if compat is not None:
                compat.add_script_data(cls, path, ext.path, module)  # A1111's scripts.scripts_data
            for runner in (catalog.txt2img, catalog.img2img):
                try:
                    script = cls()
                    script.filename = str(path)
                    script.extension = ext.name  # type: ignore[attr-defined]
                    before = len(runner.scripts)
                    runner.add(script)
                    if len(runner.scripts) > before:
                        ext.scripts.append(script)
                except BaseException:  # noqa: BLE001
                    _record(ext, f"script {cls.__name__} in scripts/{path.name} could not be set up")


def load_assets(ext: Extension) -> None:
    js = ext.path / "javascript"
    ext.javascript = sorted([*js.glob("*.js"), *js.glob("*.mjs")]) if js.is_dir() else []
    css = ext.path / "style.css"
    ext.stylesheet = css if css.is_file() else None


def load_all(extensions: list[Extension], catalog: ScriptCatalog, *, skip_install: bool,
             stamps_file: Path | None) -> None:
    """install.py (unless --skip-install), scripts and assets of every enabled extension, each
    timed; a failure is recorded on that extension and the others go on."""
    compat_on_path()
    for ext in extensions:
        if not ext.enabled:
            continue
        t0 = time.perf_counter()
        _set_context(ext)
        try:
            if not skip_install:
                err = run_install(ext, stamps_file)
                if err:
                    ext.errors.append(err)
                    log.error("extension %s: %s", ext.name, err)
            load_scripts(ext, catalog)
            load_assets(ext)
        except BaseException:  # noqa: BLE001 - nothing an extension does stops the app
            _record(ext, "loading failed")
        finally:
            _set_context(None)
        ext.load_seconds = time.perf_counter() - t0
        log.info("Extension %s: %.2fs%s", ext.name, ext.load_seconds,
                 f" ({len(ext.errors)} error(s): see the Extensions tab)" if ext.errors else "")
