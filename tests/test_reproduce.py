"""Our own images come back the same.

Over HTTP against the real server with the built-in model: generate, read the image's PNG infotext
(POST /sdapi/v1/png-info), generate again from that text alone (`POST /sdapi/v1/txt2img {"infotext": ...}`,
A1111's field) and compare pixels. Plus the option hygiene around it: unknown option keys are refused,
and a generation whose infotext overrides settings leaves no trace (no `null`) in config.json.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import ROOT, Server, start_server, stop_server, wait_for_model

BUILTIN = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
LORA = "repro_lora"
COMMON = {"steps": 6, "width": 64, "height": 64, "sampler_name": "Euler a", "cfg_scale": 7}

CASES = {
    "plain": {"prompt": "a red circle on a blue background", "seed": 101},
    # what an old-A1111 reading of our Version broke: "Old prompt editing timelines" changes when
    # [red:yellow:0.5] switches in the hires pass (in the first pass alone both timelines agree here)
    "prompt_editing": {"prompt": "a [red:yellow:0.5] star on a black background", "seed": 102, "enable_hr": True,
                       "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 3, "denoising_strength": 0.6},
    "hires_fix": {"prompt": "a green square at the top", "seed": 103, "enable_hr": True, "hr_scale": 1.5,
                  "hr_upscaler": "Latent", "hr_second_pass_steps": 3, "denoising_strength": 0.6},
    "variation_seed": {"prompt": "a white triangle on a purple background", "seed": 104, "subseed": 77,
                       "subseed_strength": 0.4},
    "lora": {"prompt": f"an orange circle at the left <lora:{LORA}:0.8>", "seed": 105},
    "batch_second_image": {"prompt": "a yellow star on a green background", "seed": 106, "batch_size": 2},
}
# A batch's images are not bit-identical to the same seeds generated one at a time: the batch itself is
# deterministic (run twice: identical), seeds and per-image noise are the same, yet after a few steps 1-3
# pixels differ by 1/255, for the FIRST image of the batch too (Euler a and DPM++ 2M; not after a single
# Euler step). So the batched model calls round differently in float32 on the CPU than single-image ones
# (most likely the UNet, run on 4 rows of cond/uncond instead of 2): a property of the generation pipeline,
# not of the infotext or its parser.
BATCH_REASON = ("generation pipeline: a batch of 2 is denoised with float32 rounding that differs from one image "
                "at a time (batched model calls; the batch itself is deterministic and the first image differs "
                "from its single generation too), so the batch's image regenerated alone differs by 1/255 on a "
                "few pixels; the infotext round trip itself is exact")


def make_lora(path: Path) -> None:
    """A kohya LoRA (LDM-style UNet names, HF text-encoder names) for every attention projection of the
    built-in checkpoint, shapes read from its header."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(5)
    sd: dict[str, torch.Tensor] = {}
    with safe_open(str(BUILTIN), "pt") as f:
        for key in f.keys():
            if key.startswith("model.diffusion_model.") and key.endswith(("to_q.weight", "to_k.weight", "to_v.weight")):
                name = "lora_unet_" + key[len("model.diffusion_model."):-len(".weight")].replace(".", "_")
            elif key.startswith("cond_stage_model.transformer.") and key.endswith(("q_proj.weight", "v_proj.weight")):
                name = "lora_te_" + key[len("cond_stage_model.transformer."):-len(".weight")].replace(".", "_")
            else:
                continue
            out_f, in_f = f.get_slice(key).get_shape()
            sd[f"{name}.lora_down.weight"] = (torch.randn(2, in_f, generator=g) * 0.4).half()
            sd[f"{name}.lora_up.weight"] = (torch.randn(out_f, 2, generator=g) * 0.4).half()
            sd[f"{name}.alpha"] = torch.tensor(2.0)
    assert sd, "no attention projections found in the built-in checkpoint"
    save_file(sd, str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    data = tmp_path_factory.mktemp("reproduce")
    ckpt_dir = data / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)  # empty: the built-in model is loaded
    (data / "models" / "Lora").mkdir()
    make_lora(data / "models" / "Lora" / f"{LORA}.safetensors")
    srv = start_server(data, ckpt_dir)
    try:
        opts = wait_for_model(srv)
        assert opts["sd_model_checkpoint"].startswith("shapes-demo-v4"), opts.get("sd_model_checkpoint")
        yield srv
    finally:
        stop_server(srv)


def post(server: Server, path: str, payload: dict) -> requests.Response:
    return requests.post(server.api(path), json=payload, timeout=300)


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def generate(server: Server, payload: dict) -> tuple[list[Image.Image], dict]:
    r = post(server, "txt2img", payload)
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    return [decode(s) for s in body["images"]][info.get("index_of_first_image", 0):], info


