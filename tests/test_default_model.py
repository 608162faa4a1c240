"""The built-in shapes demo model: its training script, the shipped files, and what they draw.

Images are judged on pixels (bench/shape_judge.py); the floors here are looser than the
benchmark's targets, so that a regression in the loop, the loader or the file shows up while
seed-to-seed variation does not.
"""
from __future__ import annotations

import base64
import io
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from conftest import ROOT, start_server, stop_server, wait_for_model

sys.path.insert(0, str(ROOT))
from bench.shape_judge import judge  # noqa: E402
from tools.shapes_data import (  # noqa: E402
    COLORS, SHAPES, Scene, all_triplets, caption, edge_map, held_out_triplets, random_scene, render, seen_triplets,
)
from webui.models.file_io import read_safetensors_header  # noqa: E402

BUILTIN = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
CONTROLNET = ROOT / "models" / "ControlNet" / "control_shapes-demo-v4_canny.safetensors"


# ------------------------------------------------------------------------------ the world

def test_judge_reads_every_clean_drawing_right() -> None:
    rng = random.Random(5)
    for _ in range(300):
        scene = random_scene(rng, all_triplets())
        assert all(judge(render(scene)).score(scene).values()), scene


def test_world_has_the_required_variety_and_a_fixed_held_out_split() -> None:
    assert len(COLORS) >= 7 and {"circle", "square", "triangle", "star"} <= set(SHAPES)
    held = held_out_triplets()
    assert len(held) == 28 and held == held_out_triplets()
    assert not held & set(seen_triplets())
    assert {c for c, _, _ in held} == set(COLORS)  # every colour appears in some unseen combination
    assert caption(Scene("red", "circle", "blue", "left")) == "a red circle at the left on a blue background"
    edges = edge_map(render(Scene("red", "star", "green", "left")))
    ys, xs = np.nonzero(edges[:, :, 0])
    assert edges.max() == 255 and xs.mean() < 24  # an outline, at the left


# ------------------------------------------------------------------------------ the script

@pytest.mark.slow
def test_training_script_quick_mode(tmp_path: Path) -> None:
    out, cn_out = tmp_path / "m.safetensors", tmp_path / "cn.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_default_model.py"), "--quick",
                           "--out", str(out), "--controlnet-out", str(cn_out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = re.findall(r"^\s+unet: (.*)$", proc.stdout, re.MULTILINE)
    assert curve and len(curve[0].split()) == 10  # one point per step in quick mode
    assert re.search(r"^\s+vae: \d+:\d", proc.stdout, re.MULTILINE)
    assert re.search(r"^\s+controlnet: \d+:\d", proc.stdout, re.MULTILINE)

    infos, meta = read_safetensors_header(out)
    assert meta["modelspec.resolution"] == "64x64" and meta["modelspec.architecture"] == "stable-diffusion-v1"
    assert {"model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_out.weight",
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"} <= set(infos)
    assert tuple(infos["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].shape) == (49408, 64)
    cn_infos, _ = read_safetensors_header(cn_out)
    assert all(k.startswith("control_model.") for k in cn_infos)
    assert "control_model.input_hint_block.14.weight" in cn_infos

    from webui.models.load import load_checkpoint

    model = load_checkpoint(out)
    assert (model.family, model.default_size, model.vae_scale_factor) == ("sd1", 64, 8)


@pytest.mark.slow
def test_training_script_v_prediction_zero_snr_checkpoint_loads_and_samples(tmp_path: Path) -> None:
    """The position recipe's flags: the file says v-prediction and carries the zero-terminal-SNR
    schedule (float32, A1111's finite last value), and our loader and loop use both."""
    import torch

    out = tmp_path / "v.safetensors"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "train_default_model.py"), "--quick",
                           "--no-controlnet", "--prediction", "v", "--zero-snr", "--x0-floor", "1",
                           "--te-embedding-std", "0.5", "--high-t-fraction", "0.5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos, meta = read_safetensors_header(out)
    assert meta["modelspec.prediction_type"] == "v" and infos["alphas_cumprod"].dtype == "F32"

    from webui.engine.model_schedule import ModelSchedule
    from webui.models.load import load_checkpoint, ldm_alphas_cumprod

    model = load_checkpoint(out)
    assert model.prediction_type == "v_prediction"
    ac = model.alphas_cumprod
    assert float(ac[-1]) == pytest.approx(4.8973451890853435e-08, rel=1e-6)
    assert float(ac[0]) == pytest.approx(float(ldm_alphas_cumprod()[0]), rel=1e-6)  # first step kept
    assert ModelSchedule(ac, model.prediction_type).sigma_max == pytest.approx(4518.8, rel=1e-3)
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "train_default_model.py"), "--quick", "--zero-snr",
                          "--prediction", "epsilon", "--out", str(tmp_path / "e.safetensors")], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert bad.returncode != 0 and "--zero-snr needs --prediction v" in bad.stderr
    assert torch.isfinite(ac).all()

    # sampling starts at sigma 4518.8: the image must come out finite (a NaN latent decodes to a flat image)
    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.jobs import JobState
    from webui.services.model_service import ModelService
    from webui.services.requests import Txt2ImgRequest
    from webui.services.txt2img import Txt2ImgService
    from webui.settings import Settings

    reg = CheckpointRegistry(tmp_path, tmp_path / "cache")
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags(["all"], None, "full", True, True))
    models.load("v.safetensors")
    res = Txt2ImgService(models, Settings.load(tmp_path / "config.json"), tmp_path / "o").run(
        Txt2ImgRequest(prompt="a red circle", steps=6, sampler_name="DPM++ 2M", seed=1), JobState("t", "t"), save=False)
    img = np.asarray(res.images[0], np.int16)
    assert img.shape == (64, 64, 3) and img.std() > 1


