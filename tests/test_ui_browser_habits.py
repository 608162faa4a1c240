"""Issue 18 point 8, the page as a new user meets it, in a real headless browser against the real
server: the Extras result fits its box, small inputs are scaled up, empty Extra networks tabs name
the folder to fill, an idle page goes quiet, the buttons under the gallery and the Settings tools.

Uses the server, browser and page fixtures of test_ui_browser (a server of its own for this module).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conftest import Server
from test_ui_browser import browser, page, set_number, ui_server

__all__ = ["browser", "page", "ui_server"]  # fixtures used by name

pytestmark = pytest.mark.browser


def small_png(tmp_path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    path = tmp_path / "small.png"
    Image.new("RGB", size, (200, 40, 40)).save(path)
    return path


def shown_size(page: Any, selector: str) -> dict:
    """The drawn size of a picture inside its <img> box under object-fit: contain / scale-down."""
    return page.evaluate("""(sel) => {
      const i = document.querySelector(sel); const r = i.getBoundingClientRect();
      const fit = getComputedStyle(i).objectFit;
      let s = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
      if (fit === 'scale-down' || fit === 'none') s = Math.min(s, 1);
      return {w: i.naturalWidth * s, h: i.naturalHeight * s, boxW: r.width, boxH: r.height,
              natural: i.naturalWidth, fit};
    }""", selector)


def test_extras_result_fits_and_small_inputs_fill_their_box(page: Any, tmp_path: Path) -> None:
    src = small_png(tmp_path)
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras_image input[type=file]").set_input_files(str(src))
    page.wait_for_function("() => { const i = document.querySelector('#extras_image img');"
                           " return i && i.complete && i.naturalWidth === 96; }")
    got = shown_size(page, "#extras_image img")
    # scaled up to the box (it was drawn at its native 96 px in a ~480 px box)
    assert got["w"] > 3 * 96 or got["h"] > 0.9 * got["boxH"], got

    page.click("#extras_generate")  # no upscaler chosen: the picture comes back as it is
    page.wait_for_function("() => { const i = document.querySelector('#extras_gallery .media-button img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    box = page.evaluate("""() => {
      const g = document.querySelector('#extras_gallery').getBoundingClientRect();
      const i = document.querySelector('#extras_gallery .media-button img').getBoundingClientRect();
      const top = document.elementFromPoint(i.left + i.width / 2, i.bottom - 4);
      return {g: [g.top, g.bottom], i: [i.top, i.bottom, i.height], onTop: top && top.tagName};
    }""")
    assert box["g"][0] - 1 <= box["i"][0] and box["i"][1] <= box["g"][1] + 1, box  # not cut off at the bottom
    assert box["i"][2] > 200 and box["onTop"] == "IMG", box
    page.screenshot(path="/tmp/ui_extras.png", full_page=True)

    # PNG Info and img2img show the same small picture filling their boxes
    page.get_by_role("tab", name="PNG Info").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(src))
    page.wait_for_function("() => { const i = document.querySelector('#pnginfo_image img');"
                           " return i && i.complete && i.naturalWidth === 96; }")
    got = shown_size(page, "#pnginfo_image img")
    assert got["w"] > 3 * 96 or got["h"] > 0.9 * got["boxH"], got
    page.get_by_role("tab", name="img2img").click()
    page.locator("#img2img_image input[type=file]").set_input_files(str(src))
    page.wait_for_function("() => { const i = document.querySelector('#img2img_image img');"
                           " return i && i.complete && i.naturalWidth === 96; }")
    got = shown_size(page, "#img2img_image img")
    assert got["w"] > 3 * 96 or got["h"] > 0.9 * got["boxH"], got


def test_empty_extra_networks_tabs_name_the_folder(page: Any, ui_server: Server) -> None:
    page.locator("#txt2img_extra_networks").get_by_text("Extra networks", exact=True).first.click()
    page.get_by_role("tab", name="Lora").click()
    note = page.locator("#txt2img_lora_empty")
    note.wait_for()
    text = note.inner_text()
    assert "No LoRA files" in text and str(ui_server.data_dir / "models" / "Lora") in text and "🔄" in text, text
    page.get_by_role("tab", name="Hypernetworks").click()
    hyper = page.locator("#txt2img_hypernetworks_empty")
    hyper.wait_for()
    assert str(ui_server.data_dir / "models" / "hypernetworks") in hyper.inner_text()
    # the checkpoints tab has cards: no note
    page.get_by_role("tab", name="Checkpoints").click()
    page.locator("#txt2img_checkpoints_cards").get_by_text("tiny-sd1").first.wait_for()
    assert not page.locator("#txt2img_checkpoints_empty").is_visible()


def test_idle_page_reaches_network_idle(page: Any) -> None:
    """No heartbeat stream and no timer left running once the page has loaded and nothing runs."""
    page.wait_for_load_state("networkidle", timeout=20_000)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    time.sleep(4)  # the startup sync timer ticks every second while it runs
    assert not seen, seen
    # and after a generation the page goes quiet again
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    set_number(page, "txt2img_steps", 2)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    page.click("#txt2img_generate")
    page.wait_for_function("() => (document.querySelector('#txt2img_status textarea')?.value || '')"
                           ".startsWith('Time taken')")
    time.sleep(1.5)
    seen.clear()
    time.sleep(3)
    assert not seen, seen
