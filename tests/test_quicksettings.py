"""Issue 18 point 1: the quicksettings row (`quicksettings_list`), the tab order (`ui_tab_order`) and
hidden tabs (`hidden_tabs`), in a real browser against the real server started with a config.json
that sets them, plus the page-build rules on their own (real Settings, real Gradio Blocks)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import pytest
import requests

from conftest import Server, open_page, stop_server, tiny_ui_server
from webui.settings import OPTIONS, OptionInfo, Settings
from webui.ui import settings_pages
from webui.ui.quicksettings import arrange_tabs, register_options, row_keys, row_label
from webui.ui.settings_tab import SettingsTab

ROW = ["sd_model_checkpoint", "CLIP_stop_at_last_layers", "sd_vae"]
CONFIG = {"quicksettings_list": ROW, "hidden_tabs": ["Train", "Settings"], "ui_tab_order": ["Extras", "img2img"]}


class _App:
    """What the page-build rules read of the app: its Settings (a real one on a real file)."""

    def __init__(self, path: Path, values: dict[str, Any]) -> None:
        path.write_text(json.dumps(values), encoding="utf-8")
        self.settings = Settings.load(path)


# ---------------------------------------------------------------- page-build rules

def test_row_keys_keep_the_list_order_once_and_skip_unknown_keys(tmp_path: Path) -> None:
    app = _App(tmp_path / "config.json", {"quicksettings_list": [
        "sd_vae", "no_such_option", "CLIP_stop_at_last_layers", "sd_vae", "disabled_extensions"]})
    assert row_keys(app) == ["sd_vae", "CLIP_stop_at_last_layers"]  # type: ignore[arg-type]
    assert app.settings.get("quicksettings_list")[1] == "no_such_option"  # kept for when it is known again
    fresh = _App(tmp_path / "other.json", {})
    assert row_keys(fresh) == ["sd_model_checkpoint"]  # type: ignore[arg-type]  # A1111's default
    assert row_label("SD VAE (Automatic: <checkpoint>.vae.* if present)") == "SD VAE"


def test_the_list_offers_every_option_extensions_included(tmp_path: Path) -> None:
    app = _App(tmp_path / "config.json", {"quicksettings_list": ["sd_model_checkpoint", "myext_strength"]})
    assert row_keys(app) == ["sd_model_checkpoint"]  # type: ignore[arg-type]  # not registered yet
    app.settings.register_option("myext_strength", OptionInfo(0.5, "Strength", "My extension", "slider",
                                                              minimum=0.0, maximum=1.0, step=0.05))
    register_options(app)  # type: ignore[arg-type]  # at page build, after extensions' on_ui_settings
    choices = app.settings.options["quicksettings_list"].choices
    assert "myext_strength" in choices and "CLIP_stop_at_last_layers" in choices and "sd_vae" in choices
    assert "disabled_extensions" not in choices  # the Extensions tab's, as in the Settings tab
    assert row_keys(app) == ["sd_model_checkpoint", "myext_strength"]  # type: ignore[arg-type]


def test_tab_order_and_hidden_tabs_at_page_build(tmp_path: Path) -> None:
    app = _App(tmp_path / "config.json", {"ui_tab_order": ["Settings", "Beta", "Gone"],
                                          "hidden_tabs": ["Alpha", "Settings"]})
    with gr.Blocks():
        with gr.Tabs(selected="alpha") as tabs:
            for name in ("Alpha", "Beta", "Gamma", "Settings"):
                with gr.Tab(name, id=name.lower()):
                    gr.Markdown(name)
        lists = {key: gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True)
                 for key in ("ui_tab_order", "hidden_tabs")}  # the Settings tab's, built before the tabs
        shown = arrange_tabs(app, tabs, SettingsTab(lists, None, None))  # type: ignore[arg-type]
    assert [t.label for t in tabs.children] == ["Settings", "Beta", "Alpha", "Gamma"]
    assert shown == ["Settings", "Beta", "Gamma"]  # Alpha hidden; Settings cannot be
    assert [t.visible for t in tabs.children] == [True, True, False, True]
    assert tabs.selected == "settings"  # the page opens on the first tab shown, as A1111's
    # the Settings lists offer the tabs found (and keep a chosen one that is gone)
    assert app.settings.options["hidden_tabs"].choices == ("Alpha", "Beta", "Gamma", "Settings")
    assert "Gone" in app.settings.options["ui_tab_order"].choices
    assert [c[1] for c in lists["hidden_tabs"].choices] == ["Alpha", "Beta", "Gamma", "Settings"]


def test_settings_tab_copies_of_row_options_get_their_own_ids() -> None:
    """The row has A1111's `setting_<key>`; the Settings tab's copy is `settings_page_<key>`, and its
    search and section list show and hide that one (with the VAE's 🔄)."""
    keys = ["sd_vae", "CLIP_stop_at_last_layers", "grid_save"]
    entries = settings_pages.search_entries(OPTIONS, keys, ["sd_vae", "CLIP_stop_at_last_layers"])
    assert set(entries) == {"settings_page_sd_vae", "settings_page_CLIP_stop_at_last_layers", "setting_grid_save"}
    js = settings_pages.filter_js(entries, {"Stable Diffusion": keys}, ["sd_vae"])
    assert '"settings_page_sd_vae": "settings_page_refresh_sd_vae"' in js
    assert '"setting_sd_vae": "refresh_sd_vae"' in settings_pages.filter_js(entries, {"Stable Diffusion": keys})


# ---------------------------------------------------------------- in the browser

@pytest.fixture(scope="module")
def qs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = tiny_ui_server(tmp_path_factory.mktemp("qsdata"), config=CONFIG)
    yield server
    stop_server(server)


@pytest.fixture
def page(browser: Any, qs_server: Server) -> Iterator[Any]:
    with open_page(browser, qs_server.url, "#quicksettings #setting_sd_model_checkpoint") as pg:
        pg.wait_for_load_state("networkidle")  # the page-load event has filled the row in
        yield pg


def options(server: Server) -> dict:
    return requests.get(server.api("options"), timeout=10).json()


def wait_until(check: Any, timeout: float = 20) -> Any:
    deadline = time.time() + timeout
    while True:
        got = check()
        if got or time.time() > deadline:
            return got
        time.sleep(0.2)


def tab_names(page: Any) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#tabs button[role=tab][id^=tab_]')]"
                         ".filter(b => b.offsetParent !== null).map(b => b.innerText.trim())")


