"""The Extensions tab (A1111's layout): Installed, Available, Install from URL, Backup/Restore.

Every action goes through `webui.extensions.manage`, which refuses installing, updating, enabling
and restoring while the server listens beyond localhost (unless --enable-insecure-extension-access);
the refusal is shown in the action's result box. Enable changes take effect at the next start of the
process (scripts are not reloaded in a running one yet); the tab says so.
"""
from __future__ import annotations

import html
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from webui.extensions import git, manage
from webui.ui.admin_gate import admin_refusal

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from webui.extensions.discovery import Extension
    from webui.extensions.manager import ExtensionManager
    from webui.services.container import Services

HEADERS = ["Enabled", "Extension", "URL", "Branch", "Version", "Date", "Update", "Errors"]
RELOADED = "Reloaded scripts and UI"  # the start of AppReloader's answer; the page reloads on it
HIDE_TAGS_DEFAULT = ["ads", "localization", "installed"]
BACKUP_MAX_BYTES = 4 * 1024 * 1024

TABLE_CSS = ("table { width: 100%; border-collapse: collapse; font-size: 0.9em; } "
             "td, th { padding: 4px 6px; border-bottom: 1px solid #8884; vertical-align: top; text-align: left; }")
ERRORS_CSS = "pre { white-space: pre-wrap; font-size: 0.85em; }"


@dataclass
class ExtensionsTab:
    table: Any
    apply: Any
    check: Any
    update: Any
    disable_all: Any
    installed_result: Any
    index_url: Any
    index_load: Any
    index_status: Any
    available_table: Any
    available_choice: Any
    available_install: Any
    install_url: Any
    install_branch: Any
    install_dirname: Any
    install_button: Any
    install_result: Any
    backup_button: Any
    backup_file: Any
    restore_file: Any
    restore_button: Any
    restore_result: Any


# ------------------------------------------------------------------ renderings (pure, tested)

