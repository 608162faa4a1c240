"""The A1111 HTTP API against the real server process (tiny real-layout checkpoints)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image, PngImagePlugin

from conftest import Server

BASE = {"prompt": "a red circle", "negative_prompt": "blurry", "steps": 3, "width": 64, "height": 64,
        "sampler_name": "Euler a", "seed": 1234}


def post(server: Server, path: str, payload: dict, timeout: float = 180) -> requests.Response:
    return requests.post(server.api(path), json=payload, timeout=timeout)


def b64_image(s: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(s)))
    img.load()
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_sd_models_lists_files_with_titles_and_errors(api_server: Server) -> None:
    models = requests.get(api_server.api("sd-models"), timeout=10).json()
    by_name = {m["model_name"]: m for m in models}
    assert "tiny-sd1" in by_name and "sub_tiny-sd1-b" in by_name
    loaded = by_name["tiny-sd1"]
    data = open(loaded["filename"], "rb").read()
    assert loaded["sha256"] == hashlib.sha256(data).hexdigest()
    assert loaded["hash"] == loaded["sha256"][:10]
    assert loaded["title"] == f"tiny-sd1.safetensors [{loaded['hash']}]"
    # broken files stay listed with their reason instead of hiding the rest
    assert by_name["empty"].get("error")
    assert by_name["notes"].get("error")


def test_samplers_and_schedulers(api_server: Server) -> None:
    names = [s["name"] for s in requests.get(api_server.api("samplers"), timeout=10).json()]
    for want in ["Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE",
                 "DPM++ 2S a", "DPM++ 3M SDE", "DDIM", "PLMS", "UniPC", "LCM"]:
        assert want in names
    labels = {s["label"]: s["name"] for s in requests.get(api_server.api("schedulers"), timeout=10).json()}
    assert labels["Karras"] == "karras" and labels["SGM Uniform"] == "sgm_uniform"
    assert {"Automatic", "Uniform", "Exponential"} <= set(labels)


def test_cmd_flags(api_server: Server) -> None:
    flags = requests.get(api_server.api("cmd-flags"), timeout=10).json()
    assert flags["nowebui"] is True and flags["port"] == int(api_server.url.rsplit(":", 1)[1])
    assert flags["ckpt_dir"].endswith("Stable-diffusion")


def test_txt2img_png_infotext_and_info(api_server: Server) -> None:
    r = post(api_server, "txt2img", BASE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 1
    img = b64_image(body["images"][0])
    assert img.size == (64, 64)
    params = img.info["parameters"]
    lines = params.split("\n")
    assert lines[0] == "a red circle" and lines[1] == "Negative prompt: blurry"
    assert lines[2].startswith("Steps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, "
                               "Size: 64x64, Model hash: ")
    info = json.loads(body["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234] and info["sampler_name"] == "Euler a"
    assert info["infotexts"] == [params] and info["sd_model_name"] == "tiny-sd1"
    assert body["parameters"]["prompt"] == "a red circle"


def test_same_seed_same_image_and_batch_seeds(api_server: Server) -> None:
    a = post(api_server, "txt2img", dict(BASE, sampler_name="DPM++ 2M", scheduler="karras")).json()
    b = post(api_server, "txt2img", dict(BASE, sampler_name="DPM++ 2M Karras")).json()
    assert np.array_equal(pixels(b64_image(a["images"][0])), pixels(b64_image(b["images"][0])))
    assert "Schedule type: Karras" in json.loads(a["info"])["infotexts"][0]
    batch = post(api_server, "txt2img", dict(BASE, seed=10, batch_size=2, n_iter=2)).json()
    info = json.loads(batch["info"])
    assert info["all_seeds"] == [10, 11, 12, 13]
    assert len(batch["images"]) == 5 and info["index_of_first_image"] == 1  # the grid first, as A1111
    assert b64_image(batch["images"][0]).size == (128, 128)
    single = post(api_server, "txt2img", dict(BASE, seed=12)).json()
    # the third image of the batch (seed 12) equals a single run with seed 12
    assert np.abs(pixels(b64_image(batch["images"][3])) - pixels(b64_image(single["images"][0]))).max() <= 1
    rnd = json.loads(post(api_server, "txt2img", dict(BASE, seed=-1)).json()["info"])
    assert rnd["seed"] >= 0 and f"Seed: {rnd['seed']}," in rnd["infotexts"][0]


def test_variation_seed_changes_image(api_server: Server) -> None:
    a = post(api_server, "txt2img", dict(BASE, subseed=5, subseed_strength=0.0)).json()
    b = post(api_server, "txt2img", dict(BASE, subseed=5, subseed_strength=0.5)).json()
    info = json.loads(b["info"])
    assert "Variation seed: 5, Variation seed strength: 0.5" in info["infotexts"][0]
    assert not np.array_equal(pixels(b64_image(a["images"][0])), pixels(b64_image(b["images"][0])))


@pytest.mark.parametrize("upscaler,extra", [("Latent", {"hr_scale": 2}), ("Lanczos", {"hr_resize_x": 96, "hr_resize_y": 96})])
def test_hires_fix(api_server: Server, upscaler: str, extra: dict) -> None:
    payload = dict(BASE, enable_hr=True, hr_upscaler=upscaler, hr_second_pass_steps=2, denoising_strength=0.5, **extra)
    r = post(api_server, "txt2img", payload)
    assert r.status_code == 200, r.text
    img = b64_image(r.json()["images"][0])
    assert img.size == ((128, 128) if upscaler == "Latent" else (96, 96))
    text = img.info["parameters"]
    assert "Size: 64x64" in text and "Denoising strength: 0.5" in text and f"Hires upscaler: {upscaler}" in text
    assert "Hires steps: 2" in text


def test_save_images_writes_numbered_png(api_server: Server) -> None:
    r = post(api_server, "txt2img", dict(BASE, seed=77, save_images=True))
    assert r.status_code == 200
    day = time.strftime("%Y-%m-%d")
    folder = api_server.data_dir / "outputs" / "txt2img-images" / day
    files = sorted(folder.glob("*-77.png"))
    assert files, list(folder.glob("*"))
    saved = Image.open(files[-1])
    assert saved.info["parameters"] == json.loads(r.json()["info"])["infotexts"][0]
    assert files[-1].name[:5].isdigit()


@pytest.mark.parametrize("payload,needle", [
    ({"sampler_name": "No Such Sampler"}, "sampler"),
    ({"width": 65}, "multiple of 8"),
    ({"steps": 0}, "steps"),
    ({"steps": 100000}, "steps"),
    ({"override_settings": {"sd_model_checkpoint": "does-not-exist"}}, "not found"),
    ({"override_settings": {"sd_model_checkpoint": "empty.safetensors"}}, "empty"),
    ({"enable_hr": True, "hr_upscaler": "Bogus"}, "upscaler"),
])
def test_bad_input_is_4xx_and_server_survives(api_server: Server, payload: dict, needle: str) -> None:
    r = post(api_server, "txt2img", dict(BASE, **payload))
    assert 400 <= r.status_code < 500, r.text
    assert needle.lower() in r.text.lower()
    assert post(api_server, "txt2img", BASE).status_code == 200


def test_options_roundtrip_persist_and_switch_model(api_server: Server) -> None:
    opts = requests.get(api_server.api("options"), timeout=10).json()
    assert opts["sd_model_checkpoint"].startswith("tiny-sd1.safetensors [")
    assert post(api_server, "options", {"CLIP_stop_at_last_layers": 2}).status_code == 200
    cfg = json.loads((api_server.data_dir / "config.json").read_text())
    assert cfg["CLIP_stop_at_last_layers"] == 2
    info = json.loads(post(api_server, "txt2img", BASE).json()["info"])
    assert "Clip skip: 2" in info["infotexts"][0]
    assert post(api_server, "options", {"CLIP_stop_at_last_layers": 1}).status_code == 200
    assert post(api_server, "options", {"CLIP_stop_at_last_layers": "abc"}).status_code == 400
    # switch the model and back
    r = post(api_server, "options", {"sd_model_checkpoint": "tiny-sd1-b"})
    assert r.status_code == 200, r.text
    assert requests.get(api_server.api("options"), timeout=10).json()["sd_model_checkpoint"].startswith(
        "sub/tiny-sd1-b.safetensors")
    b = post(api_server, "txt2img", BASE).json()
    assert json.loads(b["info"])["sd_model_name"] == "tiny-sd1-b"
    bad = post(api_server, "options", {"sd_model_checkpoint": "truncated.safetensors"})
    assert bad.status_code == 400 and "truncated" in bad.text
    assert requests.get(api_server.api("options"), timeout=10).json()["sd_model_checkpoint"].startswith("sub/tiny-sd1-b")
    assert post(api_server, "options", {"sd_model_checkpoint": "tiny-sd1.safetensors"}).status_code == 200


def test_override_settings_restored_afterwards(api_server: Server) -> None:
    r = post(api_server, "txt2img", dict(BASE, override_settings={"sd_model_checkpoint": "tiny-sd1-b",
                                                                  "CLIP_stop_at_last_layers": 3}))
    info = json.loads(r.json()["info"])
    assert info["sd_model_name"] == "tiny-sd1-b" and "Clip skip: 3" in info["infotexts"][0]
    opts = requests.get(api_server.api("options"), timeout=10).json()
    assert opts["sd_model_checkpoint"].startswith("tiny-sd1.safetensors") and opts["CLIP_stop_at_last_layers"] == 1


def test_progress_interrupt_and_queue_order(api_server: Server) -> None:
    results: dict[str, dict] = {}
    order: list[str] = []

    def run(name: str, payload: dict) -> None:
        r = post(api_server, "txt2img", payload)
        order.append(name)
        results[name] = r.json()

    long = dict(BASE, steps=150, width=128, height=128, seed=5)
    t1 = threading.Thread(target=run, args=("long", long))
    t1.start()
    seen = None
    deadline = time.time() + 60
    while time.time() < deadline:
        p = requests.get(api_server.api("progress"), timeout=10).json()
        if p["state"]["sampling_step"] >= 2:
            seen = p
            break
        time.sleep(0.1)
    assert seen is not None and 0 < seen["progress"] < 1 and seen["state"]["sampling_steps"] == 150
    t2 = threading.Thread(target=run, args=("short", dict(BASE, seed=6)))
    t2.start()
    time.sleep(0.5)
    assert requests.post(api_server.api("interrupt"), timeout=10).status_code == 200
    t1.join(120)
    t2.join(120)
    assert order == ["long", "short"]
    assert len(results["long"]["images"]) == 1  # an interrupted job still returns what it had
    assert json.loads(results["short"]["info"])["seed"] == 6


def test_png_info(api_server: Server) -> None:
    text = ("a castle\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, "
            "Seed: 3528893142, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", text)
    meta.add_text("Software", "test")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=meta)
    data = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = post(api_server, "png-info", {"image": data}).json()
    assert body["info"] == text and body["items"].get("Software") == "test"
    assert body["parameters"]["Seed"] == "3528893142" and body["parameters"]["Size-1"] == "512"
    assert post(api_server, "png-info", {"image": "not base64 !!"}).status_code == 400


def test_refresh_unload_reload(api_server: Server, model_dir) -> None:
    from tiny_models import make_tiny_checkpoint
    make_tiny_checkpoint(model_dir / "late.safetensors", family="sd1", seed=3)
    assert post(api_server, "refresh-checkpoints", {}).status_code == 200
    names = [m["model_name"] for m in requests.get(api_server.api("sd-models"), timeout=10).json()]
    assert "late" in names
    assert post(api_server, "unload-checkpoint", {}).status_code == 200
    assert requests.get(api_server.api("options"), timeout=10).json().get("sd_checkpoint_hash") is None
    assert post(api_server, "reload-checkpoint", {}).status_code == 200
    assert requests.get(api_server.api("options"), timeout=10).json()["sd_model_checkpoint"].startswith("tiny-sd1.")
    # a generation after an unload loads the model again by itself
    assert post(api_server, "unload-checkpoint", {}).status_code == 200
    assert post(api_server, "txt2img", BASE).status_code == 200


def test_openapi_docs(api_server: Server) -> None:
    assert requests.get(f"{api_server.url}/docs", timeout=10).status_code == 200
    spec = requests.get(f"{api_server.url}/openapi.json", timeout=10).json()
    for path in ["/sdapi/v1/txt2img", "/sdapi/v1/progress", "/sdapi/v1/options", "/sdapi/v1/png-info"]:
        assert path in spec["paths"]


def test_webuiapi_client(api_server: Server) -> None:
    import webuiapi
    host, port = api_server.url.rsplit(":", 1)
    api = webuiapi.WebUIApi(host="127.0.0.1", port=int(port), sampler="Euler a", steps=3)
    res = api.txt2img(prompt="a blue square", seed=99, width=64, height=64, cfg_scale=5)
    assert res.image.size == (64, 64)
    assert res.info["seed"] == 99 and "CFG scale: 5" in res.info["infotexts"][0]
    assert api.util_get_current_model().startswith("tiny-sd1")
    assert any(s["name"] == "Euler a" for s in api.get_samplers())
    info = api.png_info(res.image)
    assert info.parameters["Seed"] == "99" and info.parameters["Prompt"] == "a blue square"
    assert api.get_progress()["state"]["job_count"] >= 0


def test_prompt_syntax_styles_and_embeddings_over_the_api(api_server: Server) -> None:
    styles_csv = api_server.data_dir / "styles.csv"
    styles_csv.write_text('name,prompt,negative_prompt\nsharp,"{prompt}, sharp focus",blurry\n', encoding="utf-8")
    assert {"name": "sharp", "prompt": "{prompt}, sharp focus", "negative_prompt": "blurry"} in \
        requests.get(api_server.api("prompt-styles"), timeout=10).json()
    payload = dict(BASE, prompt="a [red:blue:2] circle AND a square:0.5 <lora:nowhere:1>", negative_prompt="",
                   styles=["sharp", "gone"])
    r = post(api_server, "txt2img", payload)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert sorted(info["warnings"]) == ["Networks not found: lora:nowhere", "Styles not found: gone"]
    assert info["infotexts"][0].startswith("a [red:blue:2] circle AND a square:0.5 <lora:nowhere:1>, sharp focus\n"
                                           "Negative prompt: blurry\n")
    emb = requests.get(api_server.api("embeddings"), timeout=10).json()
    assert set(emb) == {"loaded", "skipped"}
    assert requests.post(api_server.api("refresh-embeddings"), timeout=10).status_code == 200
    bad = post(api_server, "txt2img", dict(BASE, prompt="((((unclosed [a:b:c:d] \\"))
    assert bad.status_code == 200  # malformed syntax is literal text, never an error


def test_lora_listing_and_tag_over_the_api(api_server: Server) -> None:
    from safetensors.torch import save_file
    import torch

    lora_dir = api_server.data_dir / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_no_layer_here.lora_down.weight": torch.zeros(1, 4),
               "lora_unet_no_layer_here.lora_up.weight": torch.zeros(4, 1)}, str(lora_dir / "odd.safetensors"),
              metadata={"ss_output_name": "OddOne"})
    assert requests.post(api_server.api("refresh-loras"), timeout=10).status_code == 200
    listed = requests.get(api_server.api("loras"), timeout=10).json()
    assert {"name": "odd", "alias": "OddOne", "path": str(lora_dir / "odd.safetensors"),
            "metadata": {"ss_output_name": "OddOne"}, "sd_version": None, "fits": None, "note": ""} in listed
    r = post(api_server, "txt2img", dict(BASE, prompt="a red circle <lora:OddOne:1>"))
    assert r.status_code == 200
    warnings = json.loads(r.json()["info"])["warnings"]
    assert len(warnings) == 1 and "none of its 1 layers match" in warnings[0]


def test_vae_listing_and_bad_vae_override_is_a_4xx(api_server: Server) -> None:
    vae_dir = api_server.data_dir / "models" / "VAE"
    vae_dir.mkdir(parents=True, exist_ok=True)
    (vae_dir / "junk-vae.safetensors").write_bytes(b"\0" * 64)
    assert requests.post(api_server.api("refresh-vae"), timeout=10).status_code == 200
    listed = requests.get(api_server.api("sd-vae"), timeout=10).json()
    assert {"model_name": "junk-vae.safetensors", "filename": str(vae_dir / "junk-vae.safetensors"),
            "error": "safetensors header is not valid JSON (JSONDecodeError); the file is corrupt or not a "
                     "safetensors file"} in listed
    r = post(api_server, "txt2img", dict(BASE, override_settings={"sd_vae": "junk-vae.safetensors"}))
    assert r.status_code in (400, 422) and "junk-vae.safetensors" in r.text
    r = post(api_server, "txt2img", dict(BASE, override_settings={"sd_vae": "None"}))
    assert r.status_code == 200 and json.loads(r.json()["info"])["sd_vae_name"] is None


def test_controlnet_routes_and_unit_errors(api_server: Server) -> None:
    base = api_server.url
    assert requests.get(base + "/controlnet/version", timeout=10).json() == {"version": 2}
    assert "canny" in requests.get(base + "/controlnet/module_list", timeout=10).json()["module_list"]
    assert requests.get(base + "/controlnet/model_list", timeout=10).json() == {"model_list": [], "unusable": {}}
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    r = requests.post(base + "/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [b64],
                                                          "controlnet_processor_res": 32}, timeout=30)
    edges = pixels(b64_image(r.json()["images"][0]))
    assert edges.shape[:2] == (32, 32) and edges[8, 8:24].max() == 255 and edges[16, 16].max() == 0
    unit = {"enabled": True, "module": "canny", "model": "missing_model", "image": b64}
    r = post(api_server, "txt2img", dict(BASE, alwayson_scripts={"controlnet": {"args": [unit]}}))
    assert r.status_code in (400, 422) and "missing_model" in r.text


class _RunsCode:
    """Pickles as a call to os.system: a file that must never be unpickled."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def _lying_safetensors(path) -> None:
    """A header promising a 4 MB tensor over a 16-byte data section."""
    import struct

    header = json.dumps({"x.lora_down.weight": {"dtype": "F32", "shape": [1000, 1000],
                                                "data_offsets": [0, 4000000]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


def test_bad_files_of_every_kind_are_listed_refused_and_change_nothing(api_server: Server, tmp_path) -> None:
    """Truncated, empty, lying header, code-running pickle, keys matching nothing, wrong
    architecture: each listed as unusable with its reason, each refused with a clear message when
    used, the server keeps running and the loaded model draws exactly what it drew before."""
    import torch
    from safetensors.torch import save_file

    models = api_server.data_dir / "models"
    folders = {k: models / k for k in ("Lora", "VAE", "hypernetworks", "ControlNet")}
    for d in folders.values():
        d.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "code-ran"
    good = tmp_path / "good.safetensors"
    save_file({"lora_unet_a.lora_down.weight": torch.randn(4, 64), "lora_unet_a.lora_up.weight": torch.randn(64, 4)},
              str(good))
    lora, vae, hn, cn = (folders[k] for k in ("Lora", "VAE", "hypernetworks", "ControlNet"))
    (lora / "bad_trunc.safetensors").write_bytes(good.read_bytes()[:600])
    (lora / "bad_zero.safetensors").write_bytes(b"")
    _lying_safetensors(lora / "bad_liar.safetensors")
    torch.save({"x.lora_down.weight": _RunsCode(marker)}, str(lora / "bad_evil.pt"))
    save_file({"foo.bar": torch.zeros(2)}, str(lora / "bad_keys.safetensors"))
    torch.save({"encoder.conv_in.weight": _RunsCode(marker)}, str(vae / "bad-evil.vae.pt"))
    save_file({"encoder.conv_in.weight": torch.zeros(8, 3, 3, 3), "decoder.conv_in.weight": torch.zeros(8, 16, 3, 3)},
              str(vae / "bad-flux-like.safetensors"))
    torch.save({768: _RunsCode(marker)}, str(hn / "bad_evil_hn.pt"))
    torch.save({768: [{}, {}], "layer_structure": [1, 2, 1]}, str(tmp_path / "hn.pt"))
    (hn / "bad_trunc_hn.pt").write_bytes((tmp_path / "hn.pt").read_bytes()[:300])
    (cn / "bad_trunc_cn.safetensors").write_bytes(good.read_bytes()[:600])
    save_file({"body.0.block1.weight": torch.zeros(2), "conv_in.weight": torch.zeros(2)},
              str(cn / "bad_t2i_adapter.safetensors"))

    before = post(api_server, "txt2img", BASE).json()["images"][0]

    truncated = "lies outside the file"
    evil = "refused: this pickle would run code"
    loras = {e["name"]: e.get("error", "") for e in requests.get(api_server.api("loras"), timeout=30).json()}
    assert truncated in loras["bad_trunc"] and "empty (0 bytes)" in loras["bad_zero"]
    assert truncated in loras["bad_liar"] and evil in loras["bad_evil"]
    assert "not a LoRA file" in loras["bad_keys"]
    vaes = {e["model_name"]: e.get("error", "") for e in requests.get(api_server.api("sd-vae"), timeout=30).json()}
    assert evil in vaes["bad-evil.vae.pt"] and "16 latent channels" in vaes["bad-flux-like.safetensors"]
    hns = {e["name"]: e.get("error", "") for e in requests.get(api_server.api("hypernetworks"), timeout=30).json()}
    assert evil in hns["bad_evil_hn"] and "truncated" in hns["bad_trunc_hn"]
    cns = requests.get(api_server.url + "/controlnet/model_list", timeout=30).json()
    assert not [t for t in cns["model_list"] if t.startswith("bad_")]  # not offered for use
    assert truncated in cns["unusable"]["bad_trunc_cn.safetensors"]
    assert "T2I-Adapter" in cns["unusable"]["bad_t2i_adapter.safetensors"]

    # using them: LoRA/hypernetwork tags warn (A1111 generates on), a VAE or ControlNet unit is a 4xx
    tags = " ".join(f"<lora:{n}:1>" for n in ("bad_trunc", "bad_zero", "bad_liar", "bad_evil", "bad_keys"))
    r = post(api_server, "txt2img", dict(BASE, prompt=BASE["prompt"] + " " + tags + " <hypernet:bad_evil_hn:1>"))
    assert r.status_code == 200
    warnings = json.loads(r.json()["info"])["warnings"]
    assert sum("is unusable" in w for w in warnings) == 6, warnings
    assert np.array_equal(pixels(b64_image(r.json()["images"][0])), pixels(b64_image(before)))  # nothing applied
    r = post(api_server, "txt2img", dict(BASE, override_settings={"sd_vae": "bad-evil.vae.pt"}))
    assert r.status_code in (400, 422) and evil in r.text
    unit = {"enabled": True, "module": "none", "model": "bad_trunc_cn", "image": before}
    r = post(api_server, "txt2img", dict(BASE, alwayson_scripts={"controlnet": {"args": [unit]}}))
    assert r.status_code in (400, 422) and "bad_trunc_cn.safetensors is unusable" in r.text
    assert post(api_server, "txt2img", BASE).json()["images"][0] == before  # the model is unchanged
    assert not marker.exists()  # no pickle ever ran

    for d in folders.values():  # leave the shared server's folders as other tests expect them
        for f in d.glob("bad*"):
            f.unlink()
