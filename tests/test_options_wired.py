"""A1111 options whose feature exists here, each shown acting on what it changes (issue 18 point 7):
schedule overrides, TI hashes, SDXL crop and CLIP-L skip, the hires refiner pass, the inpaint overlay,
the VAE NaN fallback, grids (empty spots, colours, font), interrogation, pasting an infotext, and the
page (hidden samplers, token counters, extra-network cards, paste with styles).

One real server (page and API) on tiny checkpoints; the browser checks use Debian's chromium.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from conftest import ROOT, Server, start_server, stop_server
from test_extensions_compat import svc  # an app bound to the extensions' `modules` package

__all__ = ["svc"]  # a fixture used by name

STYLE = ("shiny", "golden light, bokeh", "lowres")


def b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def image(s: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[-1])))


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from safetensors.torch import load_file, save_file

    from test_interrogate import make_tiny_blip, make_tiny_clip
    from tiny_models import make_tiny_checkpoint

    data = tmp_path_factory.mktemp("wired")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    make_tiny_checkpoint(ckpts / "tiny-sd1.safetensors", family="sd1", seed=1)
    make_tiny_checkpoint(ckpts / "tiny-sd1-b.safetensors", family="sd1", seed=2)
    # a trained refiner: the random tiny models' pictures differ too little to show which pass it ran in
    shutil.copy(ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors", ckpts / "shapes.safetensors")
    make_tiny_checkpoint(ckpts / "tiny-xl.safetensors", family="sdxl", seed=3)
    sd = load_file(str(ckpts / "tiny-sd1.safetensors"))
    sd["first_stage_model.decoder.conv_out.weight"] = torch.full_like(sd["first_stage_model.decoder.conv_out.weight"],
                                                                        float("nan"))
    save_file(sd, str(ckpts / "nan-vae.safetensors"))  # a VAE that gives NaNs in any precision
    (data / "models" / "Lora").mkdir()
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 4), "lora_unet_x.lora_up.weight": torch.zeros(4, 1)},
              str(data / "models" / "Lora" / "ink.safetensors"))
    make_tiny_blip(data / "models" / "BLIP" / "tiny-blip")
    make_tiny_clip(data / "models" / "CLIP" / "tiny-clip")
    cats = data / "models" / "interrogate"
    cats.mkdir(parents=True)
    (cats / "mediums.txt").write_text("a photograph\nan oil painting\na pencil sketch\n")
    (cats / "flavors.txt").write_text("vivid colours\nsoft light\nhigh contrast\n")
    (data / "styles.csv").write_text("name,prompt,negative_prompt\n" + ",".join(f'"{s}"' for s in STYLE) + "\n")
    # read when the page is built
    (data / "config.json").write_text(json.dumps({"hide_samplers": ["Euler", "LMS"],
                                                  "extra_networks_default_multiplier": 0.5,
                                                  "img2img_inpaint_sketch_default_brush_color": "#00ff00"}))
    srv = start_server(data, ckpts, "--ckpt", str(ckpts / "tiny-sd1.safetensors"), nowebui=False)
    deadline = time.time() + 120
    while time.time() < deadline and not requests.get(srv.api("options"), timeout=5).json().get("sd_checkpoint_hash"):
        time.sleep(0.3)
    yield srv
    stop_server(srv)


def set_opts(server: Server, **opts: Any) -> None:
    r = requests.post(server.api("options"), json=opts, timeout=60)
    assert r.status_code == 200, r.text


def txt2img(server: Server, expect: int = 200, **kw: Any) -> dict:
    body = {"prompt": "a red circle", "seed": 3, "steps": 4, "width": 64, "height": 64, "sampler_name": "Euler",
            "cfg_scale": 7}
    r = requests.post(server.api("txt2img"), json={**body, **kw}, timeout=300)
    assert r.status_code == expect, r.text
    return r.json()


def first(res: dict) -> tuple[np.ndarray, str]:
    info = json.loads(res["info"])
    return arr(image(res["images"][0])), info["infotexts"][0]


def titles(server: Server) -> dict[str, str]:
    return {m["model_name"]: m["title"] for m in requests.get(server.api("sd-models"), timeout=10).json()}


def test_options_are_served_with_a1111_defaults(server: Server) -> None:
    opts = requests.get(server.api("options"), timeout=10).json()
    defaults = {"font": "", "grid_text_active_color": "#000000", "grid_text_inactive_color": "#999999",
                "grid_background_color": "#ffffff", "grid_prevent_empty_spots": False, "sdxl_clip_l_skip": False,
                "hires_fix_refiner_pass": "second pass", "sdxl_crop_top": 0, "sdxl_crop_left": 0,
                "auto_vae_precision_bfloat16": False, "auto_vae_precision": True, "overlay_inpaint": True,
                "extra_networks_add_text_separator": " ", "textual_inversion_add_hashes_to_infotext": True,
                "disable_token_counters": False, "include_styles_into_token_counters": True,
                "disable_weights_auto_swap": True, "infotext_skip_pasting": [], "infotext_styles": "Apply if any",
                "sigma_min": 0.0, "sigma_max": 0.0, "rho": 0.0, "beta_dist_alpha": 0.6, "beta_dist_beta": 0.6,
                "interrogate_keep_models_in_memory": False, "interrogate_return_ranks": False,
                "interrogate_clip_num_beams": 1, "interrogate_clip_min_length": 24,
                "interrogate_clip_max_length": 48, "interrogate_clip_dict_limit": 1500,
                "interrogate_clip_skip_categories": []}
    assert {k: opts[k] for k in defaults} == defaults
    assert opts["hide_samplers"] == ["Euler", "LMS"] and opts["extra_networks_default_multiplier"] == 0.5


def test_schedule_options_change_the_sigmas_and_are_written_only_when_they_act(server: Server) -> None:
    base, text = first(txt2img(server, scheduler="karras"))
    assert "Schedule min sigma" not in text and "Schedule rho" not in text
    set_opts(server, sigma_max=4.0, rho=3.0, sigma_min=0.0)
    try:
        img, text = first(txt2img(server, scheduler="karras"))
        assert "Schedule max sigma: 4," in text and "Schedule rho: 3," in text and "Schedule min sigma" not in text
        assert np.abs(img - base).max() > 8
        # Automatic (Euler's own schedule) has no function to take them: nothing changes, nothing is written
        auto, auto_text = first(txt2img(server))
        assert "Schedule max sigma" not in auto_text
        # Exponential has no rho: only the sigma is used
        assert "Schedule rho" not in first(txt2img(server, scheduler="exponential"))[1]
    finally:
        set_opts(server, sigma_max=0.0, rho=0.0)
    # the infotext brings them back (A1111's override of the options), the same picture again
    again, again_text = first(txt2img(server, infotext=text))
    assert np.array_equal(again, img) and "Schedule max sigma: 4," in again_text
    assert requests.get(server.api("options"), timeout=10).json()["sigma_max"] == 0.0  # restored afterwards
    beta, beta_text = first(txt2img(server, scheduler="beta"))
    assert "Beta schedule alpha: 0.6, Beta schedule beta: 0.6" in beta_text
    set_opts(server, beta_dist_alpha=0.3)
    try:
        beta2, beta2_text = first(txt2img(server, scheduler="beta"))
    finally:
        set_opts(server, beta_dist_alpha=0.6)
    assert "Beta schedule alpha: 0.3" in beta2_text and not np.array_equal(beta2, beta)


def test_textual_inversion_hashes_follow_the_option(server: Server) -> None:
    emb_dir = server.data_dir / "models" / "embeddings"
    emb_dir.mkdir(exist_ok=True)
    torch.manual_seed(0)
    from safetensors.torch import save_file
    save_file({"emb_params": torch.randn(2, 32)}, str(emb_dir / "inkemb.safetensors"))
    requests.post(server.api("refresh-embeddings"), timeout=30)
    _, text = first(txt2img(server, prompt="a red circle inkemb"))
    assert "TI hashes: \"inkemb: " in text or "TI hashes: inkemb: " in text, text
    set_opts(server, textual_inversion_add_hashes_to_infotext=False)
    try:
        _, text = first(txt2img(server, prompt="a red circle inkemb"))
    finally:
        set_opts(server, textual_inversion_add_hashes_to_infotext=True)
    assert "TI hashes" not in text


def test_sdxl_crop_and_clip_l_skip(server: Server) -> None:
    xl = {"override_settings": {"sd_model_checkpoint": titles(server)["tiny-xl"]}, "steps": 2}
    base, text = first(txt2img(server, **xl))
    assert "Model: tiny-xl" in text
    crop = first(txt2img(server, **{**xl, "override_settings": {**xl["override_settings"], "sdxl_crop_top": 512}}))[0]
    assert np.abs(crop - base).max() > 0  # the crop coordinates are time ids of the UNet
    # A1111: without sdxl_clip_l_skip, Clip skip does not touch SDXL; with it, CLIP-L uses hidden_states[-N]
    skip2 = {**xl["override_settings"], "CLIP_stop_at_last_layers": 2}
    assert np.array_equal(first(txt2img(server, **{**xl, "override_settings": skip2}))[0], base)
    on = first(txt2img(server, **{**xl, "override_settings": {**xl["override_settings"], "sdxl_clip_l_skip": True}}))[0]
    on2 = first(txt2img(server, **{**xl, "override_settings": {**skip2, "sdxl_clip_l_skip": True}}))[0]
    assert np.abs(on - base).max() > 0  # clip skip 1 = CLIP-L's last layer instead of the penultimate
    assert np.array_equal(on2, base)  # clip skip 2 = the penultimate layer, SDXL's own


def test_hires_refiner_pass(server: Server) -> None:
    # the refiner takes over early in whichever pass it is enabled for; a light hires pass keeps the first
    hr = {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "denoising_strength": 0.3, "steps": 3,
          "refiner_checkpoint": titles(server)["shapes"], "refiner_switch_at": 0.1}
    second, text2 = first(txt2img(server, **hr))
    assert "Hires refiner" not in text2 and "Refiner: shapes" in text2
    both, text_both = first(txt2img(server, **hr, override_settings={"hires_fix_refiner_pass": "both passes"}))
    first_only, text1 = first(txt2img(server, **hr, override_settings={"hires_fix_refiner_pass": "first pass"}))
    assert "Hires refiner: first pass" in text1 and "Hires refiner: both passes" in text_both
    assert np.abs(first_only - second).max() > 8 and np.abs(both - second).max() > 8
    assert np.array_equal(first_only, both)  # the hires pass runs on the refiner either way (as A1111)


def _inpaint_inputs() -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(0)
    src = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    return src, mask


def test_overlay_inpaint(server: Server) -> None:
    src, mask = _inpaint_inputs()
    body = {"init_images": [b64(src)], "mask": b64(mask), "prompt": "a cat", "seed": 1, "steps": 3, "width": 64,
            "height": 64, "denoising_strength": 0.9, "mask_blur": 0, "inpainting_fill": 1}
    outside = np.array(mask) == 0
    for overlay in (True, False):
        r = requests.post(server.api("img2img"), timeout=300,
                          json={**body, "override_settings": {"overlay_inpaint": overlay}})
        assert r.status_code == 200, r.text
        out = arr(image(r.json()["images"][0]))
        diff = np.abs(out - arr(src))[outside].max()
        assert (diff <= 1) if overlay else (diff > 8), (overlay, diff)  # the original kept outside the mask


def test_vae_nan_fallback_options(server: Server) -> None:
    nan = {"override_settings": {"sd_model_checkpoint": titles(server)["nan-vae"]}, "steps": 2}
    res = txt2img(server, **nan)
    warns = json.loads(res["info"])["warnings"]
    assert any("32-bit floats" in w for w in warns), warns
    res = txt2img(server, **{**nan, "override_settings": {**nan["override_settings"],
                                                          "auto_vae_precision_bfloat16": True}})
    assert any("bfloat16" in w for w in json.loads(res["info"])["warnings"])
    r = requests.post(server.api("txt2img"), timeout=300, json={
        "prompt": "x", "steps": 2, "width": 64, "height": 64,
        "override_settings": {**nan["override_settings"], "auto_vae_precision": False}})
    assert r.status_code == 400 and "NaNs" in r.json()["detail"], r.text


def test_grid_options(server: Server) -> None:
    res = txt2img(server, batch_size=3)
    assert image(res["images"][0]).size == (128, 128)  # round(sqrt(3)) = 2 rows: one empty spot
    set_opts(server, grid_prevent_empty_spots=True)
    try:
        res = txt2img(server, batch_size=3)
    finally:
        set_opts(server, grid_prevent_empty_spots=False)
    assert image(res["images"][0]).size == (192, 64)  # one row of three
    args = ["Steps", "2, 3", None, "CFG Scale", "3, 9", None, "Nothing", "", None, True, False, False, False,
            False, False, False, 0, False]
    plain = image(txt2img(server, script_name="x/y/z plot", script_args=args)["images"][0]).convert("RGB")
    assert plain.getpixel((1, 1)) == (255, 255, 255)
    set_opts(server, grid_background_color="#ff0000", grid_text_active_color="#0000ff",
             font="/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
    try:
        styled = image(txt2img(server, script_name="x/y/z plot", script_args=args)["images"][0]).convert("RGB")
    finally:
        set_opts(server, grid_background_color="#ffffff", grid_text_active_color="#000000", font="")
    assert styled.size == plain.size and styled.getpixel((1, 1)) == (255, 0, 0)
    px = np.asarray(styled).reshape(-1, 3).astype(int)
    blue_ink = (px[:, 2] > 150) & (px[:, 0] < 100) & (px[:, 1] < 100)
    assert blue_ink.sum() > 20  # the labels are drawn in the text colour
    # a bold font gives more ink than the regular one, in the same colour
    set_opts(server, grid_text_active_color="#0000ff")
    try:
        regular = image(txt2img(server, script_name="x/y/z plot", script_args=args)["images"][0]).convert("RGB")
    finally:
        set_opts(server, grid_text_active_color="#000000")
    rpx = np.asarray(regular).reshape(-1, 3).astype(int)
    assert blue_ink.sum() > ((rpx[:, 2] > 150) & (rpx[:, 0] < 100) & (rpx[:, 1] < 100)).sum()


def test_interrogate_options(server: Server) -> None:
    pic = b64(Image.new("RGB", (48, 48), (200, 30, 30)))

    def ask() -> str:
        r = requests.post(server.api("interrogate"), json={"image": pic, "model": "clip"}, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()["caption"]

    def split(caption: str) -> tuple[str, list[str]]:
        mediums = ["a photograph", "an oil painting", "a pencil sketch"]
        flavors = ["vivid colours", "soft light", "high contrast"]
        tags = [t for t in mediums + flavors if t in caption]
        return caption[:min((caption.index(t) for t in tags), default=len(caption))], tags

    base = ask()
    caption, tags = split(base)
    assert len(tags) == 2
    set_opts(server, interrogate_clip_max_length=6, interrogate_clip_min_length=1)
    try:
        short = split(ask())[0]
    finally:
        set_opts(server, interrogate_clip_max_length=48, interrogate_clip_min_length=24)
    assert len(short.split()) < len(caption.split())
    set_opts(server, interrogate_return_ranks=True, interrogate_clip_skip_categories=["flavors"],
             interrogate_clip_dict_limit=1)
    try:
        ranked = ask()
    finally:
        set_opts(server, interrogate_return_ranks=False, interrogate_clip_skip_categories=[],
                 interrogate_clip_dict_limit=1500)
    # one category left, cut to its first line: its softmax probability is 1
    assert ranked.endswith(", (a photograph:1.000)"), ranked
    assert not any(f in ranked for f in ("vivid colours", "soft light", "high contrast"))


def test_infotext_field_skips_fields_and_keeps_the_model(server: Server) -> None:
    other = titles(server)["tiny-sd1-b"]
    res = txt2img(server, cfg_scale=5, override_settings={"sd_model_checkpoint": other})
    text = json.loads(res["info"])["infotexts"][0]
    assert "Model: tiny-sd1-b" in text and "CFG scale: 5" in text
    # disable_weights_auto_swap (on by default): the infotext's Model hash does not switch the model; the
    # request leaves cfg_scale at its default, so the infotext's value is used
    again = json.loads(txt2img(server, infotext=text)["info"])["infotexts"][0]
    assert "Model: tiny-sd1," in again and "CFG scale: 5" in again
    set_opts(server, disable_weights_auto_swap=False, infotext_skip_pasting=["CFG scale"])
    try:
        swapped = json.loads(txt2img(server, infotext=text)["info"])["infotexts"][0]
    finally:
        set_opts(server, disable_weights_auto_swap=True, infotext_skip_pasting=[])
    assert "Model: tiny-sd1-b" in swapped and "CFG scale: 7" in swapped  # the skipped field is not read


# ---------------------------------------------------------------- the page

def component_props(page: Any, elem_id: str) -> dict:
    """A component's props as Gradio sent them to the page."""
    return page.evaluate("""(id) => {
      const c = window.gradio_config.components.find(c => c.props && c.props.elem_id === id);
      return c ? c.props : null; }""", elem_id)