@pytest.mark.browser
def test_row_shows_the_listed_options_and_tabs_follow_the_options(page: Any, qs_server: Server) -> None:
    selected = page.locator("#tabs button[role=tab][id^=tab_][aria-selected=true]").inner_text().strip()
    assert selected == "Extras"  # the page opens on the first tab of ui_tab_order
    ids = page.evaluate("() => [...document.querySelectorAll('#quicksettings [id]')]"
                        ".filter(e => e.offsetParent !== null).map(e => e.id)"
                        ".filter(i => i.startsWith('setting_') || i.startsWith('refresh_'))")
    assert ids == ["setting_sd_model_checkpoint", "refresh_sd_model_checkpoint", "setting_CLIP_stop_at_last_layers",
                   "setting_sd_vae", "refresh_sd_vae"], ids
    assert page.locator("#setting_CLIP_stop_at_last_layers input[type=range]").count() == 1  # a slider, as in Settings
    assert page.locator("#setting_CLIP_stop_at_last_layers").inner_text().startswith("Clip skip")
    page.locator("#setting_sd_vae input").click()  # the VAE choices, as in the Settings tab
    listed = page.locator("ul[role=listbox] li").all_inner_texts()
    assert [x.replace("✓", "").strip() for x in listed[:2]] == ["Automatic", "None"], listed
    page.keyboard.press("Escape")
    assert page.locator("#sd_checkpoint_status").count() == 1
    # no element id twice: the Settings tab's copies are settings_page_<key>
    page.get_by_role("tab", name="Settings").click()
    page.locator("#settings_page_CLIP_stop_at_last_layers").wait_for()
    assert page.locator("#settings_page_refresh_sd_vae").count() == 1
    dup = page.evaluate("() => { const ids = [...document.querySelectorAll('[id]')].map(e => e.id)"
                        ".filter(i => /^(setting_|settings_page_|refresh_)/.test(i));"
                        " return ids.filter((x, i) => ids.indexOf(x) !== i); }")
    assert not dup, dup

    served = options(qs_server)  # A1111's keys, as config.json holds them
    assert served["quicksettings_list"] == ROW and served["hidden_tabs"] == ["Train", "Settings"]
    assert served["ui_tab_order"] == ["Extras", "img2img"]
    names = tab_names(page)
    assert names[:3] == ["Extras", "img2img", "txt2img"], names  # ui_tab_order first, then the rest in order
    assert "Train" not in names and "PNG Info" in names  # hidden_tabs
    assert "Settings" in names  # cannot be hidden


