"""The buttons under the Extras result, as A1111's output panel there: 📂 and Send to img2img /
inpaint / extras (no 💾 / 🗜️), in a real headless browser against the real server (no checkpoint:
Extras needs none).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image, PngImagePlugin

from conftest import Server, open_page, start_server, stop_server

# ~1.5 min with its own server: run with `-m slow`
pytestmark = [pytest.mark.browser, pytest.mark.slow]

PARAMS = "a blue square\nNegative prompt: murky\nSteps: 7, Sampler: Euler, CFG scale: 5.5, Seed: 4321, Size: 96x64"


@pytest.fixture(scope="module")
def extras_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("extrasbuttons")
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as mp:
        # no desktop for the server: 📂 then shows the folder's path instead of starting a file manager
        mp.delenv("DISPLAY", raising=False)
        mp.delenv("WAYLAND_DISPLAY", raising=False)
        server = start_server(data_dir, ckpt_dir, nowebui=False)
    yield server
    stop_server(server)


@pytest.fixture
def page(browser: Any, extras_server: Server) -> Iterator[Any]:
    with open_page(browser, extras_server.url) as pg:
        yield pg


def _upscale_once(page: Any, tmp_path: Path, size: tuple[int, int] = (96, 64)) -> None:
    """Upload a small PNG carrying generation parameters and press Generate with no upscaler (the
    picture comes back at its size, saved in the Extras folder)."""
    src = tmp_path / "source.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", PARAMS)
    Image.new("RGB", size, (30, 60, 220)).save(src, pnginfo=meta)
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras_image input[type=file]").set_input_files(str(src))
    page.wait_for_function("(w) => { const i = document.querySelector('#extras_image img');"
                           " return i && i.complete && i.naturalWidth === w; }", arg=size[0])
    page.click("#extras_generate")
    page.wait_for_function("() => { const i = document.querySelector('#extras_gallery .media-button img');"
                           " return i && i.complete && i.naturalWidth > 0; }")


def test_row_matches_a1111(page: Any) -> None:
    page.get_by_role("tab", name="Extras").click()  # a tab's contents are drawn when it is first shown
    page.locator("#extras_open_folder").wait_for()
    ids = page.evaluate("() => [...document.querySelectorAll('#extras_gallery_buttons button')].map(b => b.id)")
    assert ids == ["extras_open_folder", "extras_send_to_img2img", "extras_send_to_inpaint", "extras_send_to_extras"]
    assert page.locator("#save_extras, #save_zip_extras, #download_files_extras").count() == 0


def test_send_result_to_img2img_with_its_parameters(page: Any, tmp_path: Path) -> None:
    _upscale_once(page, tmp_path)
    page.click("#extras_send_to_img2img")
    page.wait_for_function("() => { const i = document.querySelector('#img2img_image img');"
                           " return i && i.complete && i.naturalWidth === 96 && i.naturalHeight === 64; }")
    assert page.get_by_role("tab", name="img2img", exact=True).first.get_attribute("aria-selected") == "true"
    assert page.locator("#img2img_prompt textarea").input_value() == "a blue square"
    assert page.locator("#img2img_neg_prompt textarea").input_value() == "murky"
    assert page.locator("#img2img_steps input[type=number]").input_value() == "7"
    assert page.locator("#img2img_seed input").input_value() == "4321"
    assert page.locator("#img2img_width input[type=number]").input_value() == "96"  # send_size: the picture's


def test_send_result_to_inpaint_and_back_to_extras(page: Any, tmp_path: Path) -> None:
    _upscale_once(page, tmp_path, (80, 48))
    page.click("#extras_send_to_inpaint")
    page.locator("#img2maskimg canvas").first.wait_for(state="visible")  # the Inpaint sub-tab is open
    assert page.locator("#img2img_prompt textarea").input_value() == "a blue square"

    # 📐 on Extras itself puts the result back into the Source box (A1111 has it there too: chain passes)
    page.get_by_role("tab", name="Extras").click()
    other = tmp_path / "other.png"
    Image.new("RGB", (50, 50), (0, 0, 0)).save(other)
    page.locator("#extras_image input[type=file]").set_input_files(str(other))
    page.wait_for_function("() => { const i = document.querySelector('#extras_image img');"
                           " return i && i.complete && i.naturalWidth === 50; }")
    page.click("#extras_send_to_extras")
    page.wait_for_function("() => { const i = document.querySelector('#extras_image img');"
                           " return i && i.complete && i.naturalWidth === 80 && i.naturalHeight === 48; }")


def test_open_folder_shows_where_the_result_was_saved(page: Any, tmp_path: Path, extras_server: Server) -> None:
    folder = extras_server.data_dir / "outputs" / "extras-images"
    before = set(folder.glob("*.png")) if folder.is_dir() else set()
    _upscale_once(page, tmp_path, (72, 40))
    deadline = time.time() + 10
    while not (set(folder.glob("*.png")) - before) and time.time() < deadline:
        time.sleep(0.1)
    new = set(folder.glob("*.png")) - before
    assert len(new) == 1, new
    with Image.open(new.pop()) as im:
        assert im.size == (72, 40) and im.info["parameters"] == PARAMS
    page.click("#extras_open_folder")
    page.wait_for_function("(p) => document.querySelector('#extras_gallery_note').innerText"
                           ".includes('Images are saved in ' + p)", arg=str(folder))


def test_hide_ui_dir_config_hides_the_folder_button(tmp_path: Path) -> None:
    """--hide-ui-dir-config keeps server paths off the page: 📂 is left out under Extras as under
    txt2img (the page's config says so; no browser needed)."""
    import requests
    ckpt_dir = tmp_path / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    server = start_server(tmp_path, ckpt_dir, "--hide-ui-dir-config", nowebui=False)
    try:
        config = requests.get(server.url + "/config", timeout=30).json()
    finally:
        stop_server(server)
    shown = {c["props"].get("elem_id"): c["props"].get("visible") for c in config["components"]}
    assert shown["extras_open_folder"] is False and shown["txt2img_open_folder"] is False
    assert shown["extras_send_to_img2img"] is not False