# ------------------------------------------------------------------------------ shipped files

def test_shipped_checkpoint_is_a_real_fp16_ldm_file_with_modelspec() -> None:
    assert BUILTIN.is_file(), "run tools/train_default_model.py"
    assert BUILTIN.stat().st_size <= 25_000_000
    infos, meta = read_safetensors_header(BUILTIN)
    floats = {i.dtype for k, i in infos.items() if i.dtype.startswith(("F", "BF")) and k != "alphas_cumprod"}
    assert floats == {"F16"}
    # v-prediction on a schedule whose last sigma is 60, carried as A1111 reads it (float32)
    assert meta["modelspec.prediction_type"] == "v" and infos["alphas_cumprod"].dtype == "F32"
    from webui.engine.model_schedule import ModelSchedule
    from webui.models.load import load_checkpoint
    model = load_checkpoint(BUILTIN)
    assert ModelSchedule(model.alphas_cumprod, model.prediction_type).sigma_max == pytest.approx(60, rel=1e-3)
    for key in ("title", "architecture", "resolution", "description", "license"):
        assert meta.get(f"modelspec.{key}"), key
    assert "demonstration model" in meta["modelspec.description"]
    assert json.loads(meta["training.held_out"]) == [list(t) for t in sorted(held_out_triplets())]
    assert CONTROLNET.is_file() and CONTROLNET.stat().st_size <= 10_000_000
    cn_infos, cn_meta = read_safetensors_header(CONTROLNET)
    assert all(k.startswith("control_model.") for k in cn_infos) and cn_meta["modelspec.title"]


@pytest.fixture(scope="module")
def service():
    from bench.bench_default_model import make_service

    return make_service(BUILTIN)


def _generate(service, prompt: str, seed: int) -> Image.Image:
    from bench.bench_default_model import generate

    return generate(service[0], prompt, seed, 20, 7.0, "DPM++ 2M")


def test_red_circle_on_blue_background(service) -> None:
    img = _generate(service, "a red circle on a blue background", 1)
    assert img.size == (64, 64)  # the model's modelspec.resolution
    arr = np.asarray(img)
    border = np.concatenate([arr[:3].reshape(-1, 3), arr[-3:].reshape(-1, 3)])
    blueish = (border[:, 2] > 150) & (border[:, 0] < 100)
    assert blueish.mean() > 0.8
    v = judge(img)
    assert (v.background, v.color, v.shape) == ("blue", "red", "circle") and 0.03 < v.blob_fraction < 0.3


@pytest.mark.parametrize("scene", [Scene("yellow", "star", "black", "left"), Scene("white", "square", "green", "top"),
                                   Scene("green", "triangle", "white", "bottom"), Scene("blue", "circle", "yellow", "right")])