def png_info(server: Server, img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=_pnginfo(img))
    r = post(server, "png-info", {"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()})
    assert r.status_code == 200, r.text
    return r.json()["info"]


def _pnginfo(img: Image.Image):
    from PIL import PngImagePlugin
    meta = PngImagePlugin.PngInfo()
    for k, v in img.info.items():
        if isinstance(v, str):
            meta.add_text(k, v)
    return meta


@pytest.mark.parametrize("case", list(CASES))
def test_image_regenerated_from_its_own_infotext_is_identical(server: Server, case: str) -> None:
    images, info = generate(server, dict(COMMON, **CASES[case]))
    index = 1 if case == "batch_second_image" else 0  # the second image of the batch: its own infotext
    assert len(images) == (2 if case == "batch_second_image" else 1)
    original = images[index]
    text = png_info(server, original)
    assert text == info["infotexts"][index] and text, "the PNG carries the generation's infotext"
    if case == "batch_second_image":
        assert f"Seed: {CASES[case]['seed'] + 1}," in text
    if case == "lora":
        assert "Lora hashes:" in text

    params = requests.post(server.api("png-info"), json={"image": _b64(original)}, timeout=60).json()["parameters"]
    for flag in ("Old prompt editing timelines", "Downcast alphas_cumprod", "Pad conds v0"):
        assert flag not in params, f"our own Version was read as an old A1111: {params.get('Version')}"

    again, again_info = generate(server, {"infotext": text})
    assert len(again) == 1
    assert again_info["infotexts"][0] == text
    a, b = np.asarray(original.convert("RGB")), np.asarray(again[0].convert("RGB"))
    assert a.shape == b.shape
    diff = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
    if case == "batch_second_image" and 0 < diff <= 2:
        pytest.xfail(f"{BATCH_REASON} (here max |Δ| = {diff}, {int((a != b).any(-1).sum())} pixels)")
    assert diff == 0, f"{case}: regenerated image differs (max |Δ| = {diff} of 255)"


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=_pnginfo(img))
    return base64.b64encode(buf.getvalue()).decode()


def test_the_old_version_string_would_not_reproduce_prompt_editing(server: Server) -> None:
    """The defect this file guards: "Version: v0.1.0" reads as an A1111 older than 1.6, which turns on
    the old prompt-editing timeline; the same text with our version string reproduces."""
    from webui.version import VERSION

    images, info = generate(server, dict(COMMON, **CASES["prompt_editing"]))
    text = info["infotexts"][0]
    assert f"Version: {VERSION}" in text
    old_text = text.replace(f"Version: {VERSION}", "Version: v0.1.0")
    old, old_info = generate(server, {"infotext": old_text})
    assert "Old prompt editing timelines: True" in old_info["infotexts"][0]
    assert np.abs(np.asarray(old[0], dtype=np.int16) - np.asarray(images[0], dtype=np.int16)).max() > 8


def test_lora_changes_the_image(server: Server) -> None:
    """The LoRA case means something: the same generation without the tag differs."""
    with_lora, _ = generate(server, dict(COMMON, **CASES["lora"]))
    without, _ = generate(server, dict(COMMON, **dict(CASES["lora"], prompt="an orange circle at the left")))
    assert np.abs(np.asarray(with_lora[0], dtype=np.int16) - np.asarray(without[0], dtype=np.int16)).max() > 8


def test_options_unknown_keys_are_refused_and_none_is_not_stored(server: Server) -> None:
    cfg_path = server.data_dir / "config.json"
    r = post(server, "options", {"no_such_option": 1, "CLIP_stop_at_last_layers": 2})
    assert r.status_code == 422 and "no_such_option" in r.json()["detail"], r.text
    opts = requests.get(server.api("options"), timeout=10).json()
    assert "no_such_option" not in opts and opts["CLIP_stop_at_last_layers"] == 1  # nothing changed
    assert "no_such_option" not in (json.loads(cfg_path.read_text()) if cfg_path.exists() else {})
    # None changes nothing and is never stored; what GET returns can be posted back
    assert post(server, "options", {"CLIP_stop_at_last_layers": None, "samples_save": True}).status_code == 200
    assert post(server, "options", opts).status_code == 200
    cfg = json.loads(cfg_path.read_text())
    assert None not in cfg.values() and "sd_checkpoint_hash" not in cfg


def test_infotext_overrides_leave_no_null_in_config(server: Server) -> None:
    """The PNG-Info → txt2img path with settings the infotext names (RNG, an old Version's flags):
    they apply to that generation only and config.json gets no `"key": null`."""
    text = ("a blue circle\nSteps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 9, "
            "Size: 64x64, Clip skip: 2, RNG: NV, Version: v1.5.1")
    images, info = generate(server, {"infotext": text})
    assert len(images) == 1 and "Clip skip: 2" in info["infotexts"][0]
    assert post(server, "options", {"samples_save": True}).status_code == 200  # saves config.json
    cfg = json.loads((server.data_dir / "config.json").read_text())
    assert None not in cfg.values(), cfg
    opts = requests.get(server.api("options"), timeout=10).json()
    assert opts["CLIP_stop_at_last_layers"] == 1 and opts["randn_source"] == "CPU"
    assert opts["use_downcasted_alpha_bar"] is False and opts["use_old_scheduling"] is False