def _date(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _first_line(errors: list[str]) -> str:
    if not errors:
        return ""
    first = errors[0].strip().splitlines()[0] if errors[0].strip() else "error"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return first + more


def installed_rows(manager: "ExtensionManager | None") -> list[list[Any]]:
    if manager is None:
        return []
    rows = []
    for e in manage.ensure_info(manager):
        status = e.update_status if e.commit_hash else ("" if e.update_status == "unknown" else e.update_status)
        rows.append([manage.user_enabled(manager, e), e.name, e.remote or "(not a git checkout)", e.branch or "",
                     e.version or "", _date(e.commit_date), status, _first_line(e.errors)])
    return rows


def errors_html(manager: "ExtensionManager | None") -> str:
    """Each extension's load errors, the first line as the summary and the whole text (traceback)
    inside a <details>."""
    if manager is None:
        return "<p>Extensions are not available in this app.</p>"
    parts = []
    for e in manager.extensions:
        for err in e.errors:
            lines = err.strip().splitlines() or ["error"]
            parts.append(f"<details><summary><b>{html.escape(e.name)}</b>: {html.escape(lines[0])}</summary>"
                         f"<pre>{html.escape(err)}</pre></details>")
    return "".join(parts) or "<p>No extension reported an error.</p>"


def _normal_url(url: str | None) -> str:
    u = (url or "").strip().rstrip("/")
    return u[:-4] if u.lower().endswith(".git") else u


def available_rows(index: dict[str, Any] | None, manager: "ExtensionManager | None", search: str = "",
                   hide_tags: list[str] | None = None) -> list[dict[str, Any]]:
    """The index entries after the search text and the hidden tags ("installed" hides the
    installed ones), with an `installed` flag."""
    if not index:
        return []
    installed = {_normal_url(e.remote) for e in (manager.extensions if manager else []) if e.remote}
    hide = set(hide_tags or [])
    text = (search or "").strip().lower()
    out = []
    for item in index.get("extensions", []):
        is_installed = _normal_url(item["url"]) in installed
        tags = set(item.get("tags") or [])
        if is_installed and "installed" in hide:
            continue
        if tags & hide:
            continue
        if text and text not in (item["name"] + " " + item["description"] + " " + " ".join(tags)).lower():
            continue
        out.append(dict(item, installed=is_installed))
    return out


def available_html(rows: list[dict[str, Any]], tags: dict[str, str] | None = None) -> str:
    if not rows:
        return "<p>No extensions to show (load an index, or change the search and hidden tags).</p>"
    body = []
    for r in rows:
        url = r["url"]
        name = html.escape(r["name"])
        link = (f'<a href="{html.escape(url, quote=True)}" target="_blank" rel="noopener noreferrer">{name}</a>'
                if url.lower().startswith(("https://", "http://")) else name)
        tag_text = ", ".join(html.escape(t) for t in r.get("tags") or [])
        state = "installed" if r.get("installed") else ""
        body.append(f"<tr><td>{link}</td><td>{html.escape(r['description'])}</td><td>{tag_text}</td>"
                    f"<td>{html.escape(str(r.get('added') or ''))}</td><td>{int(r.get('stars') or 0)}</td>"
                    f"<td>{state}</td></tr>")
    return ("<table><thead><tr><th>Extension</th><th>Description</th><th>Tags</th><th>Added</th><th>Stars</th>"
            "<th></th></tr></thead><tbody>" + "".join(body) + "</tbody></table>")


# ------------------------------------------------------------------ the tab

def _run(action: Callable[[], str]) -> str:
    """An action's result text; a refusal or failure is the text (and a toast), never a dead page."""
    try:
        return action()
    except manage.ExtensionAccessError as e:
        gr.Warning(str(e), title="Not allowed")
        return f"Refused: {e}"
    except manage.ExtensionActionError as e:
        gr.Warning(str(e), title="Extension action failed")
        return f"Error: {e}"


def create_extensions_tab(svc: "Services") -> ExtensionsTab:
    manager: "ExtensionManager | None" = getattr(svc, "extensions", None)
    guarded = manage.is_guarded(getattr(svc, "args", None))

    def need_manager() -> "ExtensionManager":
        if manager is None:
            raise manage.ExtensionActionError("extensions are not available in this app")
        return manager

    def need_admin(request: Any) -> None:
        refused = admin_refusal(svc, request, "install, update, enable or disable extensions")
        if refused:
            raise manage.ExtensionAccessError(refused)

    if guarded:
        gr.Markdown(f"⚠️ {guarded}", elem_id="extensions_guard")
    with gr.Tabs(elem_id="extensions_tabs"):
        # ---------------------------------------------------------------- Installed
        with gr.Tab("Installed", id="extensions_installed", elem_id="extensions_installed_tab"):
            with gr.Row(equal_height=True):
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
                check = gr.Button("Check for updates", elem_id="extensions_check")
                update = gr.Button("Update extensions that are behind", elem_id="extensions_update")
                disable_all = gr.Radio(
                    ["none", "extra", "all"], label="Disable all extensions", elem_id="extensions_disable_all",
                    value=lambda: str(manager.settings.get("disable_all_extensions") or "none") if manager else "none")
            gr.Markdown("Tick or untick extensions and press *Apply and restart UI*: their scripts are loaded "
                        "or unloaded and the page reloads (the model and running jobs are kept). Flags an "
                        "extension adds in preload.py need a server restart.", elem_id="extensions_restart_note")
            table = gr.Dataframe(value=lambda: installed_rows(manager), headers=HEADERS,
                                 datatype=["bool", "str", "str", "str", "str", "str", "str", "str"], type="array",
                                 interactive=True, static_columns=list(range(1, len(HEADERS))),
                                 elem_id="extensions_installed_table", wrap=True, label="Installed extensions",
                                 show_label=False)
            installed_result = gr.Textbox(label="Result", interactive=False, lines=2,
                                          elem_id="extensions_installed_result")
            with gr.Accordion("Load errors (full text)", open=False, elem_id="extensions_errors_accordion"):
                errors = gr.HTML(value=lambda: errors_html(manager), elem_id="extensions_errors",
                                 css_template=ERRORS_CSS)

        # ---------------------------------------------------------------- Available
        with gr.Tab("Available", id="extensions_available", elem_id="extensions_available_tab"):
            index_state = gr.State(None)
            with gr.Row(equal_height=True):
                index_load = gr.Button("Load from:", variant="primary", scale=0, min_width=120,
                                       elem_id="extensions_index_load")
                index_url = gr.Textbox(git.default_index_source(), show_label=False, scale=4,
                                       placeholder="index URL or a local index.json path",
                                       elem_id="extensions_index_url")
            index_status = gr.Textbox(label="Index", interactive=False, elem_id="extensions_index_status",
                                      value="Not loaded yet: press 'Load from:'.")
            with gr.Row():
                search = gr.Textbox(label="Search", elem_id="extensions_search", scale=2)
                hide_tags = gr.CheckboxGroup(HIDE_TAGS_DEFAULT, value=HIDE_TAGS_DEFAULT,
                                             label="Hide extensions with tags", elem_id="extensions_hide_tags",
                                             scale=3)
            with gr.Row(equal_height=True):
                available_choice = gr.Dropdown([], label="Extension to install", elem_id="extensions_available_choice",
                                               scale=3)
                available_install = gr.Button("Install", elem_id="extensions_available_install", scale=0,
                                              min_width=120)
            available_result = gr.Textbox(label="Result", interactive=False, elem_id="extensions_available_result")
            available_table = gr.HTML(available_html([]), elem_id="extensions_available_table",
                                      css_template=TABLE_CSS)

        # ---------------------------------------------------------------- Install from URL
        with gr.Tab("Install from URL", id="extensions_install", elem_id="extensions_install_tab"):
            install_url = gr.Textbox(label="URL for extension's git repository", elem_id="extensions_install_url",
                                     placeholder="https://github.com/user/extension.git")
            install_branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                        elem_id="extensions_install_branch")
            install_dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                         elem_id="extensions_install_dirname")
            install_button = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            install_result = gr.Textbox(label="Result", interactive=False, lines=3, elem_id="extensions_install_result")

        # ---------------------------------------------------------------- Backup/Restore
        with gr.Tab("Backup/Restore", id="extensions_backup", elem_id="extensions_backup_tab"):
            gr.Markdown("A backup lists each extension with its URL, branch, commit and whether it is enabled. "
                        "Restoring enables/disables the installed ones as saved and moves git checkouts back to "
                        "the saved commit; it installs nothing and runs no install.py.")
            with gr.Row():
                with gr.Column():
                    backup_button = gr.Button("Save a backup", elem_id="extensions_backup_button")
                    backup_file = gr.File(label="Backup", interactive=False, elem_id="extensions_backup_file")
                with gr.Column():
                    restore_file = gr.File(label="Backup to restore", file_types=[".json"], type="filepath",
                                           elem_id="extensions_restore_file")
                    restore_button = gr.Button("Restore", variant="primary", elem_id="extensions_restore_button")
            restore_result = gr.Textbox(label="Result", interactive=False, lines=4, elem_id="extensions_restore_result")

    # ---------------------------------------------------------------- handlers
    def refreshed() -> tuple[Any, str]:
        if manager is not None:
            manage.refresh(manager)
        return installed_rows(manager), errors_html(manager)

    def do_apply(rows: Any, mode: str, request: gr.Request) -> tuple[Any, str, str]:
        def act() -> str:
            need_admin(request)
            m = need_manager()
            names = [str(r[1]) for r in (rows or []) if len(r) > 1 and _truthy(r[0])]
            saved = manage.set_enabled(m, names, mode)
            reload_ui = getattr(svc, "reload_ui", None)
            if reload_ui is None:  # an app not run by the composition root (tests, --nowebui tools)
                return saved + " Restart the server to load or unload extensions' scripts."
            try:
                text = reload_ui()
            except Exception as e:  # noqa: BLE001 - the page stays usable; the message says what to do
                log.exception("reloading the UI failed")
                raise manage.ExtensionActionError(
                    f"{saved} Reloading the UI failed ({type(e).__name__}: {e}); restart the server.") from None
            return f"{saved} {text}"
        msg = _run(act)
        return (*refreshed(), msg)

    def do_check(request: gr.Request) -> tuple[Any, str, str]:
        def act() -> str:
            need_admin(request)  # fetches from the extensions' remotes
            found = manage.check_updates(need_manager())
            if not found:
                return "No extensions installed."
            return "; ".join(f"{n}: {s}" for n, s in found.items())
        msg = _run(act)
        return installed_rows(manager), errors_html(manager), msg

    def do_update(request: gr.Request) -> tuple[Any, str, str]:
        def act() -> str:
            need_admin(request)
            done = manage.update(need_manager())
            if not done:
                return "Nothing to update (press 'Check for updates' first)."
            return "\n".join(done.values()) + "\n" + manage.RESTART_NOTE
        msg = _run(act)
        return (*refreshed(), msg)

    out_installed = [table, errors, installed_result]
    # the page that asked reloads itself once the new UI is served (A1111 does the same after a restart)
    apply.click(do_apply, [table, disable_all], out_installed, api_visibility="private").then(
        None, [installed_result], None,
        js=f"(t) => {{ if (t && t.includes({json.dumps(RELOADED)})) setTimeout(() => window.location.reload(), 800); }}")
    check.click(do_check, None, out_installed, api_visibility="private")
    update.click(do_update, None, out_installed, api_visibility="private")

    def show_available(index: dict | None, text: str, hide: list[str]) -> tuple[str, Any]:
        rows = available_rows(index, manager, text, hide)
        choices = [(r["name"], r["url"]) for r in rows if not r["installed"]]
        return available_html(rows, (index or {}).get("tags")), gr.update(choices=choices, value=None)

    def do_load(source: str, text: str, hide: list[str]) -> tuple[Any, str, Any, str, Any]:
        idx = manage.load_index(manager.args if manager else None, source)
        if idx.error:
            return None, idx.error, gr.update(), available_html([]), gr.update(choices=[], value=None)
        index = {"tags": idx.tags, "extensions": idx.extensions}
        tags = sorted(set(HIDE_TAGS_DEFAULT) | set(idx.tags))
        shown, choices = show_available(index, text, hide)
        status = f"{len(idx.extensions)} extensions in {idx.source}."
        return index, status, gr.update(choices=tags), shown, choices

    index_load.click(do_load, [index_url, search, hide_tags],
                     [index_state, index_status, hide_tags, available_table, available_choice],
                     api_visibility="private")
    for comp in (search, hide_tags):
        comp.change(show_available, [index_state, search, hide_tags], [available_table, available_choice],
                    show_progress="hidden", api_visibility="private")

    def installed_text(ext: "Extension") -> str:
        m = need_manager()
        extra = f" (commit {ext.version})" if ext.version else ""
        return (f"Installed {ext.name} into {ext.path}{extra}. {manage.describe_install(m, ext)} "
                f"{manage.RESTART_NOTE}")

    def do_install_url(url: str, branch: str, dirname: str, request: gr.Request) -> tuple[str, Any, str]:
        def act() -> str:
            need_admin(request)
            return installed_text(manage.install(need_manager(), url, branch, dirname))
        msg = _run(act)
        return msg, *refreshed()

    install_button.click(do_install_url, [install_url, install_branch, install_dirname],
                         [install_result, table, errors], api_visibility="private")

    def do_install_index(url: str | None, index: dict | None, text: str, hide: list[str],
                         request: gr.Request) -> tuple[Any, ...]:
        def act() -> str:
            need_admin(request)
            return installed_text(manage.install(need_manager(), str(url)))
        msg = _run(act) if url else "Choose an extension from the list first."
        rows, err = refreshed()
        shown, choices = show_available(index, text, hide)
        return msg, rows, err, shown, choices

    available_install.click(do_install_index, [available_choice, index_state, search, hide_tags],
                            [available_result, table, errors, available_table, available_choice],
                            api_visibility="private")

    def do_backup() -> Any:
        try:
            state = manage.backup(need_manager())
        except manage.ExtensionActionError as e:
            gr.Warning(str(e))
            return None
        folder = Path(tempfile.mkdtemp(prefix="extensions-backup-"))
        path = folder / f"extensions-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
        return str(path)

    backup_button.click(do_backup, None, backup_file, api_visibility="private")

    def do_restore(file: str | None, request: gr.Request) -> tuple[str, Any, str]:
        def act() -> str:
            need_admin(request)
            m = need_manager()
            if manage.is_guarded(m.args):  # refuse before reading anything the client sent
                raise manage.ExtensionAccessError(manage.is_guarded(m.args) or "")
            if not file:
                raise manage.ExtensionActionError("choose a backup file first")
            p = Path(file)
            if p.stat().st_size > BACKUP_MAX_BYTES:
                raise manage.ExtensionActionError("that file is too large to be an extensions backup")
            try:
                state = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise manage.ExtensionActionError(f"not a JSON backup: {e}") from None
            return "\n".join(manage.restore(m, state)) + "\n" + manage.RESTART_NOTE
        msg = _run(act)
        return msg, *refreshed()

    restore_button.click(do_restore, [restore_file], [restore_result, table, errors], api_visibility="private")

    return ExtensionsTab(table, apply, check, update, disable_all, installed_result, index_url, index_load,
                         index_status, available_table, available_choice, available_install, install_url,
                         install_branch, install_dirname, install_button, install_result, backup_button,
                         backup_file, restore_file, restore_button, restore_result)


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "on")
    return bool(v)
