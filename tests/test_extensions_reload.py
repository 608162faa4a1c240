"""A1111's "Apply and restart UI" inside the running process: ticking and unticking extensions in the
Extensions tab and pressing the button unloads and loads their scripts, callbacks, options and routes,
rebuilds the page (which reloads itself), and keeps the server process, the model and the API.

Needs Debian's chromium and the playwright package (as tests/test_ui_browser.py).
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import Server, start_server, stop_server, wait_for_model
from test_extensions_browser import open_tab

pytestmark = pytest.mark.browser

SCRIPT = '''
    from pathlib import Path

    import gradio as gr
    from modules import script_callbacks, scripts, shared

    NAME = "{title}"
    KEY = NAME.lower()


    class Marker(scripts.Script):
        def title(self):
            return NAME

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            with gr.Accordion(NAME, open=False, elem_id=KEY + "_accordion"):
                on = gr.Checkbox(False, label=NAME + " enabled", elem_id=self.elem_id("enabled"))
            return [on]

        def process(self, p, on):
            if on:
                p.extra_generation_params[NAME] = shared.opts.data.get(KEY + "_word", "?")


    def started(demo, app):
        @app.get("/" + KEY + "/ping")
        def ping():
            return {{"ext": KEY}}


    def settings():
        shared.opts.add_option(KEY + "_word", shared.OptionInfo("on", NAME + " word", section=(KEY, NAME)))


    def unloaded():
        marker = Path(scripts.basedir()) / "unloaded.txt"
        marker.write_text(str(int(marker.read_text()) + 1 if marker.exists() else 1))


    script_callbacks.on_app_started(started)
    script_callbacks.on_ui_settings(settings)
    script_callbacks.on_script_unloaded(unloaded)
'''


def make_ext(ext_dir: Path, title: str) -> Path:
    root = ext_dir / title.lower()
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "marker.py").write_text(textwrap.dedent(SCRIPT.format(title=title)), encoding="utf-8")
    key = title.lower()
    (root / "javascript").mkdir()
    (root / "javascript" / f"{key}.js").write_text(  # A1111's page callbacks run in our page too
        f"onUiLoaded(() => {{ document.body.dataset.{key}Loaded = '1'; }});\n"
        f"onUiUpdate(() => {{ window.{key}Updates = (window.{key}Updates || 0) + 1; }});\n", encoding="utf-8")
    return root


def generate(server: Server, alwayson: dict[str, Any]) -> requests.Response:
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler",
            "alwayson_scripts": alwayson}
    return requests.post(server.api("txt2img"), json=body, timeout=120)


def row(table: Any, name: str) -> Any:
    return table.locator(".virtual-row[role=row]", has_text=name).locator("input[type=checkbox]")


@pytest.mark.slow  # ~35 s, a server of its own
def test_apply_and_restart_ui_reloads_extensions_in_process(browser: Any, tmp_path: Path,  # noqa: F811
                                                            model_dir: Path) -> None:
    data = tmp_path / "data"
    alpha, beta = make_ext(data / "extensions", "Alpha"), make_ext(data / "extensions", "Beta")
    (data / "config.json").write_text(json.dumps({"disabled_extensions": ["beta"]}))
    server = start_server(data, model_dir, "--ckpt", str(model_dir / "tiny-sd1.safetensors"), nowebui=False)
    ctx = None
    try:
        wait_for_model(server)
        pid = server.proc.pid
        assert requests.get(server.url + "/alpha/ping", timeout=10).json() == {"ext": "alpha"}
        assert requests.get(server.url + "/beta/ping", timeout=10).status_code == 404
        ctx, pg, errors = open_tab(browser, server)
        assert pg.locator("#alpha_accordion").count() >= 1 and pg.locator("#beta_accordion").count() == 0
        pg.wait_for_function("() => document.body.dataset.alphaLoaded === '1' && window.alphaUpdates > 0")

        # tick beta, untick alpha, Apply and restart UI: the result text, then the page reloads itself
        table = pg.locator("#extensions_installed_table")
        row(table, "beta").check()
        row(table, "alpha").uncheck()
        with pg.expect_event("load", timeout=60_000):
            pg.click("#extensions_apply")
            pg.wait_for_function("() => { const t = document.querySelector('#extensions_installed_result textarea');"
                                 " return t && t.value.includes('Reloaded scripts and UI'); }")
            text = pg.locator("#extensions_installed_result textarea").input_value()
        assert text.startswith("Saved: 1 enabled, 1 disabled.") and "1 extension(s) loaded (beta)" in text
        pg.wait_for_selector("#txt2img_prompt textarea")
        assert pg.locator("#beta_accordion").count() >= 1 and pg.locator("#alpha_accordion").count() == 0
        pg.wait_for_function("() => document.body.dataset.betaLoaded === '1'")  # the new page runs beta's JS
        assert pg.evaluate("() => [document.body.dataset.alphaLoaded, window.alphaUpdates]") == [None, None]
        pg.get_by_role("tab", name="Settings").click()
        pg.wait_for_function("() => document.body.innerText.includes('Beta word')")
        assert "Alpha word" not in pg.locator("body").inner_text()
        assert not errors, errors

        # the same process, with alpha's callbacks, route and option gone and beta's in place
        assert server.proc.poll() is None and server.proc.pid == pid
        assert (alpha / "unloaded.txt").read_text() == "1"  # on_script_unloaded ran once
        assert not (beta / "unloaded.txt").exists()
        assert requests.get(server.url + "/beta/ping", timeout=10).json() == {"ext": "beta"}
        assert requests.get(server.url + "/alpha/ping", timeout=10).status_code == 404
        opts = requests.get(server.api("options"), timeout=10).json()
        assert opts["beta_word"] == "on" and "alpha_word" not in opts
        titles = {s["name"] for s in requests.get(server.api("script-info"), timeout=10).json()}
        assert "beta" in titles and "alpha" not in titles
        assert requests.get(server.api("sd-models"), timeout=10).status_code == 200

        # beta's script runs in a generation; alpha is refused as an unknown script (4xx, not 5xx)
        r = generate(server, {"Beta": {"args": [True]}})
        assert r.status_code == 200, r.text
        assert "Beta: on" in json.loads(r.json()["info"])["infotexts"][0]
        r = generate(server, {"Alpha": {"args": [True]}})
        assert 400 <= r.status_code < 500 and "alpha" in r.text.lower()

        # an option change beta's script reads goes through the new app; a second reload keeps it
        assert requests.post(server.api("options"), json={"beta_word": "loud"}, timeout=10).status_code == 200
        pg.get_by_role("tab", name="Extensions").click()
        pg.wait_for_selector("#extensions_installed_table")
        with pg.expect_event("load", timeout=60_000):
            pg.click("#extensions_apply")
        pg.wait_for_selector("#txt2img_prompt textarea")
        assert (beta / "unloaded.txt").read_text() == "1"
        r = generate(server, {"Beta": {"args": [True]}})
        assert "Beta: loud" in json.loads(r.json()["info"])["infotexts"][0]
    finally:
        if ctx is not None:
            ctx.close()
        stop_server(server)