def test_fixed_prompts_meet_floors(service, scene: Scene) -> None:
    """Both seeds: background, shape colour and position word as the prompt says, one shape-sized
    blob, and the shape class — except for squares, which v4 often draws rounded (judged a circle;
    the README's status says so), so for them only colour, background and place are held."""
    verdicts = [judge(_generate(service, caption(scene), seed)) for seed in (1, 2)]
    for v in verdicts:
        assert (v.background, v.color, v.position) == (scene.background, scene.color, scene.position), verdicts
        assert 0.03 < v.blob_fraction < 0.3, verdicts
        if scene.shape != "square":
            assert v.shape == scene.shape, verdicts


def test_controlnet_edges_move_the_shape(service) -> None:
    """Driven with diffusers directly: edges of a star at the left, a prompt that says right."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionControlNetPipeline

    from webui.models.controlnet_io import load_controlnet

    sd = service[1].sd
    # the file's own schedule (v-prediction, terminal sigma 60) as diffusers' trained betas
    ac = sd.alphas_cumprod.double()
    betas = (1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])).float()
    pipe = StableDiffusionControlNetPipeline(
        vae=sd.vae, text_encoder=sd.text_encoders[0], tokenizer=sd.tokenizers[0], unet=sd.unet,
        controlnet=load_controlnet(CONTROLNET), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
        scheduler=DPMSolverMultistepScheduler(trained_betas=betas.numpy(), prediction_type=sd.prediction_type,
                                              use_karras_sigmas=True))
    pipe.set_progress_bar_config(disable=True)
    edges = Image.fromarray(edge_map(render(Scene("white", "star", "black", "left"))))
    positions = []
    for seed in (1, 2):
        img = pipe("a yellow star at the right on a blue background", image=edges, num_inference_steps=20,
                   height=64, width=64, generator=torch.Generator().manual_seed(seed)).images[0]
        positions.append(judge(img).position)
    assert positions.count("left") >= 1 and "right" not in positions, positions


# ------------------------------------------------------------------------------ launch

def test_fresh_install_launches_with_the_builtin_model(tmp_path: Path) -> None:
    """Empty models folder: the server loads the shipped model; API and defaults follow it."""
    ckpt_dir = tmp_path / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    server = start_server(tmp_path, ckpt_dir)
    try:
        opts = wait_for_model(server)
        assert opts["sd_model_checkpoint"].startswith("shapes-demo-v4")
        models = requests.get(server.api("sd-models"), timeout=10).json()
        assert [m["model_name"] for m in models] == ["shapes-demo-v4"]
        r = requests.post(server.api("txt2img"), json={"prompt": "a red circle on a blue background",
                                                        "seed": 1, "steps": 20, "sampler_name": "DPM++ 2M"},
                          timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        img = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
        assert img.size == (64, 64) and (body["parameters"]["width"], body["parameters"]["height"]) == (64, 64)
        assert json.loads(body["info"])["sd_model_name"] == "shapes-demo-v4"
        v = judge(img)
        assert (v.background, v.color) == ("blue", "red")
    finally:
        stop_server(server)


def test_builtin_model_stays_listed_beside_user_checkpoints(tmp_path: Path) -> None:
    from tiny_models import make_tiny_checkpoint
    from webui.models.registry import CheckpointRegistry

    ckpt_dir = tmp_path / "Stable-diffusion"
    make_tiny_checkpoint(ckpt_dir / "mine.safetensors")
    reg = CheckpointRegistry(ckpt_dir, tmp_path / "cache", builtin=[BUILTIN])
    reg.refresh()
    names = [i.model_name for i in reg.list()]
    assert set(names) == {"mine", "shapes-demo-v4"}
    assert reg.get("shapes-demo-v4").path == BUILTIN


def test_a_user_checkpoint_is_the_default_over_the_builtin(tmp_path: Path) -> None:
    from tiny_models import make_tiny_checkpoint
    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.model_service import ModelService

    ckpt_dir = tmp_path / "Stable-diffusion"
    ckpt_dir.mkdir()
    reg = CheckpointRegistry(ckpt_dir, tmp_path / "cache", builtin=[BUILTIN])
    reg.refresh()
    svc = ModelService(reg, DevicePolicy.from_flags([], None, "autocast", False, False))
    assert svc.default_checkpoint().path == BUILTIN  # empty folder: the shipped model
    make_tiny_checkpoint(ckpt_dir / "zzz-mine.safetensors")  # sorts after "shapes-demo-v4"
    reg.refresh()
    assert svc.default_checkpoint().model_name == "zzz-mine"
