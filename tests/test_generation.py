"""txt2img through the service layer in-process: every sampler, every family, determinism, offline."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_models import make_tiny_checkpoint
from webui.engine.samplers import SAMPLERS
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.txt2img import Txt2ImgService
from webui.settings import Settings


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gen")
    ckpt = root / "models"
    ckpt.mkdir()
    make_tiny_checkpoint(ckpt / "sd1.safetensors", family="sd1", seed=11)
    make_tiny_checkpoint(ckpt / "sd2v.safetensors", family="sd2", seed=12,
                         metadata={"modelspec.prediction_type": "v"})
    make_tiny_checkpoint(ckpt / "sdxl.safetensors", family="sdxl", seed=13)
    make_tiny_checkpoint(ckpt / "sd1-inpainting.safetensors", family="sd1", inpainting=True, seed=14)
    registry = CheckpointRegistry(ckpt, root / "cache")
    registry.refresh()
    policy = DevicePolicy.from_flags(["all"], None, "full", True, True)
    models = ModelService(registry, policy)
    settings = Settings.load(root / "config.json")
    return models, Txt2ImgService(models, settings, root / "outputs"), root


def run(svc: Txt2ImgService, **kw):
    req = Txt2ImgRequest(**{"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 3,
                            "sampler_name": "Euler", **kw})
    return svc.run(req, JobState("t", "test"), save=False)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLERS])
def test_every_sampler_generates_deterministically(services, sampler: str) -> None:
    models, svc, _ = services
    models.load("sd1.safetensors")
    a = run(svc, sampler_name=sampler)
    b = run(svc, sampler_name=sampler)
    arr = np.asarray(a.images[0])
    assert arr.shape == (64, 64, 3)
    assert np.isfinite(arr).all() and arr.std() > 0  # not a flat/black image
    assert np.array_equal(arr, np.asarray(b.images[0]))
    assert f"Sampler: {sampler}," in a.infotexts[0]
    c = run(svc, sampler_name=sampler, seed=4)
    assert not np.array_equal(arr, np.asarray(c.images[0]))


@pytest.mark.parametrize("name,family", [("sd2v.safetensors", "sd2"), ("sdxl.safetensors", "sdxl"),
                                         ("sd1-inpainting.safetensors", "sd1")])
def test_each_family_generates_offline(services, no_network, name: str, family: str) -> None:
    models, svc, _ = services
    loaded = models.load(name)
    assert loaded.family == family
    res = run(svc, sampler_name="DPM++ 2M", width=64, height=96, enable_hr=True, hr_scale=1.5,
              hr_second_pass_steps=2, denoising_strength=0.6)
    assert res.images[0].size == (96, 144)
    assert "Hires upscale: 1.5" in res.infotexts[0]
    if name.startswith("sd2v"):
        assert loaded.sd.prediction_type == "v_prediction"


def test_clip_skip_changes_conditioning(services) -> None:
    models, svc, _ = services
    m = models.load("sd1.safetensors")
    a = m.encoder.encode(["a red circle"], 1).cross_attn
    b = m.encoder.encode(["a red circle"], 2).cross_attn
    assert a.shape == b.shape and not torch.equal(a, b)


def test_long_prompt_uses_more_chunks(services) -> None:
    models, svc, _ = services
    m = models.load("sd1.safetensors")
    long = ", ".join(["a red circle on a blue background"] * 20)
    c = m.encoder.encode([long], 1)
    assert c.cross_attn.shape[1] == 77 * 3
    assert m.encoder.encode(["a BREAK b"], 1).cross_attn.shape[1] == 154
    res = run(svc, prompt=long, negative_prompt="short")
    assert res.images[0].size == (64, 64)


def _run_and_interrupt(svc: Txt2ImgService, req: Txt2ImgRequest, at_step: int):
    import threading
    import time
    state = JobState("t", "test")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", svc.run(req, state, save=False)))
    t.start()
    deadline = time.time() + 60
    while state.sampling_step < at_step and time.time() < deadline and t.is_alive():
        time.sleep(0.005)
    state.interrupt()
    t.join(60)
    return out["r"], state


def test_interrupt_single_image_returns_partial(services) -> None:
    models, svc, _ = services
    models.load("sd1.safetensors")
    req = Txt2ImgRequest(prompt="x", steps=150, width=64, height=64, seed=1, sampler_name="Euler")
    res, state = _run_and_interrupt(svc, req, 3)
    assert len(res.images) == 1 and state.sampling_step < 150


def test_interrupt_with_several_images_finishes_current_one(services) -> None:
    models, svc, _ = services
    models.load("sd1.safetensors")
    req = Txt2ImgRequest(prompt="x", steps=30, width=64, height=64, seed=1, sampler_name="Euler", n_iter=3)
    res, _ = _run_and_interrupt(svc, req, 3)
    assert len(res.images) == 1
    full = run(svc, prompt="x", steps=30, seed=1)
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(full.images[0]))