def wait_counter(page: Any, elem_id: str, want: str, timeout: float = 90) -> None:
    """Wait until a token counter reads `want` (the count runs on the server after each change; a busy
    server may show Gradio's timer above the count for a moment)."""
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = page.evaluate("(id) => [...document.querySelectorAll('#' + id)]"
                            ".map(e => e.innerText.trim().split('\\n').pop().trim())", elem_id)
        if want in got:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"{elem_id} shows {got}, not {want!r}")


@pytest.mark.browser
@pytest.mark.slow  # ~40 s: two page builds with Reload UI between
def test_page_options(browser: Any, server: Server) -> None:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
        # hide_samplers (config.json): not offered; the sketch brush of inpaint sketch has its own colour
        choices = [c[0] if isinstance(c, list) else c for c in component_props(page, "txt2img_sampling")["choices"]]
        assert "Euler a" in choices and "Euler" not in choices and "LMS" not in choices
        assert component_props(page, "inpaint_sketch")["brush"]["default_color"] == "#00ff00"

        # the token counter counts the enabled styles (include_styles_into_token_counters)
        prompt = page.locator("#txt2img_prompt textarea")
        prompt.fill("a cat")
        wait_counter(page, "txt2img_token_counter", "2/75")
        page.locator("#txt2img_styles input").click()
        page.get_by_role("option", name="shiny").click()
        page.keyboard.press("Escape")
        # "a cat, golden light, bokeh" (bokeh is two tokens); the negative box counts the style's "lowres"
        wait_counter(page, "txt2img_token_counter", "8/75")
        wait_counter(page, "txt2img_negative_token_counter", "2/75")
        set_opts(server, include_styles_into_token_counters=False)
        prompt.fill("a dog")
        wait_counter(page, "txt2img_token_counter", "2/75")
        set_opts(server, include_styles_into_token_counters=True)

        # an extra-network card: extra_networks_default_multiplier 0.5, after the " " separator
        page.locator("#txt2img_extra_networks").get_by_text("Extra networks", exact=True).first.click()
        page.get_by_role("tab", name="Lora").click()
        page.locator("#txt2img_lora_cards").get_by_text("ink").first.wait_for()
        page.locator("#txt2img_lora_cards img").first.click()
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value"
                               " === 'a dog <lora:ink:0.5>'")

        # ↙️ with infotext_styles "Apply if any", a skipped field, and another model's hash
        page.locator("#txt2img_styles input").click()
        page.get_by_role("option", name="shiny").click()  # deselect: the paste must select it again
        page.keyboard.press("Escape")
        set_opts(server, infotext_skip_pasting=["Seed"])
        other_text = json.loads(txt2img(server, steps=1, override_settings={
            "sd_model_checkpoint": titles(server)["tiny-sd1-b"]})["info"])["infotexts"][0]
        other = other_text.split("Model hash: ", 1)[1].split(",", 1)[0]
        prompt.fill("a red circle, golden light, bokeh\nNegative prompt: blurry, lowres\nSteps: 7, Sampler: Euler a, "
                    f"CFG scale: 5, Seed: 4242, Size: 64x64, Model hash: {other}, Model: tiny-sd1-b, "
                    "Clip skip: 2, Version: v1.10.1")
        page.click("#txt2img_paste")
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value === 'a red circle'")
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == "blurry"
        assert "shiny" in page.inner_text("#txt2img_styles")
        assert page.locator("#txt2img_steps input[type=number]").input_value() == "7"
        assert page.locator("#txt2img_seed input").input_value() != "4242"  # infotext_skip_pasting
        chips = page.inner_text("#txt2img_override_settings")
        assert "Clip skip: 2" in chips and "Model hash" not in chips  # disable_weights_auto_swap
        set_opts(server, infotext_skip_pasting=[])

        # disable_token_counters: after Reload UI the counters are gone
        set_opts(server, disable_token_counters=True)
        page.get_by_role("tab", name="Settings").click()
        page.click("#settings_reload_ui")
        page.wait_for_timeout(3000)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=120_000)
        page.goto(server.url + "/")
        page.wait_for_selector("#txt2img_prompt textarea")
        assert not page.locator("#txt2img_token_counter").is_visible()
        assert component_props(page, "txt2img_token_counter")["visible"] is False
    finally:
        page.screenshot(path="/tmp/helperE2-options.png", full_page=True)
        ctx.close()
        set_opts(server, disable_token_counters=False, infotext_skip_pasting=[])
    assert not errors, errors


