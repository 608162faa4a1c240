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
from test_ui_browser import page, set_number, ui_server

__all__ = ["page", "ui_server"]  # fixtures used by name (browser comes from conftest)

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


def _generate_two(page: Any) -> str:
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    page.locator("#txt2img_neg_prompt textarea").fill("blurry")
    set_number(page, "txt2img_steps", 3)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    set_number(page, "txt2img_batch_size", 2)
    page.click("#txt2img_generate")
    page.wait_for_function("() => (document.querySelector('#txt2img_status textarea')?.value || '')"
                           ".startsWith('Time taken')")
    return page.inner_text("#txt2img_info")


def test_gallery_buttons_folder_save_zip(page: Any, ui_server: Server) -> None:
    import csv
    import io
    import os
    import re
    import zipfile

    text = _generate_two(page)
    seed = int(re.search(r"Seed: (\d+)", text)[1])
    # 📂: this headless server has no desktop, so the page is told where the images are
    page.click("#txt2img_open_folder")
    day = ui_server.data_dir / "outputs" / "txt2img-images" / time.strftime("%Y-%m-%d")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        page.wait_for_function("(p) => document.querySelector('#txt2img_gallery_note').innerText.includes(p)",
                               arg=str(day))

    # 💾 with the grid shown (selected): every picture goes to log/images, one log.csv row
    saved_dir = ui_server.data_dir / "log" / "images"
    page.click("#save_txt2img")
    page.wait_for_function("() => document.querySelector('#txt2img_gallery_note').innerText.includes('Saved')")
    names = sorted(p.name for p in saved_dir.glob("*.png"))
    assert len(names) == 3 and any(n.startswith("grid-") for n in names) and any(n.endswith(f"-{seed}.png")
                                                                                  for n in names), names
    rows = list(csv.reader(open(saved_dir / "log.csv", encoding="utf-8")))
    assert rows[0][:3] == ["prompt", "seed", "width"] and rows[1][0] == "a red circle" and rows[1][8] == "blurry"
    links = page.locator("#download_files_txt2img a")
    links.first.wait_for()
    assert links.count() == 3
    with Image.open(saved_dir / [n for n in names if n.endswith(f"-{seed}.png")][0]) as im:
        assert f"Seed: {seed}" in im.info["parameters"]

    # 🗜️: a zip of the whole result, offered for download
    page.click("#save_zip_txt2img")
    page.wait_for_function("() => [...document.querySelectorAll('#download_files_txt2img a')]"
                           ".some(a => a.href.endsWith('.zip'))")
    href = page.evaluate("() => [...document.querySelectorAll('#download_files_txt2img a')]"
                         ".find(a => a.href.endsWith('.zip')).href")
    resp = page.request.get(href)
    assert resp.ok
    with zipfile.ZipFile(io.BytesIO(resp.body())) as z:
        inside = z.namelist()
    assert len(inside) == 3 and any(n.endswith(f"-{seed}.png") for n in inside), inside
    assert list(saved_dir.glob("*.zip"))


@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_gallery_send_to_img2img_inpaint_extras(page: Any) -> None:
    import re

    text = _generate_two(page)
    seed = int(re.search(r"Seed: (\d+)", text)[1])
    # the grid is shown first; Send to takes the first image and its parameters (A1111's paste)
    page.click("#txt2img_send_to_img2img")
    page.wait_for_function("() => { const i = document.querySelector('#img2img_image img');"
                           " return i && i.complete && i.naturalWidth === 64; }")
    assert page.locator("#img2img_prompt textarea").input_value() == "a red circle"
    assert page.locator("#img2img_neg_prompt textarea").input_value() == "blurry"
    assert page.locator("#img2img_steps input[type=number]").input_value() == "3"
    assert page.locator("#img2img_width input[type=number]").input_value() == "64"
    assert page.locator("#img2img_seed input").input_value() == str(seed)

    page.get_by_role("tab", name="txt2img").click()
    page.locator("#txt2img_gallery .thumbnail-item").nth(2).click()  # the second image
    page.click("#txt2img_send_to_inpaint")
    page.locator("#img2maskimg canvas").first.wait_for(state="visible")  # the Inpaint sub-tab is open
    page.wait_for_function("() => !document.querySelector('#img2maskimg').innerText.includes('Upload an image')")
    page.wait_for_function("(s) => document.querySelector('#img2img_seed input').value === s", arg=str(seed + 1))

    page.get_by_role("tab", name="txt2img").click()
    page.click("#txt2img_send_to_extras")
    page.wait_for_function("() => { const i = document.querySelector('#extras_image img');"
                           " return i && i.complete && i.naturalWidth === 64; }")


def _shown_settings(page: Any) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('#settings_pages [id^=setting_]')]"
                         ".filter(e => e.offsetParent !== null).map(e => e.id.replace('setting_', ''))")


def test_settings_search_sections_licenses_sysinfo(page: Any) -> None:
    import json

    page.get_by_role("tab", name="Settings").click()
    every = _shown_settings(page)
    assert "grid_save" in every and "sd_vae" in every and "samples_format" in every
    box = page.locator("#settings_search input, #settings_search textarea").first
    box.click()
    box.type("grid", delay=20)
    page.wait_for_function("() => document.querySelector('#setting_samples_format').offsetParent === null")
    shown = _shown_settings(page)
    assert "grid_save" in shown and "return_grid" in shown and "sd_vae" not in shown, shown
    assert all("grid" in s.lower() for s in shown) or len(shown) < len(every) / 4, shown
    assert not page.locator("#settings_section_stable_diffusion").first.is_visible()  # no match there
    box.fill("")
    box.press("End")
    box.type(" ")
    box.press("Backspace")
    page.get_by_label("Saving images", exact=True).check()  # the section list: one page at a time
    page.wait_for_function("() => document.querySelector('#setting_sd_vae').offsetParent === null"
                           " && document.querySelector('#setting_grid_save').offsetParent !== null")
    assert set(_shown_settings(page)) < set(every)

    page.get_by_label("Licenses", exact=True).check()
    table = page.locator("#settings_licenses")
    table.wait_for(state="visible")
    text = table.inner_text()
    assert "gradio" in text and "Apache-2.0" in text and "torch" in text and "fastapi" in text and "MIT" in text
    assert _shown_settings(page) == []

    page.get_by_label("Sysinfo", exact=True).check()
    page.click("#settings_sysinfo_download")
    link = page.locator("#settings_sysinfo_file a").first
    link.wait_for()
    assert (link.get_attribute("download") or link.get_attribute("href")).split("/")[-1].startswith("sysinfo-")
    data = json.loads(page.request.get(link.get_attribute("href")).body())
    assert {"Platform", "Python", "Torch env info", "Config", "Packages"} <= set(data)
    assert "Environment" not in data and any(p.startswith("gradio==") for p in data["Packages"])


@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_settings_reload_ui_rebuilds_and_reloads_the_page(page: Any) -> None:
    """Last in this module: the served UI is replaced by a fresh build."""
    page.get_by_role("tab", name="Settings").click()
    page.evaluate("() => { window.__before_reload = true; }")
    page.click("#settings_reload_ui")
    page.wait_for_function("() => window.__before_reload !== true", timeout=90_000)
    page.wait_for_selector("#txt2img_prompt textarea")
    page.get_by_role("tab", name="Settings").click()
    page.locator("#settings_reload_ui").wait_for()