@pytest.mark.browser
def test_clip_skip_from_the_row_applies_saves_and_reaches_the_infotext(page: Any, qs_server: Server) -> None:
    config = qs_server.data_dir / "config.json"
    try:
        box = page.locator("#setting_CLIP_stop_at_last_layers input[type=number]")
        box.fill("2")
        box.press("Tab")  # a slider applies when released / left, as in A1111
        assert wait_until(lambda: options(qs_server)["CLIP_stop_at_last_layers"] == 2)
        assert json.loads(config.read_text(encoding="utf-8"))["CLIP_stop_at_last_layers"] == 2  # saved at once

        # the Settings tab's own control shows it without a reload
        page.get_by_role("tab", name="Settings").click()
        copy = page.locator("#settings_page_CLIP_stop_at_last_layers input[type=number]")
        page.wait_for_function("() => document.querySelector("
                               "'#settings_page_CLIP_stop_at_last_layers input[type=number]')?.value === '2'")
        assert copy.input_value() == "2"

        # a picture generated from the page afterwards says so in its infotext
        page.get_by_role("tab", name="txt2img").click()
        page.locator("#txt2img_prompt textarea").fill("a red circle")
        for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
            field = page.locator(f"#{elem} input[type=number]")
            field.fill(str(value))
            field.press("Enter")
        page.click("#txt2img_generate")
        page.wait_for_function("() => (document.querySelector('#txt2img_info')?.innerText || '')"
                               ".includes('Steps: 2')", timeout=120_000)
        info = page.inner_text("#txt2img_info")
        assert "Clip skip: 2" in info, info

        # the other way: the Settings tab's Apply shows its value in the row
        page.get_by_role("tab", name="Settings").click()
        copy.fill("3")
        copy.press("Enter")
        page.click("#settings_submit")
        page.wait_for_function("() => document.querySelector("
                               "'#setting_CLIP_stop_at_last_layers input[type=number]').value === '3'")
        assert options(qs_server)["CLIP_stop_at_last_layers"] == 3
    finally:
        requests.post(qs_server.api("options"), json={"CLIP_stop_at_last_layers": 1}, timeout=10)


@pytest.mark.browser
@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_list_change_shows_after_reload_ui_and_a_bad_number_is_refused(page: Any, qs_server: Server) -> None:
    config = qs_server.data_dir / "config.json"
    r = requests.post(qs_server.api("options"),
                      json={"quicksettings_list": ROW + ["generation_max_pixels"]}, timeout=10)
    assert r.status_code == 200, r.text
    try:
        page.reload()
        page.wait_for_selector("#quicksettings #setting_sd_vae")
        assert page.locator("#setting_generation_max_pixels").count() == 0  # only a rebuilt page reads it

        page.get_by_role("tab", name="Settings").click()
        page.click("#settings_reload_ui")  # the page reloads itself once the new UI is served
        page.wait_for_selector("#quicksettings #setting_generation_max_pixels", timeout=120_000)
        page.wait_for_load_state("networkidle")

        before = options(qs_server)["generation_max_pixels"]
        box = page.locator("#setting_generation_max_pixels input")
        box.fill("100")
        box.press("Enter")
        toast = page.locator(".toast-body", has_text="Maximum pixels")
        toast.wait_for()
        assert "100 is below the minimum 4096" in toast.inner_text()
        page.wait_for_function("(v) => document.querySelector('#setting_generation_max_pixels input').value === v",
                               arg=str(before))  # the old value is shown again
        assert options(qs_server)["generation_max_pixels"] == before
        assert "generation_max_pixels" not in json.loads(config.read_text(encoding="utf-8"))

        box.fill("1048576")  # a good value is applied and saved
        box.press("Enter")
        assert wait_until(lambda: options(qs_server)["generation_max_pixels"] == 1048576)
        assert json.loads(config.read_text(encoding="utf-8"))["generation_max_pixels"] == 1048576
    finally:
        requests.post(qs_server.api("options"), json={"quicksettings_list": ROW, "generation_max_pixels": None},
                      timeout=10)
