"""A1111's file-name and folder patterns and the saving options (issue 18 point 7): the pattern
engine on its own (each tag, sanitising, word limit, datetime formats, unknown tags, no escape from
the output folder), the saver's numbering / replace / lossless rules, and then the real server:
POST /sdapi/v1/options, txt2img with save_images, the output folder overrides, and the page's
💾 / 🗜️ buttons (headless chromium)."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import Server
from test_ui_browser import page, set_number, ui_server
from webui import filename_patterns as fp
from webui.outputs import save_image, save_image_named

__all__ = ["page", "ui_server"]  # fixtures used by name (browser comes from conftest)

NOW = dt.datetime(2024, 7, 27, 13, 5, 9, tzinfo=dt.timezone.utc)


def ctx(**kw: Any) -> fp.NameContext:
    base = dict(seed=5, prompt="a red, circle on blue", negative_prompt="blurry", job_prompt="a red, circle",
                job_negative_prompt="blurry", styles=["Sunny"], style_prompts=["{prompt} on blue"], steps=3, cfg=7.0,
                sampler="Euler a", scheduler="Karras", model_hash="abcdef0123", model_name="tiny-sd1",
                vae_filename="extra-vae.safetensors", job_timestamp="20240727130509", batch_index=1, batch_size=2,
                n_iter=3, iteration=2, all_seeds=[3, 4, 5, 6, 7, 8], clip_skip=2, denoising=0.75,
                image=Image.new("RGB", (64, 32), (1, 2, 3)), now=NOW)
    return fp.NameContext(**{**base, **kw})


# ---------------------------------------------------------------- the engine alone

def test_each_tag_is_filled_as_a1111_fills_it() -> None:
    c = ctx()
    img_hash = hashlib.sha256(c.image.tobytes()).hexdigest()
    expected = {
        "[seed]": "5", "[seed_first]": "3", "[seed_last]": "8", "[steps]": "3", "[cfg]": "7.0",
        "[width]": "64", "[height]": "32", "[styles]": "Sunny", "[sampler]": "Euler a",
        "[sampler_scheduler]": "Euler a Karras", "[scheduler]": "Karras", "[model_hash]": "abcdef0123",
        "[model_name]": "tiny-sd1", "[date]": "2024-07-27", "[datetime]": "20240727130509",
        "[job_timestamp]": "20240727130509",
        "[prompt_hash]": hashlib.sha256(b"a red, circle on blue").hexdigest()[:8],
        "[prompt_hash<4>]": hashlib.sha256(b"a red, circle on blue").hexdigest()[:4],
        "[negative_prompt_hash]": hashlib.sha256(b"blurry").hexdigest()[:8],
        "[full_prompt_hash]": hashlib.sha256(b"a red, circle blurry").hexdigest()[:8],
        "[prompt]": "a_red,_circle_on_blue", "[negative_prompt]": "blurry", "[prompt_no_styles]": "a red, circle",
        "[prompt_spaces]": "a red, circle on blue", "[prompt_words]": "a red circle on blue",
        "[batch_number]": "2", "[batch_size]": "2", "[generation_number]": "6",
        "[hasprompt<circle|x><square|nosquare>]": "circlenosquare", "[clip_skip]": "2", "[denoising]": "0.75",
        "[vae_filename]": "extra-vae", "[none]": "", "[image_hash]": img_hash, "[image_hash<10>]": img_hash[:10],
        "[SEED]": "5",  # tags ignore case
    }
    for pattern, want in expected.items():
        assert fp.apply_pattern(pattern, c) == want, pattern


def test_unknown_and_unfillable_tags_stay_and_empty_ones_take_their_separator() -> None:
    c = ctx(batch_size=1, n_iter=1, denoising=None, user=None, vae_filename=None)
    assert fp.apply_pattern("[nonsense]-[seed]", c) == "[nonsense]-5"
    assert fp.apply_pattern("x-[user]", c) == "x-[user]"  # no accounts: kept as written, as A1111
    # a batch of one: [batch_number], [seed_last], [generation_number], [denoising] stand for nothing,
    # and the text before them goes too
    assert fp.apply_pattern("[seed]-[batch_number]-[seed_last]_[generation_number] d[denoising]!", c) == "5!"
    assert fp.apply_pattern("[vae_filename]", c) == "NoneType"
    assert fp.apply_pattern("[datetime<%Y>]-[[model_name]]", c) == "2024-[tiny-sd1]"
    assert fp.apply_pattern("[seed]", ctx(zip=True, batch_size=2)) == "5"


def test_datetime_formats_and_time_zones() -> None:
    c = ctx()
    assert fp.apply_pattern("[datetime<%Y-%m-%d_%H-%M>]", c) == "2024-07-27_13-05"
    assert fp.apply_pattern("[datetime<%H><Asia/Tokyo>]", c) == "22"  # UTC+9
    assert fp.apply_pattern("[datetime<%H><UTC>]", c) == "13"
    local = NOW.astimezone().strftime("%H")
    assert fp.apply_pattern("[datetime<%H><No/Such_Zone>]", c) == local  # an unknown zone: local time
    assert fp.apply_pattern("[datetime<>]", c) == NOW.astimezone().strftime("%Y%m%d%H%M%S")
    assert fp.apply_pattern("[datetime<%H:%M>]", c) == "13_05"  # ':' is not allowed in a name


def test_sanitising_length_and_word_limits() -> None:
    assert fp.sanitize_part('  a<b>c:d"e/f\\g|h?i*j#k\tl. .', replace_spaces=False) == "a_b_c_d_e_f_g_h_i_j_k_l"
    assert fp.sanitize_part("x y", replace_spaces=False) == "x y" and fp.sanitize_part("x y") == "x_y"
    long = ctx(prompt="word " * 100)
    assert len(fp.apply_pattern("[prompt]", long)) <= fp.MAX_PART_LENGTH
    words = ctx(prompt="one, two three (four:1.2) five six seven eight nine ten")
    assert fp.apply_pattern("[prompt_words]", words) == "one two three four 1 2 five six"  # 8 words
    words.max_prompt_words = 3
    assert fp.apply_pattern("[prompt_words]", words) == "one two three"
    assert fp.apply_pattern("[prompt_words]", ctx(prompt="")) == "empty"
    assert fp.file_stem("CON") == "_CON" and fp.folder_parts("aux.txt/lpt1") == ["_aux.txt", "_lpt1"]
    assert len(fp.file_stem("é" * 300, 100).encode("utf-8")) <= 100
    assert len(fp.folder_parts("日" * 300)[0].encode("utf-8")) <= 200


def test_a_prompt_or_pattern_never_leaves_the_output_folder(tmp_path: Path) -> None:
    c = ctx(prompt="../../../../etc/passwd", model_name="../up")
    assert fp.directory_name("[prompt_spaces]", c) == [".._.._.._.._etc_passwd"]
    assert fp.directory_name("../../[date]/./../x", c) == ["2024-07-27", "x"]
    assert fp.directory_name("..", c) == [] and fp.directory_name("[model_name]", c) == [".._up"]
    out = tmp_path / "out"
    for pattern in ("../[seed]", "[prompt_spaces]", "/abs/[seed]", ".."):
        path = save_image(Image.new("RGB", (8, 8)), out, seed=5, infotext=None,
                          decoration=fp.file_decoration(pattern, True, c), add_number=False)
        assert path.parent == out and path.resolve().is_relative_to(out.resolve()), (pattern, path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(p.name for p in out.iterdir())


# ---------------------------------------------------------------- the saver's rules

def test_number_replace_and_add_number_suffix(tmp_path: Path) -> None:
    red, blue = Image.new("RGB", (8, 8), (250, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 250))
    a = save_image(red, tmp_path, seed=5, infotext=None, decoration="5-cat")
    assert a.name == "00000-5-cat.png"
    assert save_image(red, tmp_path, seed=5, infotext=None, decoration="").name == "00001.png"
    # no number: the pattern alone; "Replace" overwrites, "Add number suffix" adds -1, -2
    b = save_image(red, tmp_path, seed=5, infotext=None, decoration="cat", add_number=False, replace=True)
    assert b.name == "cat.png"
    assert save_image(blue, tmp_path, seed=5, infotext=None, decoration="cat", add_number=False,
                      replace=True) == b
    assert Image.open(b).getpixel((0, 0)) == (0, 0, 250)
    c = save_image(red, tmp_path, seed=5, infotext=None, decoration="cat", add_number=False, replace=False)
    assert c.name == "cat-1.png" and Image.open(b).getpixel((0, 0)) == (0, 0, 250)
    # an empty pattern without numbers still gets its number (A1111)
    assert save_image(red, tmp_path, seed=5, infotext=None, decoration="", add_number=False).name == "00002.png"
    assert save_image_named(red, tmp_path, "cat", infotext=None, replace=False).name == "cat-2.png"
    assert not list(tmp_path.glob(".tmp-*"))


def test_webp_lossless_keeps_every_pixel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    lossy = save_image(img, tmp_path, seed=1, infotext="x", fmt="webp")
    exact = save_image(img, tmp_path, seed=1, infotext="x", fmt="webp", lossless=True)
    assert np.array_equal(np.asarray(Image.open(exact).convert("RGB")), np.asarray(img))
    assert not np.array_equal(np.asarray(Image.open(lossy).convert("RGB")), np.asarray(img))


def test_img2img_batch_output_names_follow_the_input_or_the_pattern(tmp_path: Path) -> None:
    from webui.services.img2img_batch import save_to_output_dir
    from webui.services.requests import Img2ImgRequest
    from webui.settings import Settings
    settings = Settings.load(tmp_path / "config.json")
    info = {"all_seeds": [40, 41], "batch_size": 2, "prompt": "a cat", "index_of_first_image": 1}
    text = "a cat\nSteps: 3, Sampler: Euler, Seed: {}, Size: 8x8"
    img = Image.new("RGB", (8, 8))
    one, two = Img2ImgRequest(prompt="a cat"), Img2ImgRequest(prompt="a cat", batch_size=2)
    out = tmp_path / "out"
    # use_original_name_batch (default): named for the input, never replacing (A1111's batch)
    assert save_to_output_dir(settings, out, Path("in/photo[1].png"), img, text.format(40), info, 0, one).name == \
        "00000-photo[1].png"
    assert save_to_output_dir(settings, out, Path("in/photo.png"), img, text.format(41), info, 1, two).name == \
        "00001-photo-2.png"  # several pictures per input: -[generation_number]
    settings.update({"save_images_add_number": False})
    assert save_to_output_dir(settings, out, Path("in/x.png"), img, text.format(40), info, 0, one).name == "x.png"
    assert save_to_output_dir(settings, out, Path("in/x.png"), img, text.format(40), info, 0, one).name == "x-1.png"
    settings.update({"use_original_name_batch": False, "save_images_add_number": True})
    assert save_to_output_dir(settings, out, Path("in/x.png"), img, text.format(41), info, 1, two).name == \
        "00002-41-a cat.png"  # A1111's name in a folder without subfolders: [seed]-[prompt_spaces]


def test_open_folder_choices(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from webui.ui import gallery_buttons as gb

    def svc(**options: Any) -> Any:
        paths = SimpleNamespace(data_dir=tmp_path, outputs_dir=tmp_path / "outputs")
        return SimpleNamespace(paths=paths, args=SimpleNamespace(), options=lambda: dict(options))
    saved = {"saved_files": [str(tmp_path / "outputs" / "txt2img-images" / "d" / "00001-5.png")]}
    gallery = [(str(tmp_path / "gradio-tmp" / "abc" / "image.png"), None)]
    root = tmp_path / "outputs" / "txt2img-images"
    assert gb.output_folder(svc(open_dir_button_choice="Subdirectory"), "txt2img", saved, gallery, 0) == root / "d"
    assert gb.output_folder(svc(open_dir_button_choice="Subdirectory"), "txt2img", {}, gallery, 0) == root
    even_temp = svc(open_dir_button_choice="Subdirectory (even temp dir)")
    assert gb.output_folder(even_temp, "txt2img", {}, gallery, 0) == tmp_path / "gradio-tmp" / "abc"
    assert gb.output_folder(even_temp, "txt2img", saved, gallery, 0) == root / "d"
    everything = svc(open_dir_button_choice="Output Root", outdir_samples=str(tmp_path / "all"))
    assert gb.output_folder(everything, "img2img", saved, gallery, 0) == tmp_path / "all"


# ---------------------------------------------------------------- the real server

def _set(server: Server, **opts: Any) -> None:
    r = requests.post(server.api("options"), json=opts, timeout=30)
    assert r.status_code == 200, r.text


@pytest.fixture
def restore(ui_server: Server) -> Iterator[None]:
    keys = ["samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_grids",
            "save_images_add_number", "grid_extended_filename", "save_selected_only", "save_write_log_csv",
            "use_save_to_dirs_for_ui", "grid_zip_filename_pattern", "directories_max_prompt_words"]
    before = requests.get(ui_server.api("options"), timeout=10).json()
    yield
    _set(ui_server, **{k: before[k] for k in keys})


def _txt2img(server: Server, **kw: Any) -> dict:
    body = {"prompt": "a red circle, big", "seed": 77, "steps": 2, "width": 64, "height": 64,
            "sampler_name": "Euler", "save_images": True}
    r = requests.post(server.api("txt2img"), json={**body, **kw}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_options_are_served_with_a1111_defaults(ui_server: Server) -> None:
    opts = requests.get(ui_server.api("options"), timeout=10).json()
    assert opts["samples_filename_pattern"] == "" and opts["directories_filename_pattern"] == "[date]"
    assert opts["save_images_add_number"] is True and opts["save_images_replace_action"] == "Replace"
    assert opts["grid_extended_filename"] is False and opts["grid_zip_filename_pattern"] == ""
    assert opts["directories_max_prompt_words"] == 8 and opts["webp_lossless"] is False
    assert opts["use_original_name_batch"] is True and opts["use_upscaler_name_as_suffix"] is False
    assert opts["outdir_samples"] == "" and opts["outdir_grids"] == ""
    r = requests.post(ui_server.api("options"), json={"save_images_replace_action": "Overwrite"}, timeout=10)
    assert r.status_code == 400 and "save_images_replace_action" in r.text


def test_api_saves_by_the_file_and_folder_patterns(ui_server: Server, restore: None) -> None:
    out = ui_server.data_dir / "outputs"
    _set(ui_server, samples_filename_pattern="[seed]-[prompt_words]", directories_filename_pattern="[model_name]",
         directories_max_prompt_words=2)
    _txt2img(ui_server)
    files = list((out / "txt2img-images" / "tiny-sd1").glob("*-77-a red.png"))
    assert len(files) == 1 and re.fullmatch(r"\d{5}-77-a red\.png", files[0].name), files
    assert "Seed: 77" in Image.open(files[0]).info["parameters"]
    # a request's override_settings names its own files, the options stay as they are
    _txt2img(ui_server, seed=78, override_settings={"samples_filename_pattern": "only-[seed]",
                                                    "save_images_add_number": False})
    assert (out / "txt2img-images" / "tiny-sd1" / "only-78.png").is_file()
    assert requests.get(ui_server.api("options"), timeout=10).json()["samples_filename_pattern"] == \
        "[seed]-[prompt_words]"


def test_outdir_samples_and_grids_override_the_tab_folders(ui_server: Server, restore: None,
                                                           tmp_path: Path) -> None:
    _set(ui_server, outdir_samples=str(tmp_path / "all-images"), outdir_grids=str(tmp_path / "all-grids"),
         grid_extended_filename=True)
    res = _txt2img(ui_server, seed=90, batch_size=2)
    day = time.strftime("%Y-%m-%d")
    assert sorted(re.sub(r"^\d{5}-", "", p.name) for p in (tmp_path / "all-images" / day).iterdir()) == \
        ["90.png", "91.png"]
    grids = list((tmp_path / "all-grids" / day).iterdir())
    assert len(grids) == 1 and re.fullmatch(r"grid-\d{4}-90\.png", grids[0].name)  # extended: with the seed
    assert len(res["images"]) == 3
    # a folder that cannot be made is the request's problem to hear of (400 with the folder), not a 500
    (tmp_path / "a-file").write_text("x")
    _set(ui_server, outdir_samples=str(tmp_path / "a-file"))
    r = requests.post(ui_server.api("txt2img"), timeout=300, json={
        "prompt": "x", "seed": 1, "steps": 2, "width": 64, "height": 64, "save_images": True})
    assert r.status_code == 400 and "cannot save the image into" in r.json()["detail"] and "a-file" in r.text


@pytest.mark.browser
def test_save_and_zip_buttons_follow_the_options(page: Any, ui_server: Server, restore: None) -> None:
    _set(ui_server, samples_filename_pattern="[seed]-[prompt_words]", use_save_to_dirs_for_ui=True,
         directories_filename_pattern="[model_name]/[width]x[height]", save_write_log_csv=False,
         grid_zip_filename_pattern="pics-[model_name]-[seed_first]-[seed_last]")
    page.locator("#txt2img_prompt textarea").fill("green square")
    set_number(page, "txt2img_steps", 2)
    set_number(page, "txt2img_width", 64)
    set_number(page, "txt2img_height", 64)
    set_number(page, "txt2img_batch_size", 2)
    page.click("#txt2img_generate")
    page.wait_for_function("() => (document.querySelector('#txt2img_status textarea')?.value || '')"
                           ".startsWith('Time taken')")
    seed = int(re.search(r"Seed: (\d+)", page.inner_text("#txt2img_info"))[1])
    base = ui_server.data_dir / "log" / "images"
    folder = base / "tiny-sd1" / "64x64"
    before = set(folder.glob("*.png")) if folder.is_dir() else set()

    # the grid is selected: every picture, named by the patterns, in the pattern's folders (each
    # picture's own: the 128x64 grid goes to its own folder, keeping its grid-NNNN name), no log.csv
    page.click("#save_txt2img")
    page.wait_for_function("() => document.querySelector('#txt2img_gallery_note').innerText.includes('Saved')")
    new = sorted(p.name for p in set(folder.glob("*.png")) - before)
    assert len(new) == 2 and new[0].endswith(f"-{seed}-green square.png") and \
        new[1].endswith(f"-{seed + 1}-green square.png"), new
    assert [p.name[:5] for p in (base / "tiny-sd1" / "128x64").glob("*.png")] == ["grid-"]
    assert not (base / "log.csv").exists()

    # 🗜️: the archive's name from grid_zip_filename_pattern
    page.click("#save_zip_txt2img")
    page.wait_for_function("(s) => [...document.querySelectorAll('#download_files_txt2img a')]"
                           ".some(a => a.href.includes('pics-tiny-sd1-' + s))", arg=str(seed))
    zips = list(base.glob(f"pics-tiny-sd1-{seed}-{seed + 1}*.zip"))
    assert len(zips) == 1, list(base.glob("*.zip"))
    with zipfile.ZipFile(zips[0]) as z:
        names = z.namelist()
    assert sum(n.startswith("tiny-sd1/64x64/") for n in names) == 2 and \
        sum(n.startswith("tiny-sd1/128x64/grid-") for n in names) == 1, names

    # one picture selected and save_selected_only on (A1111's default): that picture alone
    page.locator("#txt2img_gallery .thumbnail-item").nth(2).click()
    # the selection has reached the server once the infotext shows that picture's seed
    page.wait_for_function("(s) => document.querySelector('#txt2img_info').innerText.includes('Seed: ' + s + ',')",
                           arg=str(seed + 1))
    before = set(folder.glob("*.png"))
    note = page.inner_text("#txt2img_gallery_note")
    page.click("#save_txt2img")
    # the note first shows Gradio's progress line, then what was saved
    page.wait_for_function("(n) => { const t = document.querySelector('#txt2img_gallery_note').innerText;"
                           " return t != n && t.includes('Saved in') && !t.includes('processing'); }", arg=note)
    new = [p.name for p in set(folder.glob("*.png")) - before]
    assert len(new) == 1 and new[0].endswith(f"-{seed + 1}-green square.png"), new
