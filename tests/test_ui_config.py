"""Saved UI defaults (A1111's ui-config.json): the registry on a real Gradio page, then the real
server in a real browser: the page starts from the file, Settings → Defaults lists and writes
changes, restarts keep them, and a broken file is neither used nor overwritten."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import pytest

from conftest import BROWSER_TIMEOUT_MS, Server, start_server, stop_server, wait_for_model
from webui.ui.ui_config import UiDefaults, mark_script_controls, register_page


# ---------------------------------------------------------------- the registry on a built page (no server)

class _Script:
    filename = "/somewhere/extensions/my-ext/scripts/my_script.py"

    def title(self) -> str:
        return "Mine"


def _page(defaults: UiDefaults) -> dict[str, Any]:
    with gr.Blocks() as demo:
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                c = {"steps": gr.Slider(1, 150, value=20, step=1, label="Sampling steps"),
                     "sampler": gr.Dropdown(["Euler", "DPM++ 2M"], value="DPM++ 2M", label="Sampling method"),
                     "styles": gr.Dropdown(["a", "b"], value=[], multiselect=True, label="Styles"),
                     "prompt": gr.Textbox(label="Prompt"),
                     "seed": gr.Number(value=-1, precision=0, label="Seed"),
                     "hr": gr.Checkbox(False, label="Hires. fix"),
                     "mode": gr.Radio(["x", "y"], value="x", type="index", label="Mode"),
                     "go": gr.Button("Generate"),
                     "hidden": gr.Textbox("h", label="Hidden", visible=False)}
                with gr.Accordion("Script", open=False):  # an accordion adds nothing to the key (A1111)
                    c["script"] = gr.Checkbox(False, label="Enable")
                mark_script_controls(_Script(), [c["script"]])
                with gr.Tabs(elem_id="inner") as inner:
                    with gr.Tab("One", id="one"):
                        pass
                    with gr.Tab("Two", id="two"):
                        pass
                c["inner"] = inner
            with gr.Tab("Settings", id="settings"):
                c["option"] = gr.Checkbox(True, label="An option")
        register_page(defaults, tabs)
        c["tabs"], c["demo"] = tabs, demo
    return c


def test_saved_values_apply_and_bad_ones_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ui-config.json"
    saved = {
        "txt2img/Sampling steps/value": 7, "txt2img/Sampling steps/maximum": 200,
        "txt2img/Sampling method/value": "Nope",  # not a choice
        "txt2img/Styles/value": ["b"],
        "txt2img/Prompt/value": 12,  # A1111 turns a number into the box's text
        "txt2img/Seed/value": "many",  # wrong type
        "txt2img/Hires. fix/value": "yes",  # wrong type
        "txt2img/Mode/value": "y",
        "txt2img/Generate/visible": False,
        "customscript/my_script.py/txt2img/Enable/value": True,
        "txt2img/Tabs@inner/selected": "two",
        "webui/Tabs@tabs/selected": "nowhere",
        "settings/An option/value": False,  # the Settings tab is not saved
        "img2img/Something gone/value": 3,  # a key without a control is kept
    }
    path.write_text(json.dumps(saved), encoding="utf-8")
    defaults = UiDefaults(path)
    with caplog.at_level(logging.INFO, logger="webui.ui.ui_config"):
        c = _page(defaults)
    assert (c["steps"].value, c["steps"].maximum, c["steps"].minimum) == (7, 200, 1)
    assert c["sampler"].value == "DPM++ 2M" and c["seed"].value == -1 and c["hr"].value is False
    assert c["styles"].value == ["b"] and c["prompt"].value == "12" and c["mode"].value == "y"
    assert c["go"].visible is False and c["script"].value is True and c["inner"].selected == "two"
    assert c["tabs"].selected is None and c["option"].value is True
    warned = caplog.text
    assert "Sampling method/value" in warned and "Seed/value" in warned and "Hires. fix/value" in warned
    assert "Tabs@tabs/selected" in warned

    assert defaults.dump_defaults()
    written = json.loads(path.read_text(encoding="utf-8"))
    assert {k: written[k] for k in saved} == saved  # the user's keys untouched, bad ones included
    assert written["txt2img/Sampling steps/step"] == 1 and written["txt2img/Seed/visible"] is True
    assert written["txt2img/Hidden/value"] == "h" and "txt2img/Hidden/visible" not in written  # built hidden
    assert not any(k.startswith("settings/") for k in written if k not in saved)
    assert not any(k.startswith("txt2img/Script") for k in written)  # accordion labels are not keys

    # the config served to a new page carries the saved values
    props = {comp["id"]: comp["props"] for comp in c["demo"].get_config_file()["components"]}
    assert props[c["steps"]._id]["value"] == 7 and props[c["steps"]._id]["maximum"] == 200

    # the Defaults page compares the page's values with the file and writes the changed ones
    values = [{"txt2img/Sampling steps/value": 9.0, "txt2img/Mode/value": 0}.get(k, comp.value)
              for k, comp in defaults.mapping.items()]
    changes = {k: (old, new) for k, old, new in defaults.changes(written, tuple(values))}
    assert changes["txt2img/Sampling steps/value"] == (7, 9) and changes["txt2img/Mode/value"] == ("y", "x")
    config = c["demo"].get_config_file()
    assert defaults.apply(tuple(values), config) >= 2
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["txt2img/Sampling steps/value"] == 9 and after["txt2img/Mode/value"] == "x"
    assert after["img2img/Something gone/value"] == 3
    props = {comp["id"]: comp["props"] for comp in config["components"]}
    assert props[c["steps"]._id]["value"] == 9 and c["steps"].value == 9


def test_out_of_range_and_inverted_ranges_keep_the_built_slider(tmp_path: Path) -> None:
    path = tmp_path / "ui-config.json"
    path.write_text(json.dumps({"txt2img/Sampling steps/value": 500, "txt2img/Sampling steps/step": -1,
                                "txt2img/Seed/value": 5.0}), encoding="utf-8")
    c = _page(UiDefaults(path))
    assert (c["steps"].value, c["steps"].step) == (20, 1) and c["seed"].value == 5

    path.write_text(json.dumps({"txt2img/Sampling steps/minimum": 100, "txt2img/Sampling steps/maximum": 10}),
                    encoding="utf-8")
    c = _page(UiDefaults(path))
    assert (c["steps"].minimum, c["steps"].maximum) == (1, 150)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_an_unreadable_file_is_not_used_nor_overwritten(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ui-config.json"
    path.write_text(text, encoding="utf-8")
    defaults = UiDefaults(path)
    c = _page(defaults)
    assert defaults.error_loading and c["steps"].value == 20
    assert not defaults.dump_defaults() and path.read_text(encoding="utf-8") == text


def test_a_new_file_gets_every_default(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ui-config.json"
    defaults = UiDefaults(path)
    _page(defaults)
    assert defaults.dump_defaults()
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["txt2img/Sampling steps/value"] == 20 and written["txt2img/Prompt/value"] == ""
    assert written["customscript/my_script.py/txt2img/Enable/value"] is False
    assert written["txt2img/Tabs@inner/selected"] is None and written["webui/Tabs@tabs/selected"] is None
    assert not defaults.dump_defaults()
    again = UiDefaults(path)  # the next start finds nothing new: the file is left alone
    _page(again)
    assert again.from_file == written and not again.dump_defaults()


def _sized_page(defaults: UiDefaults) -> Any:
    with gr.Blocks():
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("txt2img", id="txt2img"):
                width = gr.Slider(64, 2048, value=1024, step=8, label="Width")  # an SDXL model's native size
        register_page(defaults, tabs)
    return width


def test_model_sized_controls_keep_following_the_model(tmp_path: Path) -> None:
    path = tmp_path / "ui-config.json"
    sized = {"txt2img/Width/value": 512}
    defaults = UiDefaults(path, sized)
    width = _sized_page(defaults)
    defaults.dump_defaults()
    assert json.loads(path.read_text(encoding="utf-8"))["txt2img/Width/value"] == 512 and width.value == 1024
    again = UiDefaults(path, sized)
    width = _sized_page(again)
    assert width.value == 1024  # A1111's 512 in the file: the page keeps the model's size
    assert list(again.changes(again.from_file, (1024,))) == []  # and that is no change to save
    assert list(again.changes(again.from_file, (768,))) == [("txt2img/Width/value", 512, 768)]
    path.write_text(json.dumps({"txt2img/Width/value": 320}), encoding="utf-8")
    assert _sized_page(UiDefaults(path, sized)).value == 320  # a size of one's own wins


# ---------------------------------------------------------------- the real server in a browser

SAVED = {"txt2img/Sampling steps/value": 7, "txt2img/Sampling steps/maximum": 200, "txt2img/Width/value": 320,
         "txt2img/Sampling method/value": "No such sampler"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("uiconfig")
    ckpt_dir = d / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    make_tiny_checkpoint(ckpt_dir / "tiny-sd1.safetensors", family="sd1")
    (d / "ui-config.json").write_text(json.dumps(SAVED), encoding="utf-8")
    return d


def _start(data_dir: Path) -> Server:
    server = start_server(data_dir, data_dir / "models" / "Stable-diffusion", nowebui=False)
    wait_for_model(server)
    return server


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[Server]:
    srv = _start(data_dir)
    yield srv
    stop_server(srv)


def _open(browser: Any, server: Server) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(server.url + "/")
    page.wait_for_selector("#txt2img_steps input[type=number]")
    return page


def _number(page: Any, elem_id: str) -> float:
    return float(page.input_value(f"#{elem_id} input[type=number]"))


def _sampler(page: Any) -> str:
    return page.input_value("#txt2img_sampling input")


@pytest.mark.browser
@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_the_page_starts_from_the_file_and_generates_with_it(browser: Any, server: Server, data_dir: Path) -> None:
    page = _open(browser, server)
    try:
        assert _number(page, "txt2img_steps") == 7 and _number(page, "txt2img_width") == 320
        assert page.get_attribute("#txt2img_steps input[type=range]", "max") == "200"
        assert _sampler(page) == "DPM++ 2M"  # the saved sampler is not a choice: the built default
        page.click("#txt2img_generate")
        page.wait_for_function("() => (document.querySelector('#txt2img_info') || {}).innerText"
                               "?.includes('Steps:')", timeout=240_000)  # a shared CPU can be slow
        info = page.inner_text("#txt2img_info")
        assert "Steps: 7," in info and "Size: 320x" in info, info
    finally:
        page.context.close()
    written = json.loads((data_dir / "ui-config.json").read_text(encoding="utf-8"))
    assert {k: written[k] for k in SAVED} == SAVED  # the user's values stay, the bad one included
    assert written["txt2img/CFG Scale/value"] == 7.0 and written["img2img/Denoising strength/value"] == 0.75
    assert written["customscript/xyz_grid.py/txt2img/X type/value"] == "Seed"
    assert "settings/Apply settings/visible" not in written
    assert written["txt2img/Height/value"] == written["img2img/Width/value"] == 512  # A1111's, not the model's


@pytest.mark.browser
@pytest.mark.slow  # restarts the server
def test_defaults_page_lists_and_writes_changes_that_survive_a_restart(browser: Any, server: Server,
                                                                       data_dir: Path) -> None:
    page = _open(browser, server)
    try:
        box = page.locator("#txt2img_cfg_scale input[type=number]")
        box.fill("9.5")
        box.press("Enter")
        page.get_by_role("tab", name="Settings").click()
        page.get_by_label("Defaults", exact=True).check()
        page.locator("#ui_defaults_view").wait_for(state="visible")
        page.click("#ui_defaults_view")
        page.wait_for_function("() => document.querySelector('#ui_defaults_review table')")
        rows = page.eval_on_selector_all("#ui_defaults_review tbody tr",
                                         "rs => rs.map(r => [...r.cells].map(c => c.innerText))")
        assert ["txt2img/CFG Scale/value", "7.0", "9.5"] in rows, rows
        assert not any(r[0] == "txt2img/Sampling steps/value" for r in rows)  # unchanged: not listed
        page.click("#ui_defaults_apply")
        page.wait_for_function("() => document.querySelector('#ui_defaults_review').innerText.includes('Wrote')")
    finally:
        page.context.close()
    written = json.loads((data_dir / "ui-config.json").read_text(encoding="utf-8"))
    assert written["txt2img/CFG Scale/value"] == 9.5 and written["txt2img/Sampling steps/value"] == 7

    page = _open(browser, server)  # a new page starts from the new default
    try:
        assert _number(page, "txt2img_cfg_scale") == 9.5 and _number(page, "txt2img_steps") == 7
    finally:
        page.context.close()

    stop_server(server)
    server.__dict__.update(_start(data_dir).__dict__)  # the module's server, restarted
    page = _open(browser, server)
    try:
        assert _number(page, "txt2img_cfg_scale") == 9.5 and _number(page, "txt2img_steps") == 7
        assert _number(page, "txt2img_width") == 320
    finally:
        page.context.close()


@pytest.mark.browser
@pytest.mark.slow  # a server of its own
def test_a_broken_file_leaves_the_built_defaults_and_stays_as_it_is(browser: Any, server: Server,
                                                                    data_dir: Path) -> None:
    path = data_dir / "ui-config.json"
    broken = '{"txt2img/Sampling steps/value": 7,'
    path.write_text(broken, encoding="utf-8")
    stop_server(server)
    server.__dict__.update(_start(data_dir).__dict__)
    page = _open(browser, server)
    try:
        assert _number(page, "txt2img_steps") == 20 and _number(page, "txt2img_cfg_scale") == 7
        page.get_by_role("tab", name="Settings").click()
        page.get_by_label("Defaults", exact=True).check()
        page.click("#ui_defaults_apply")
        page.wait_for_function("() => document.querySelector('#ui_defaults_review').innerText.includes('cannot be read')")
    finally:
        page.context.close()
    assert path.read_text(encoding="utf-8") == broken
    assert "ui-config.json not read" in server.log.read_text(encoding="utf-8")
