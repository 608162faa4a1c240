"""An extension written against A1111's API (`modules.scripts`, `script_callbacks`, `shared`), loaded by
the real server: its always-on script with ui(), options, route, tab, after_component hook and
cfg_denoiser callback all work, over HTTP and in the browser."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from conftest import Server, open_page, start_server, stop_server, wait_for_model
from test_api import b64_image

EXTENSION = '''
import gradio as gr
from modules import script_callbacks, scripts, shared

SEEN = {"width": False}


class StyleExt(scripts.Script):
    def title(self):
        return "Style Ext"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("Style Ext", open=False, elem_id=self.elem_id("accordion")):
            enabled = gr.Checkbox(False, label="Style Ext enabled", elem_id=self.elem_id("enabled"))
            word = gr.Textbox("glowing", label="Style word", elem_id=self.elem_id("word"))
        self.infotext_fields = [(word, "Style Ext")]  # pasting an infotext fills the word back in
        return [enabled, word]

    def process(self, p, enabled, word):
        if enabled:
            p.all_prompts = [f"{x}, {word}" for x in p.all_prompts]
            p.extra_generation_params["Style Ext"] = word

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") == "txt2img_width":
            SEEN["width"] = True


def on_ui_settings():
    section = ("style_ext", "Style Ext")
    shared.opts.add_option("style_ext_word", shared.OptionInfo("neon", "Style Ext default word", section=section))
    shared.opts.add_option("style_ext_flip", shared.OptionInfo(False, "Style Ext flips the latent every step",
                                                               gr.Checkbox, section=section))


def on_app_started(demo, app):
    import order_log
    order_log.ORDER.append("style_ext")

    @app.get("/style-ext/ping")
    def ping():
        return {"ok": True, "word": shared.opts.style_ext_word, "saw_width": SEEN["width"],
                "basedir": scripts.basedir(), "order": order_log.ORDER}


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.Markdown("Hello from Style Ext", elem_id="style_ext_hello")
    return [(tab, "Style Ext", "style_ext")]


def on_cfg_denoiser(params):
    if shared.opts.style_ext_flip:
        params.x = params.x.flip(-1)


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_cfg_denoiser(on_cfg_denoiser)


def on_infotext_pasted(infotext, params):
    if "Style Ext" in params:
        params["Style Ext"] = params["Style Ext"].upper()


script_callbacks.on_infotext_pasted(on_infotext_pasted)
'''

BASE = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 9}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Server:
    data = tmp_path_factory.mktemp("a1111ext")
    ext = data / "extensions" / "style-ext" / "scripts"
    ext.mkdir(parents=True)
    (ext / "style_ext.py").write_text(textwrap.dedent(EXTENSION), encoding="utf-8")
    # a later file whose app_started callback metadata.ini moves before style_ext.py's
    (ext.parent / "order_log.py").write_text("ORDER = []\n", encoding="utf-8")
    (ext / "zz_late.py").write_text(textwrap.dedent('''
        from modules import script_callbacks
        import order_log

        script_callbacks.on_app_started(lambda demo, app: order_log.ORDER.append("zz_late"), name="early")
    '''), encoding="utf-8")
    (ext.parent / "metadata.ini").write_text(
        "[callbacks/style-ext/zz_late.py/app_started/early]\nBefore = style-ext/style_ext.py/app_started\n",
        encoding="utf-8")
    # a second extension, written against the native API exactly as the README's example
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("extensions/my-ext/scripts/shout.py`\n\n```python\n", 1)[1].split("```", 1)[0]
    shout = data / "extensions" / "my-ext" / "scripts"
    shout.mkdir(parents=True)
    (shout / "shout.py").write_text(example, encoding="utf-8")
    srv = start_server(data, model_dir, "--ckpt", str(model_dir / "tiny-sd1.safetensors"), nowebui=False)
    wait_for_model(srv)
    yield srv
    stop_server(srv)


def test_route_options_and_component_hook(server: Server) -> None:
    ping = requests.get(server.url + "/style-ext/ping", timeout=10).json()
    assert ping["ok"] and ping["word"] == "neon" and ping["saw_width"]
    assert ping["basedir"].endswith("style-ext")
    assert ping["order"] == ["zz_late", "style_ext"]  # metadata.ini's callback order, not file order
    opts = requests.get(server.api("options"), timeout=10).json()
    assert opts["style_ext_word"] == "neon"
    assert requests.post(server.api("options"), json={"style_ext_word": "blue"}, timeout=10).status_code == 200
    assert requests.get(server.url + "/style-ext/ping", timeout=10).json()["word"] == "blue"
    saved = json.loads((server.data_dir / "config.json").read_text())
    assert saved["style_ext_word"] == "blue"
    exts = requests.get(server.api("extensions"), timeout=10).json()
    assert [e["name"] for e in exts] == ["my-ext", "style-ext"] and all(e["enabled"] for e in exts)


def test_script_args_and_cfg_callback_change_the_job(server: Server) -> None:
    def gen(**kw: Any) -> tuple[np.ndarray, str]:
        r = requests.post(server.api("txt2img"), json={**BASE, **kw}, timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        return np.asarray(b64_image(body["images"][0]).convert("RGB")), json.loads(body["info"])["infotexts"][0]
    plain, text = gen(alwayson_scripts={"Shout": {"args": [False]}})
    assert text.startswith("a red circle\n")
    _, shouted = gen()  # the README's native example is on by default
    assert shouted.startswith("A RED CIRCLE\n") and "Shout: True" in shouted
    styled, text = gen(alwayson_scripts={"style ext": {"args": [True, "glowing"]}, "shout": {"args": [False]}})
    assert text.startswith("a red circle, glowing\n") and "Style Ext: glowing" in text
    requests.post(server.api("options"), json={"style_ext_flip": True}, timeout=10)
    try:
        flipped, _ = gen(alwayson_scripts={"Shout": {"args": [False]}})
    finally:
        requests.post(server.api("options"), json={"style_ext_flip": False}, timeout=10)
    assert not np.array_equal(flipped, plain)
    again, _ = gen(alwayson_scripts={"Shout": {"args": [False]}})
    assert np.array_equal(again, plain)


@pytest.mark.browser
@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_page_shows_the_extension_and_its_control_reaches_the_job(server: Server, browser: Any) -> None:
    # the session's chromium (a second sync_playwright in one process fails while it runs)
    with open_page(browser, server.url, timeout_ms=60000) as page:
        page.get_by_role("tab", name="Style Ext", exact=True).click()
        page.wait_for_selector("#style_ext_hello")
        page.get_by_role("tab", name="txt2img", exact=True).click()
        page.locator("#script_txt2img_style_ext_accordion").first.click()
        page.get_by_label("Style Ext enabled").first.check()
        page.locator("#txt2img_prompt textarea").fill("a blue square")
        for elem, v in (("txt2img_width", 64), ("txt2img_height", 64), ("txt2img_steps", 3)):
            box = page.locator(f"#{elem} input[type=number]")
            box.fill(str(v))
            box.press("Enter")
        page.click("#txt2img_generate")
        page.wait_for_function("() => document.querySelector('#txt2img_info') && "
                               "document.querySelector('#txt2img_info').innerText.includes('Style Ext: glowing')",
                               timeout=120000)
        # both ran, in folder order: my-ext (upper-cases) before style-ext (appends its word)
        assert "A BLUE SQUARE, glowing" in page.inner_text("#txt2img_info")
        # pasting an infotext fills the extension's control (its infotext_fields), after its
        # on_infotext_pasted callback changed the value
        page.locator("#txt2img_prompt textarea").fill(
            "a star\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Style Ext: sparkly")
        page.click("#txt2img_paste")
        page.wait_for_function("() => document.querySelector('#script_txt2img_style_ext_word textarea')"
                               ".value === 'SPARKLY'", timeout=30000)
