"""The Extensions tab in a real headless browser against the real server process: the installed
extension in the table, install from a (local bare) git URL, disable + Apply saved in config.json,
Check for updates, the Available list from a local index file and offline, and the refusal on a
server started with --listen.

Needs Debian's chromium and the playwright package; skipped otherwise (as tests/test_ui_browser.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import BROWSER_TIMEOUT_MS, Server, start_server, stop_server
from test_extensions_manage import INDEX, Remote, make_manager
from webui.extensions import manage

# each test starts servers of its own (~1 min together): run with `-m slow`
pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = BROWSER_TIMEOUT_MS



def open_tab(browser: Any, server: Server) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/")
    pg.wait_for_selector("#txt2img_prompt textarea")
    pg.get_by_role("tab", name="Extensions").click()
    pg.wait_for_selector("#extensions_installed_table")
    return ctx, pg, errors


def wait_in_table(pg: Any, name: str) -> None:
    pg.wait_for_function("(n) => document.querySelector('#extensions_installed_table').innerText.includes(n)",
                         arg=name)


def wait_text(pg: Any, elem_id: str, text: str) -> str:
    """Wait until the textbox `elem_id` holds `text`; return its value."""
    pg.wait_for_function("([id, s]) => { const t = document.querySelector('#' + id + ' textarea');"
                         " return t && t.value.includes(s); }", arg=[elem_id, text])
    return pg.locator(f"#{elem_id} textarea").input_value()


def test_extensions_tab_install_disable_and_index(browser: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first = Remote(tmp_path, "myext", tmp_path / "m1")
    manage.install(make_manager(data), str(first.bare))
    second = Remote(tmp_path, "second", tmp_path / "m2")
    (tmp_path / "ckpt").mkdir()
    server = start_server(data, tmp_path / "ckpt", "--skip-load-model-at-start", nowebui=False)
    ctx = None
    try:
        ctx, pg, errors = open_tab(browser, server)
        table = pg.locator("#extensions_installed_table")
        wait_in_table(pg, "myext")
        assert first.head()[:8] in table.inner_text() and str(first.bare) in table.inner_text()
        assert not pg.locator("#extensions_guard").count()  # localhost: no refusal banner

        # Install from URL: clone + install.py, listed in the table
        pg.get_by_role("tab", name="Install from URL").click()
        pg.locator("#extensions_install_url textarea, #extensions_install_url input").first.fill(str(second.bare))
        pg.click("#extensions_install_button")
        text = wait_text(pg, "extensions_install_result", "Installed second")
        assert "install.py ran." in text and "Apply and restart UI" in text
        assert (tmp_path / "m2").read_text() == "ran\n" and (data / "extensions" / "second" / ".git").is_dir()

        # Installed: untick myext, Apply and restart UI → config.json, scripts reloaded in the process
        pg.get_by_role("tab", name="Installed").click()
        wait_in_table(pg, "second")
        # Gradio's Dataframe: rows are div[role=row], the bool column a checkbox per row
        table.locator(".virtual-row[role=row]", has_text="myext").locator("input[type=checkbox]").uncheck()
        with pg.expect_event("load", timeout=TIMEOUT_MS):  # the UI is rebuilt and the page reloads itself
            pg.click("#extensions_apply")
            text = wait_text(pg, "extensions_installed_result", "Reloaded scripts and UI")
        assert text.startswith("Saved: 1 enabled, 1 disabled.") and "1 extension(s) loaded (second)" in text
        pg.wait_for_selector("#txt2img_prompt textarea")
        pg.get_by_role("tab", name="Extensions").click()
        wait_in_table(pg, "second")
        assert json.loads((data / "config.json").read_text())["disabled_extensions"] == ["myext"]
        listed = {e["name"]: e["enabled"] for e in requests.get(server.api("extensions"), timeout=10).json()}
        assert listed == {"myext": False, "second": True}  # the saved state (A1111 re-reads it too) ...
        pg.click("#extensions_check")
        text = wait_text(pg, "extensions_installed_result", "myext: latest")
        assert "second: latest" in text
        first.commit("VALUE = 5\n")
        pg.click("#extensions_check")
        wait_text(pg, "extensions_installed_result", "myext: behind")
        pg.wait_for_function("() => [...document.querySelectorAll('#extensions_installed_table [role=row]')]"
                             ".some(r => r.innerText.includes('myext') && r.innerText.includes('behind'))")

        # Backup/Restore: the state downloads as a JSON file; an edited one uploaded back is applied
        pg.get_by_role("tab", name="Backup/Restore").click()
        pg.click("#extensions_backup_button")
        link = pg.locator("#extensions_backup_file a[href]").first
        link.wait_for()
        href = link.get_attribute("href")
        state = requests.get(href if href.startswith("http") else server.url + href, timeout=10).json()
        assert state["extensions"]["myext"]["enabled"] is False and state["extensions"]["second"]["enabled"]
        assert state["extensions"]["myext"]["commit_hash"] == run_head(data / "extensions" / "myext")
        state["extensions"]["myext"]["enabled"] = True
        edited = tmp_path / "edited-backup.json"
        edited.write_text(json.dumps(state))
        pg.locator("#extensions_restore_file input[type=file]").set_input_files(str(edited))
        pg.wait_for_function("() => document.querySelector('#extensions_restore_file').innerText"
                             ".includes('edited-backup.json')")
        pg.click("#extensions_restore_button")
        wait_text(pg, "extensions_restore_result", "myext: already at")
        assert json.loads((data / "config.json").read_text())["disabled_extensions"] == []
        manage_state = json.loads((data / "config.json").read_text())
        assert manage_state["disable_all_extensions"] == "none"
        pg.get_by_role("tab", name="Installed").click()  # the table follows: ticked again
        pg.wait_for_function("() => [...document.querySelectorAll('#extensions_installed_table .virtual-row')]"
                             ".some(r => r.innerText.includes('myext') && r.querySelector('input:checked'))")
        again = make_manager(data)
        again.refresh()
        manage.set_enabled(again, ["second"])  # back to "myext disabled" for the restart check below

        # Available: offline index → the error text; a local index file → its entries
        pg.get_by_role("tab", name="Available").click()
        url_box = pg.locator("#extensions_index_url textarea, #extensions_index_url input").first
        url_box.fill(f"http://127.0.0.1:{free_closed_port()}/index.json")
        pg.click("#extensions_index_load")
        assert "offline or unreachable" in wait_text(pg, "extensions_index_status", "cannot load the index")
        index = tmp_path / "index.json"
        index.write_text(json.dumps(INDEX))
        url_box.fill(str(index))
        pg.click("#extensions_index_load")
        wait_text(pg, "extensions_index_status", "2 extensions in")
        shown = pg.inner_text("#extensions_available_table")
        assert "Alpha <b>" in shown and "first <script>x</script>" in shown and "Beta" not in shown  # ads hidden
        assert not errors, errors
    finally:
        if ctx is not None:
            ctx.close()
        stop_server(server)
    # ... and it is kept for the next start
    server = start_server(data, tmp_path / "ckpt", "--skip-load-model-at-start")
    try:
        listed = {e["name"]: e["enabled"] for e in requests.get(server.api("extensions"), timeout=10).json()}
        assert listed == {"myext": False, "second": True}
    finally:
        stop_server(server)


def run_head(path: Path) -> str:
    import subprocess
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, check=True, capture_output=True,
                          text=True).stdout.strip()


def free_closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listen_server_refuses_install_in_the_tab(browser: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    remote = Remote(tmp_path, "myext", tmp_path / "m1")
    (tmp_path / "ckpt").mkdir()
    server = start_server(data, tmp_path / "ckpt", "--listen", "--api", "--skip-load-model-at-start",
                          nowebui=False)
    ctx = None
    try:
        ctx, pg, errors = open_tab(browser, server)
        assert "--enable-insecure-extension-access" in pg.inner_text("#extensions_guard")
        pg.get_by_role("tab", name="Install from URL").click()
        pg.locator("#extensions_install_url textarea, #extensions_install_url input").first.fill(str(remote.bare))
        pg.click("#extensions_install_button")
        text = wait_text(pg, "extensions_install_result", "Refused:")
        assert "--listen" in text and "--enable-insecure-extension-access" in text
        assert not (data / "extensions" / "myext").exists() and not (tmp_path / "m1").exists()
        pg.get_by_role("tab", name="Installed").click()
        pg.click("#extensions_apply")
        assert "Refused:" in wait_text(pg, "extensions_installed_result", "Refused:")
        assert not (data / "config.json").exists() or "disabled_extensions" not in (data / "config.json").read_text()
        assert not errors, errors
    finally:
        if ctx is not None:
            ctx.close()
        stop_server(server)
