"""ControlNet units in the loop, driven the way sd-webui-controlnet's API drives them, with the
shipped demo model and its canny ControlNet (original `control_model.*` layout)."""
from __future__ import annotations

import base64
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.shape_judge import judge  # noqa: E402
from tools.shapes_data import Scene, render  # noqa: E402

BUILTIN = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
CN_NAME = "control_shapes-demo-v4_canny"
CN_DIR = ROOT / "models" / "ControlNet"


def b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):
    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.model_service import ModelService
    from webui.services.txt2img import Txt2ImgService
    from webui.settings import Settings

    tmp = tmp_path_factory.mktemp("cn")
    reg = CheckpointRegistry(tmp / "empty", tmp / "cache", builtin=[BUILTIN])
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags(["all"], None, "full", True, True), controlnet_dir=CN_DIR)
    models.load(BUILTIN.name)
    settings = Settings.load(tmp / "config.json")
    settings.set("live_previews_enable", False, save=False)
    return Txt2ImgService(models, settings, tmp / "out")


def run(svc, prompt: str, units: list[dict], seed: int = 1, **fields):
    from webui.services.jobs import JobState
    from webui.services.requests import Txt2ImgRequest

    req = Txt2ImgRequest(prompt=prompt, steps=20, cfg_scale=7, seed=seed, sampler_name="DPM++ 2M",
                         alwayson_scripts={"controlnet": {"args": units}}, **fields)
    return svc.run(req, JobState("t", "test"), save=False)


def unit(pos: str, **kw) -> dict:
    photo = render(Scene("white", "star", "black", pos))  # a picture; the canny preprocessor makes the map
    return {"enabled": True, "module": "canny", "model": CN_NAME, "image": b64(photo), "weight": 1.0,
            "resize_mode": "Just Resize", "threshold_a": 100, "threshold_b": 200, "processor_res": 64, **kw}


def test_edge_map_puts_the_shape_where_the_edges_are_whatever_the_prompt_says(svc) -> None:
    prompt = "a yellow star at the top on a blue background"
    for pos in ("left", "right"):  # moving the map moves the shape
        found = [judge(run(svc, prompt, [unit(pos)], seed).images[0]).position for seed in (1, 2)]
        assert found.count(pos) >= 1 and "top" not in found, (pos, found)
    plain = [judge(run(svc, prompt, [], seed).images[0]).position for seed in (1, 2)]
    assert plain != ["left", "left"]  # without the unit the map's position is not forced


@pytest.mark.slow  # ~90 s on 2 cores: a hires pass with two units
def test_units_also_guide_the_hires_pass(svc) -> None:
    # Hires fix at scale 1 with denoising 1.0: the second pass starts again from noise, so only a
    # unit active in that pass (with its map fitted to the hires size) can decide where the shape goes.
    prompt = "a yellow star on a blue background"
    hires = dict(enable_hr=True, hr_scale=1.0, denoising_strength=1.0, hr_upscaler="Latent", hr_second_pass_steps=20)
    for pos in ("left", "right"):
        found = [judge(run(svc, prompt, [unit(pos)], seed, **hires).images[0]).position for seed in (1, 2, 3)]
        assert found.count(pos) >= 2, (pos, found)


def test_unit_fields_infotext_and_disabled_units(svc) -> None:
    res = run(svc, "a red circle on a blue background", [unit("left", guidance_start=0.0, guidance_end=0.5,
                                                                  control_mode=1), {"enabled": False}])
    text = res.infotexts[0]
    m = re.search(r'ControlNet 0: "Module: canny, Model: control_shapes-demo-v\d_canny \[([0-9a-f]{8})\], Weight: 1, '
                  r'Resize Mode: Just Resize, Processor Res: 64, Threshold A: 100, Threshold B: 200, '
                  r'Guidance Start: 0, Guidance End: 0.5, Pixel Perfect: False, '
                  r'Control Mode: My prompt is more important"', text)
    assert m, text
    import hashlib
    assert m[1] == hashlib.sha256((CN_DIR / f"{CN_NAME}.safetensors").read_bytes()).hexdigest()[:8]
    assert "ControlNet 1" not in text
    base = np.asarray(run(svc, "a red circle on a blue background", []).images[0])
    off = np.asarray(run(svc, "a red circle on a blue background", [unit("left", weight=0)]).images[0])
    assert np.array_equal(off, base)  # weight 0 changes nothing


@pytest.mark.parametrize("bad, message", [
    ({"model": "no_such_model"}, "not found"),
    ({"image": "not-base64!"}, "not a readable"),
    ({"module": "openpose_full"}, "unknown preprocessor"),
    ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_start"),
    ({"control_mode": "Louder"}, "control_mode"),
])
def test_bad_units_are_clear_errors(svc, bad: dict, message: str) -> None:
    from webui.services.txt2img import GenerationError

    with pytest.raises(GenerationError, match=message):
        run(svc, "a red circle", [unit("left", **bad)])
    with pytest.raises(GenerationError, match="limit is 3"):
        run(svc, "a red circle", [unit("left")] * 4)


@pytest.mark.parametrize("module", ["lineart_standard", "lineart_standard (from white bg & black line)",
                                    "scribble_xdog"])
def test_line_filters_turn_a_dark_drawing_into_white_lines_on_black(module: str) -> None:
    from webui.networks.controlnet_units import preprocess

    drawing = np.full((64, 64, 3), 240, np.uint8)
    drawing[30:33, 8:56] = 20  # a dark horizontal stroke on light paper
    out = preprocess(module, drawing, 64, -1, -1)
    assert out.shape == (64, 64, 3)
    assert out[31, 16:48].min() >= 100  # bright on the stroke
    assert out[:20].max() <= 10 and out[45:].max() <= 10  # black away from it


def test_img2img_unit_without_an_image_uses_the_img2img_picture(svc) -> None:
    """sd-webui-controlnet's img2img habit: a unit with no image of its own reads the input picture.
    At denoising 1 the picture itself is ignored, so only its edge map can put the shape there."""
    from webui.services.img2img import Img2ImgService
    from webui.services.jobs import JobState
    from webui.services.requests import Img2ImgRequest

    i2i = Img2ImgService(svc.models, svc.settings, svc.outputs_dir)
    prompt = "a yellow star at the top on a blue background"
    for pos in ("left", "right"):
        picture = Image.fromarray(render(Scene("white", "star", "black", pos)))
        no_image = {k: v for k, v in unit(pos).items() if k != "image"}
        found = []
        for seed in (1, 2):
            req = Img2ImgRequest(prompt=prompt, steps=20, seed=seed, sampler_name="DPM++ 2M", init_images=[picture],
                                 denoising_strength=1.0, alwayson_scripts={"controlnet": {"args": [no_image]}})
            res = i2i.run(req, JobState("t", "t"), save=False)
            found.append(judge(res.images[0]).position)
            assert 'ControlNet 0: "Module: canny' in res.infotexts[0]
        assert found.count(pos) >= 1 and "top" not in found, (pos, found)
