"""img2img's built-in scripts (SD upscale, Poor man's outpainting, Outpainting mk2) and the tile
grid they use, on tiny real-layout checkpoints; plus the API's script_name/script_args."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import Server
from tiny_models import make_tiny_checkpoint
from webui.imaging.tiles import combine_grid, split_grid
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.services.img2img import Img2ImgService
from webui.services.img2img_scripts import Img2ImgScripts
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Img2ImgRequest
from webui.services.txt2img import GenerationError
from webui.settings import Settings


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("scripts")
    (root / "models").mkdir()
    make_tiny_checkpoint(root / "models" / "sd1.safetensors", family="sd1", seed=31)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
    models.load("sd1.safetensors")
    svc = Img2ImgService(models, Settings.load(root / "config.json"), root / "outputs")
    return Img2ImgScripts(svc), root


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (-(-h // 4), -(-w // 4), 3)).astype(np.uint8)
    return Image.fromarray(blocks.repeat(4, 0).repeat(4, 1)[:h, :w])


def run(scripts: Img2ImgScripts, name: str, args: list, **kw):
    req = Img2ImgRequest(**{"prompt": "x", "steps": 3, "width": 64, "height": 64, "seed": 5, "sampler_name": "Euler",
                            "script_name": name, "script_args": args, **kw})
    return scripts.run(req, JobState("t", "t"), save=kw.get("save_images", False))


@pytest.mark.parametrize("size,tile,overlap", [((200, 136), (64, 64), 16), ((64, 64), (64, 64), 8),
                                               ((130, 70), (64, 48), 0), ((300, 64), (96, 64), 32)])
def test_tiles_split_and_join_back_exactly(size, tile, overlap) -> None:
    img = picture(*size, seed=1)
    grid = split_grid(img, *tile, overlap)
    assert all(t.image.size == tile for t in grid.tiles())
    xs = sorted({t.x for t in grid.tiles()})
    assert xs[0] == 0 and xs[-1] + tile[0] == size[0]
    assert np.array_equal(np.asarray(combine_grid(grid)), np.asarray(img))


def test_tiles_blend_their_overlap() -> None:
    grid = split_grid(Image.new("RGB", (112, 64)), 64, 64, 16)
    grid.replace([Image.new("RGB", (64, 64), (0, 0, 0)), Image.new("RGB", (64, 64), (255, 255, 255))])
    row = np.asarray(combine_grid(grid))[10, :, 0].astype(int)
    assert row[47] == 0 and row[-1] == 255  # the second tile starts at x=48
    assert 0 < row[56] < 255 and np.all(np.diff(row[48:64]) >= 0)  # a ramp across the overlap


def test_sd_upscale_size_tiles_and_infotext(scripts) -> None:
    s, root = scripts
    src = picture(80, 48, seed=2)
    zero = run(s, "SD upscale", ["", 16, "Lanczos", 2.0], init_images=[src], denoising_strength=0.0)
    want = src.resize((160, 96), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(zero.images[0]), np.asarray(want))  # tiles unchanged → the upscale
    res = run(s, "sd upscale", ["", 16, "Lanczos", 2.0], init_images=[src], denoising_strength=0.5,
              save_images=True)
    out = res.images[0]
    assert out.size == (160, 96)
    assert np.abs(np.asarray(out).astype(int) - np.asarray(want)).mean() > 3
    text = res.infotexts[0]
    assert "SD upscale overlap: 16" in text and "SD upscale upscaler: Lanczos" in text
    assert res.paths and res.paths[0].parent.parent == root / "outputs" / "img2img-images"
    assert Image.open(res.paths[0]).size == (160, 96)


@pytest.mark.parametrize("name,args,fill_word", [
    ("Poor man's outpainting", [32, 4, "fill", ["left", "down"]], "Masked content: fill"),
    ("Outpainting mk2", ["", 32, 4, ["left", "down"], 1.0, 0.05], None),
])
def test_outpainting_grows_the_canvas_and_keeps_the_picture(scripts, name, args, fill_word) -> None:
    s, _ = scripts
    src = picture(64, 64, seed=3)
    res = run(s, name, args, init_images=[src], denoising_strength=0.8)
    out = np.asarray(res.images[0]).astype(int)
    assert out.shape == (96, 96, 3)  # 32 px more on the left and at the bottom
    a = np.asarray(src).astype(int)
    # the picture sits at x 32.., y 0..63; its part away from the repainted seam is untouched
    assert np.array_equal(out[0:40, 32 + 20:], a[0:40, 20:])
    new = out[:, :24]
    assert new.std() > 3 and new.mean() > 10  # the new border is painted, not left black
    assert "Outpainting: " in res.infotexts[0]
    if fill_word:
        assert fill_word in res.infotexts[0]


def test_bad_script_arguments_are_clear(scripts) -> None:
    s, _ = scripts
    with pytest.raises(GenerationError, match="not found"):
        run(s, "No such script", [], init_images=[picture(64, 64)])
    with pytest.raises(GenerationError, match="direction"):
        run(s, "Poor man's outpainting", [32, 4, 0, ["sideways"]], init_images=[picture(64, 64)])
    with pytest.raises(GenerationError, match="upscaler"):
        run(s, "SD upscale", ["", 16, "Bogus", 2.0], init_images=[picture(64, 64)])


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_scripts_over_the_api(api_server: Server) -> None:
    listed = requests.get(api_server.api("scripts"), timeout=10).json()
    assert {"sd upscale", "poor man's outpainting", "outpainting mk2"} <= set(listed["img2img"])
    info = {s["name"]: s for s in requests.get(api_server.api("script-info"), timeout=10).json()}
    assert info["sd upscale"]["args"][3]["value"] == 2.0
    base = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1, "init_images": [_b64(picture(64, 64))]}
    # A1111's own API test payload
    r = requests.post(api_server.api("img2img"), json=dict(base, script_name="sd upscale",
                                                           script_args=["", 8, "Lanczos", 2.0]), timeout=120)
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert img.size == (128, 128)
    assert "SD upscale upscaler: Lanczos" in json.loads(r.json()["info"])["infotexts"][0]
    bad = requests.post(api_server.api("img2img"), json=dict(base, script_name="nope"), timeout=30)
    assert bad.status_code == 422 and "nope" in bad.text
    txt = requests.post(api_server.api("txt2img"), json={"prompt": "x", "steps": 2, "width": 64, "height": 64,
                                                         "script_name": "sd upscale"}, timeout=30)
    assert txt.status_code == 422


def test_model_upscalers_in_sd_upscale_and_hires_fix(scripts, tmp_path) -> None:
    """A Real-ESRGAN file from models/RealESRGAN serves SD upscale and the hires fix (A1111 lists
    model upscalers in both)."""
    import torch
    from test_extras import compact_state_dict
    from webui.imaging.upscalers import UpscalerRegistry
    from webui.services.requests import Txt2ImgRequest
    from webui.services.txt2img import Txt2ImgService

    s, root = scripts
    folder = tmp_path / "RealESRGAN"
    folder.mkdir()
    torch.save({"params": compact_state_dict()}, folder / "tiny-x2.pth")
    reg = UpscalerRegistry({"RealESRGAN": folder})

    def up(img: Image.Image, name: str, scale: float) -> Image.Image:
        return reg.upscale(img, scale, name)

    with_models = Img2ImgScripts(s.svc, up, reg.names)
    assert "tiny-x2" in with_models.names()
    src = picture(64, 64, seed=9)
    res = run(with_models, "SD upscale", ["", 16, "tiny-x2", 2.0], init_images=[src], denoising_strength=0.0)
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(reg.upscale(src, 2.0, "tiny-x2")))
    # the radio's index (A1111's UI sends it) picks the same upscaler
    idx = with_models.names().index("tiny-x2")
    res2 = run(with_models, "SD upscale", ["", 16, idx, 2.0], init_images=[src], denoising_strength=0.0)
    assert np.array_equal(np.asarray(res2.images[0]), np.asarray(res.images[0]))
    with pytest.raises(GenerationError, match="SD upscale"):
        run(with_models, "SD upscale", ["", 16, "missing-model", 2.0], init_images=[src])

    t2i = Txt2ImgService(s.svc.models, s.svc.settings, root / "o", None, up, reg.names)
    req = Txt2ImgRequest(prompt="x", steps=2, width=64, height=64, seed=3, enable_hr=True, hr_scale=2,
                         hr_upscaler="tiny-x2", hr_second_pass_steps=1, denoising_strength=0.3)
    out = t2i.run(req, JobState("t", "t"), save=False)
    assert out.images[0].size == (128, 128) and "Hires upscaler: tiny-x2" in out.infotexts[0]
    with pytest.raises(GenerationError, match="hires upscaler"):
        t2i.validate(req.model_copy(update={"hr_upscaler": "nope"}))