def test_xyz_sampler_axis_leaves_out_hidden_samplers(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from webui.scripts.xyz_plot import AXES
    from webui.settings import Settings
    settings = Settings.load(tmp_path / "config.json")
    sampler_axis = next(a for a in AXES if a.label == "Sampler")
    assert "Euler" in sampler_axis.choices(SimpleNamespace(settings=settings))
    settings.set("hide_samplers", ["Euler", "DDIM"])
    shown = sampler_axis.choices(SimpleNamespace(settings=settings))
    assert "Euler" not in shown and "DDIM" not in shown and "Euler a" in shown


def test_extension_grids_follow_the_grid_options(svc: Any) -> None:
    """An extension's `modules.images` grids and labels read the same options as the app's own."""
    from modules import images

    tiles = [Image.new("RGB", (8, 8), (9, 9, 9))] * 3
    assert images.image_grid(tiles).size == (16, 16)  # round(sqrt(3)) = 2 rows, one spot empty
    svc.settings.update({"grid_prevent_empty_spots": True, "grid_background_color": "#00ff00"}, save=False)
    try:
        assert images.image_grid(tiles).size == (24, 8)
        labelled = images.draw_grid_annotations(Image.new("RGB", (16, 8)), 8, 8, ["a", "b"], ["c"])
    finally:
        svc.settings.update({"grid_prevent_empty_spots": False, "grid_background_color": "#ffffff"}, save=False)
    assert labelled.convert("RGB").getpixel((0, 0)) == (0, 255, 0)
