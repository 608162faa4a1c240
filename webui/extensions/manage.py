"""What the Extensions tab does: install from a git URL, enable/disable, check for updates, update,
backup and restore of the extension set.

A1111's security rule: installing, updating, enabling and restoring run code on this machine, so
they are refused while the server is reachable from the network (`--listen`, `--server-name` other
than localhost, `--share`, `--ngrok`) unless `--enable-insecure-extension-access` is given.
`is_guarded(args)` is the refusal text (None when allowed); every action here checks it first and
raises `ExtensionAccessError` with it. Reading (the list, the index of available extensions, a
backup) is always allowed.
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

from webui.cli import network_exposure
from webui.extensions import git
from webui.extensions.discovery import Extension
from webui.extensions.manager import ExtensionManager

RESTART_NOTE = ('Press "Apply and restart UI" on the Installed tab to load or unload extensions\' scripts '
                '(the UI is rebuilt in the running process; flags an extension adds in preload.py need a '
                'server restart).')

_lock = threading.RLock()  # one action at a time (two installs into one folder, a restore beside an update)


class ExtensionAccessError(PermissionError):
    """The action is refused because the server listens beyond localhost."""


class ExtensionActionError(RuntimeError):
    """The action failed (bad input, git error); the message says why."""


def is_guarded(args: argparse.Namespace | None) -> str | None:
    """The refusal text when extension actions are not allowed with these flags, else None."""
    if args is None or getattr(args, "enable_insecure_extension_access", False):
        return None
    reasons = network_exposure(args)
    if not reasons:
        return None
    return ("Extension access is disabled: the server is reachable from the network (" + ", ".join(reasons) +
            "), and installing, updating or enabling an extension runs its code on this machine. Start it "
            "with --enable-insecure-extension-access to allow this (only where you trust everyone who can "
            "reach the page), or manage extensions from a server bound to localhost.")


def _check_access(manager: ExtensionManager) -> None:
    msg = is_guarded(manager.args)
    if msg:
        raise ExtensionAccessError(msg)


# ------------------------------------------------------------------ reading

def refresh(manager: ExtensionManager) -> list[Extension]:
    """Re-read the folder and each checkout's git facts; update statuses found before are kept while
    the commit is the same. Takes no lock: listing never waits for a running clone."""
    old = {e.name: (e.commit_hash, e.update_status) for e in manager.extensions}
    exts = manager.refresh()
    for e in exts:
        git.read_info(e)
        prev = old.get(e.name)
        if prev is not None and prev[0] == e.commit_hash:
            e.update_status = prev[1]
    return exts


def ensure_info(manager: ExtensionManager) -> list[Extension]:
    """Git facts for extensions that do not have them yet (the loader discovers without git)."""
    for e in manager.extensions:
        if e.commit_hash is None and git.is_checkout(Path(e.path)):
            git.read_info(e)
    return manager.extensions


def user_enabled(manager: ExtensionManager, ext: Extension) -> bool:
    """The per-extension choice (A1111's checkbox): not in `disabled_extensions`. Whether it loads
    also depends on "Disable all extensions" and Requires (`ext.enabled`)."""
    return ext.name not in set(manager.settings.get("disabled_extensions") or [])


def load_index(args: argparse.Namespace | None, source: str | None) -> git.ExtensionIndex:
    """The list of available extensions (never raises: `error` says why it could not be read). Where
    extension access is refused only the default index is read: a custom URL or a file path from a
    remote visitor would make the server fetch or read what the visitor names."""
    source = (source or "").strip() or git.default_index_source()
    msg = is_guarded(args)
    if msg and source != git.default_index_source():
        return git.ExtensionIndex(source, error=f"Only the default index can be loaded here. {msg}")
    return git.load_index(source)


# ------------------------------------------------------------------ install

def _stamps_file(manager: ExtensionManager) -> Path:
    # the loader's record of which install.py ran (<data-dir>/cache/extensions-installed.json)
    return Path(manager.extensions_dir).parent / "cache" / "extensions-installed.json"


def _normal_url(url: str | None) -> str:
    u = (url or "").strip().rstrip("/")
    return u[:-4] if u.lower().endswith(".git") else u


def install(manager: ExtensionManager, url: str, branch: str | None = None, dirname: str | None = None) -> Extension:
    """Clone `url` into the extensions folder, run its install.py (the loader's run_install; not
    with --skip-install) and list it. Returns the new Extension; a failing install.py is recorded in
    its `errors` (the extension stays installed). Its scripts load at the next start."""
    _check_access(manager)
    with _lock:
        try:
            url = git.check_url(url)
            branch = git.check_branch(branch)
            name = git.check_dirname((dirname or "").strip() or git.dirname_from_url(url))
        except ValueError as e:
            raise ExtensionActionError(str(e)) from None
        ensure_info(manager)
        same = next((e for e in manager.extensions if e.remote and _normal_url(e.remote) == _normal_url(url)), None)
        if same is not None:
            raise ExtensionActionError(f"an extension from this URL is already installed: {same.name}")
        try:
            path = git.clone(url, Path(manager.extensions_dir), branch, name)
        except (ValueError, git.GitError) as e:
            raise ExtensionActionError(str(e)) from None
        refresh(manager)
        ext = manager.get(path.name)
        if ext is None:  # cannot happen unless the folder vanished at once
            raise ExtensionActionError(f"{path} was cloned but is not listed")
        if (Path(ext.path) / "install.py").is_file() and not getattr(manager.args, "skip_install", False):
            err = _run_install(ext, _stamps_file(manager))
            if err:
                ext.errors.append(err)
        return ext


def _run_install(ext: Extension, stamps_file: Path) -> str | None:
    try:
        from webui.extensions import loader
        run = loader.run_install
    except (ImportError, AttributeError) as e:
        return f"install.py not run: the extension loader is not available ({e}); it runs at the next start"
    try:
        return run(ext, stamps_file, force=True)
    except Exception as e:  # noqa: BLE001 - the install stays, with the reason
        return f"install.py could not run: {type(e).__name__}: {e}"


def describe_install(manager: ExtensionManager, ext: Extension) -> str:
    """One line on what happened to install.py, for the tab's result text."""
    if not (Path(ext.path) / "install.py").is_file():
        return "It has no install.py."
    if getattr(manager.args, "skip_install", False):
        return "install.py was not run (--skip-install)."
    failed = [e for e in ext.errors if e.startswith("install.py")]
    if failed:
        return f"{failed[-1].splitlines()[0]} (details in the Installed tab)."
    return "install.py ran."


# ------------------------------------------------------------------ enable / disable

def set_enabled(manager: ExtensionManager, names_enabled: list[str] | None, disable_all: str | None = None) -> str:
    """Save which extensions are enabled (every other listed one goes into `disabled_extensions`;
    names of folders not present now stay as they were) and "Disable all extensions", in config.json.
    Takes effect at the next start."""
    _check_access(manager)
    with _lock:
        present = {e.name for e in manager.extensions}
        wanted = set(names_enabled or [])
        unknown = sorted(wanted - present)
        if unknown:
            raise ExtensionActionError(f"no installed extension named {', '.join(unknown)}")
        before = [str(x) for x in manager.settings.get("disabled_extensions") or []]
        disabled = [n for n in before if n not in present] + sorted(present - wanted)
        changes: dict[str, Any] = {"disabled_extensions": disabled}
        if disable_all is not None:
            if disable_all not in ("none", "extra", "all"):
                raise ExtensionActionError(f"'Disable all extensions' must be none, extra or all, not {disable_all!r}")
            changes["disable_all_extensions"] = disable_all
        manager.settings.update(changes)
        refresh(manager)
        off = len([n for n in disabled if n in present])
        mode = changes.get("disable_all_extensions", manager.settings.get("disable_all_extensions"))
        extra = f"; Disable all extensions: {mode}" if mode != "none" else ""
        return f"Saved: {len(present) - off} enabled, {off} disabled{extra}."


# ------------------------------------------------------------------ updates

def check_updates(manager: ExtensionManager, names: list[str] | None = None) -> dict[str, str]:
    """{name: "latest" | "behind" | "unknown" (plain folder) | "error: ..."} for the git checkouts
    (all, or those named). Only reads the remote."""
    _check_access(manager)
    with _lock:
        ensure_info(manager)
        out = {}
        for e in manager.extensions:
            if names is None or e.name in names:
                out[e.name] = git.check_for_updates(e)
        return out


def update(manager: ExtensionManager, names: list[str] | None = None) -> dict[str, str]:
    """Fast-forward the named checkouts (or all that are "behind"); {name: what happened}."""
    _check_access(manager)
    with _lock:
        ensure_info(manager)
        out = {}
        for e in manager.extensions:
            if names is not None and e.name not in names:
                continue
            if names is None and e.update_status != "behind":
                continue
            try:
                out[e.name] = git.update(e)
            except git.GitError as ex:
                out[e.name] = f"error: {ex}"
        return out


# ------------------------------------------------------------------ backup / restore

def backup(manager: ExtensionManager) -> dict[str, Any]:
    """A1111's config-state shape (the extension part): for each extension its name, remote, branch,
    commit and enable choice."""
    from webui.version import VERSION

    with _lock:
        ensure_info(manager)
        exts = {}
        for e in manager.extensions:
            exts[e.name] = {"name": e.name, "enabled": user_enabled(manager, e), "is_builtin": e.is_builtin,
                            "remote": e.remote, "branch": e.branch, "commit_hash": e.commit_hash,
                            "commit_date": e.commit_date, "have_info_from_repo": e.commit_hash is not None}
        return {"name": "Config", "created_at": time.time(), "webui": {"version": VERSION},
                "disable_all_extensions": str(manager.settings.get("disable_all_extensions") or "none"),
                "extensions": exts}


def restore(manager: ExtensionManager, state: Any) -> list[str]:
    """Apply a backup: each installed extension enabled or disabled as saved (one not in the backup
    is disabled, as A1111 does), and a git checkout moved to its saved commit. Nothing is
    installed and no install.py runs; extensions in the backup that are not installed are listed.
    Returns one line per extension."""
    _check_access(manager)
    if not isinstance(state, dict) or not isinstance(state.get("extensions"), dict):
        raise ExtensionActionError('not an extensions backup (expected {"extensions": {name: {...}}})')
    saved: dict[str, Any] = state["extensions"]
    with _lock:
        ensure_info(manager)
        lines, enabled = [], []
        for e in manager.extensions:
            entry = saved.get(e.name)
            if not isinstance(entry, dict):
                lines.append(f"{e.name}: not in the backup; disabled")
                continue
            if entry.get("enabled", False):
                enabled.append(e.name)
            commit = entry.get("commit_hash")
            if isinstance(commit, str) and commit and git.is_checkout(Path(e.path)):
                try:
                    lines.append(git.checkout_commit(e, commit))
                except (ValueError, git.GitError) as ex:
                    lines.append(f"{e.name}: could not go back to {str(commit)[:8]}: {ex}")
            else:
                lines.append(f"{e.name}: {'enabled' if entry.get('enabled') else 'disabled'}")
        present = {e.name for e in manager.extensions}
        for name in saved:
            if name not in present:
                lines.append(f"{name}: in the backup but not installed (install it from its URL first)")
        mode = state.get("disable_all_extensions")
        set_enabled(manager, enabled, mode if mode in ("none", "extra", "all") else None)
        return lines
