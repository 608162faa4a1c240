"""img2img and inpainting through the service layer, on tiny real-layout checkpoints and the
built-in model: pixels outside the mask, denoising extremes, masked-content options, 9-channel
inpainting models, resize modes, infotext and outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tiny_models import make_tiny_checkpoint
from webui import infotext
from webui.imaging import masks
from webui.imaging.resize import resize_image
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.services.img2img import Img2ImgService
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Img2ImgRequest, Txt2ImgRequest
from webui.services.txt2img import GenerationError, Txt2ImgService
from webui.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = sorted((ROOT / "webui" / "builtin_models").glob("shapes-demo-*.safetensors"))[-1]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("i2i")
    ckpt = root / "models"
    ckpt.mkdir()
    make_tiny_checkpoint(ckpt / "sd1.safetensors", family="sd1", seed=21)
    make_tiny_checkpoint(ckpt / "sd1-inpainting.safetensors", family="sd1", inpainting=True, seed=22)
    make_tiny_checkpoint(ckpt / "sdxl-inpainting.safetensors", family="sdxl", inpainting=True, seed=23)
    registry = CheckpointRegistry(ckpt, root / "cache", builtin=[BUILTIN])
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
    settings = Settings.load(root / "config.json")
    return models, Img2ImgService(models, settings, root / "outputs"), Txt2ImgService(models, settings, root / "o"), root


def picture(w: int = 64, h: int = 64, seed: int = 0) -> Image.Image:
    """A structured test image: coloured blocks and a gradient (so any change shows)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w)[None, :]
    arr[..., 1] = np.linspace(255, 0, h)[:, None]
    arr[..., 2] = rng.integers(0, 255, (h // 8, w // 8)).repeat(8, 0).repeat(8, 1)
    return Image.fromarray(arr)


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).rectangle(box, fill=255)
    return m


def run(svc: Img2ImgService, **kw):
    req = Img2ImgRequest(**{"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 3,
                            "sampler_name": "Euler", **kw})
    return svc.run(req, JobState("t", "test"), save=False)


def far_from(box: tuple[int, int, int, int], size: tuple[int, int], band: int) -> np.ndarray:
    """True where a pixel is more than ``band`` px from the box (outside mask + blur reach)."""
    out = np.ones((size[1], size[0]), bool)
    x1, y1, x2, y2 = box
    out[max(y1 - band, 0): y2 + band + 1, max(x1 - band, 0): x2 + band + 1] = False
    return out


# blur 4 → kernel 21 → reach 10 px; the overlay mask is doubled, so a pixel 11+ px away is untouched
BAND = 11


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
@pytest.mark.parametrize("full_res", [False, True])
def test_inpaint_keeps_every_pixel_outside_the_mask(services, fill: int, full_res: bool) -> None:
    models, svc, _, _ = services
    models.load("sd1.safetensors")
    src, box = picture(), (20, 24, 40, 44)
    res = run(svc, init_images=[src], mask=box_mask(src.size, box), inpainting_fill=fill,
              inpaint_full_res=full_res, inpaint_full_res_padding=8, denoising_strength=0.9)
    out, a = np.asarray(res.images[0]).astype(int), np.asarray(src).astype(int)
    assert res.images[0].size == src.size
    keep = far_from(box, src.size, BAND)
    assert np.array_equal(out[keep], a[keep])                     # bit-exact outside
    assert np.abs(out[26:42, 22:38] - a[26:42, 22:38]).mean() > 10  # repainted inside
    text = res.infotexts[0]
    parsed = infotext.parse_generation_parameters(text)
    assert parsed["Denoising strength"] == "0.9" and parsed["Mask blur"] == "4"
    assert parsed["Masked content"] == ("fill", "original", "latent noise", "latent nothing")[fill]
    if full_res:
        assert parsed["Inpaint area"] == "Only masked" and parsed["Masked area padding"] == "8"
    else:
        assert "Inpaint area:" not in text


def test_inpaint_not_masked_keeps_the_inside(services) -> None:
    models, svc, _, _ = services
    models.load("sd1.safetensors")
    src, box = picture(seed=1), (16, 16, 47, 47)
    res = run(svc, init_images=[src], mask=box_mask(src.size, box), inpainting_mask_invert=1, mask_blur=0,
              inpaint_full_res=False)
    out, a = np.asarray(res.images[0]).astype(int), np.asarray(src).astype(int)
    assert np.array_equal(out[17:47, 17:47], a[17:47, 17:47])
    assert np.abs(out[:8] - a[:8]).mean() > 10
    assert "Mask mode: Inpaint not masked" in res.infotexts[0] and "Mask blur" not in res.infotexts[0]


def test_denoising_zero_returns_the_input_and_one_ignores_it(services) -> None:
    models, svc, _, _ = services
    models.load(BUILTIN.name)  # a trained VAE: its images show what the latent held
    a, b = picture(seed=2), picture(seed=3).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    zero = run(svc, init_images=[a], denoising_strength=0.0)
    assert np.array_equal(np.asarray(zero.images[0]), np.asarray(a))
    assert "Denoising strength: 0," in zero.infotexts[0]
    one_a = run(svc, init_images=[a], denoising_strength=1.0)
    one_b = run(svc, init_images=[b], denoising_strength=1.0)
    assert np.array_equal(np.asarray(one_a.images[0]), np.asarray(one_b.images[0]))
    half_a = run(svc, init_images=[a], denoising_strength=0.5)
    half_b = run(svc, init_images=[b], denoising_strength=0.5)
    assert np.abs(np.asarray(half_a.images[0]).astype(int) - np.asarray(half_b.images[0])).mean() > 5


def test_empty_mask_inpaints_nothing_and_says_so(services) -> None:
    models, svc, _, _ = services
    models.load("sd1.safetensors")
    src = picture(seed=4)
    for full_res in (True, False):
        res = run(svc, init_images=[src], mask=Image.new("L", src.size, 0), inpaint_full_res=full_res)
        assert np.array_equal(np.asarray(res.images[0]), np.asarray(src))
        assert any("mask is empty" in w for w in res.info["warnings"])


def test_mask_of_another_size_is_scaled_to_the_image(services) -> None:
    models, svc, _, _ = services
    models.load("sd1.safetensors")
    src = picture(seed=5)
    small = box_mask((32, 32), (0, 0, 15, 31))  # the left half, at half the size
    res = run(svc, init_images=[src], mask=small, mask_blur=0, inpaint_full_res=False)
    out, a = np.asarray(res.images[0]).astype(int), np.asarray(src).astype(int)
    assert np.array_equal(out[:, 34:], a[:, 34:])
    assert np.abs(out[:, :30] - a[:, :30]).mean() > 10


@pytest.mark.parametrize("name", ["sd1-inpainting.safetensors", "sdxl-inpainting.safetensors"])
def test_nine_channel_models_use_the_masked_image(services, name: str) -> None:
    """At denoising 1 the hole's old pixels reach the model only through its conditioning image,
    where the hole is greyed out: changing them must not change the result."""
    models, svc, _, _ = services
    loaded = models.load(name)
    assert loaded.sd.inpainting
    src, box = picture(seed=6), (16, 16, 47, 47)
    other = src.copy()
    ImageDraw.Draw(other).rectangle((20, 20, 43, 43), fill=(255, 255, 0))  # only inside the mask
    kw = dict(mask=box_mask(src.size, box), denoising_strength=1.0, inpainting_fill=1, inpaint_full_res=False)
    r1, r2 = run(svc, init_images=[src], **kw), run(svc, init_images=[other], **kw)
    a, o1 = np.asarray(src).astype(int), np.asarray(r1.images[0]).astype(int)
    # (±1: the kept latent around the hole is encoded from the whole image, and the blend mixes it in)
    assert np.abs(o1 - np.asarray(r2.images[0])).max() <= 2
    keep = far_from(box, src.size, BAND)
    assert np.array_equal(o1[keep], a[keep])
    assert r1.info["is_using_inpainting_conditioning"] is True
    # and the mask matters: without it (plain img2img) the same seed gives another image
    r3 = run(svc, init_images=[src], denoising_strength=1.0)
    assert np.abs(np.asarray(r3.images[0]).astype(int) - o1)[20:44, 20:44].mean() > 15


def test_resize_modes_on_pixels() -> None:
    wide = Image.new("RGB", (128, 64), (0, 0, 255))
    ImageDraw.Draw(wide).rectangle((0, 0, 31, 63), fill=(255, 0, 0))    # red left quarter
    ImageDraw.Draw(wide).rectangle((96, 0, 127, 63), fill=(0, 255, 0))  # green right quarter
    just = np.asarray(resize_image(0, wide, 64, 64))
    assert just[32, 4, 0] > 200 and just[32, 60, 1] > 200                 # squeezed: both quarters kept
    crop = np.asarray(resize_image(1, wide, 64, 64))
    assert (crop[:, 4:60, 2] > 200).all()                                 # centre square only: blue
    fill = np.asarray(resize_image(2, wide, 64, 64))
    assert fill.shape == (64, 64, 3)
    assert fill[2, 2, 0] > 200 and fill[60, 2, 0] > 200                   # bands stretched from the edge rows
    assert fill[32, 2, 0] > 200 and fill[32, 60, 1] > 200


def test_resize_modes_and_scale_through_the_service(services) -> None:
    models, svc, _, _ = services
    models.load("sd1.safetensors")
    src = picture(96, 48, seed=7)
    for mode in (0, 1, 2, 3):
        res = run(svc, init_images=[src], resize_mode=mode, width=64, height=64, denoising_strength=0.3)
        assert res.images[0].size == (64, 64)
    with pytest.raises(GenerationError, match="resize_mode"):
        svc.validate(Img2ImgRequest(init_images=[src], resize_mode=7))


def test_batch_of_images_and_outputs(services) -> None:
    models, svc, _, root = services
    models.load("sd1.safetensors")
    imgs = [picture(seed=8), picture(seed=9)]
    req = Img2ImgRequest(init_images=imgs, prompt="x", steps=3, width=64, height=64, seed=10,
                         denoising_strength=0.0)
    res = svc.run(req, JobState("t", "t"), save=True)
    assert len(res.images) == 2 and res.info["all_seeds"] == [10, 11]
    for got, want in zip(res.images, imgs):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    assert all(p.parent.parent == root / "outputs" / "img2img-images" for p in res.paths)
    assert res.grid_path is not None and res.grid_path.parent.parent == root / "outputs" / "img2img-grids"
    saved, _ = infotext.read_info_from_image(Image.open(res.paths[0]))
    assert "Denoising strength: 0," in saved


def test_bad_requests_are_clear(services) -> None:
    _, svc, _, _ = services
    with pytest.raises(GenerationError, match="needs an input image"):
        svc.validate(Img2ImgRequest())
    with pytest.raises(GenerationError, match="inpainting_fill"):
        svc.validate(Img2ImgRequest(init_images=[picture()], inpainting_fill=5))
    with pytest.raises(GenerationError, match="denoising_strength"):
        svc.validate(Img2ImgRequest(init_images=[picture()], denoising_strength=1.5))


def test_mask_helpers() -> None:
    m = box_mask((100, 50), (40, 10, 59, 19))
    assert masks.crop_region(m, 5) == (35, 5, 65, 25)
    # grown to the processing aspect (1:1) around the same centre, inside the image
    assert masks.expand_crop_region((35, 5, 65, 25), 64, 64, 100, 50) == (35, 0, 65, 30)
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((0, 0, 3, 7), fill=(255, 255, 255, 255))
    assert np.asarray(masks.binary_mask(rgba))[:, :4].min() == 255
    assert np.asarray(masks.binary_mask(rgba))[:, 4:].max() == 0
    hole = Image.new("RGB", (64, 64), (200, 30, 30))
    ImageDraw.Draw(hole).rectangle((24, 24, 39, 39), fill=(0, 0, 255))
    filled = np.asarray(masks.fill(hole, box_mask((64, 64), (24, 24, 39, 39))))
    assert filled[32, 32, 0] > 150 and filled[32, 32, 2] < 60  # the hole takes the surrounding red


def test_default_model_inpaints_the_shape_in_the_asked_colour(services) -> None:
    """With the built-in model: make a red circle, inpaint its region asking for a green one."""
    models, svc, t2i, _ = services
    models.load(BUILTIN.name)
    seeds_ok = 0
    for seed in (1, 2, 3):
        src = t2i.run(Txt2ImgRequest(prompt="a red circle at the center on a blue background", steps=20,
                                     sampler_name="DPM++ 2M", seed=seed), JobState("t", "t"), save=False).images[0]
        a = np.asarray(src).astype(int)
        shape = (a[..., 0] > 150) & (a[..., 2] < 120)  # the red pixels
        if shape.sum() < 40:
            continue
        ys, xs = np.nonzero(shape)
        box = (int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max()) + 2, int(ys.max()) + 2)
        res = run(svc, init_images=[src], mask=box_mask(src.size, box), inpainting_fill=1, mask_blur=2,
                  inpaint_full_res=False,
                  prompt="a green circle at the center on a blue background", steps=20, sampler_name="DPM++ 2M",
                  denoising_strength=0.9, seed=seed)
        o = np.asarray(res.images[0]).astype(int)
        inside = o[shape]
        green = ((inside[:, 1] > inside[:, 0] + 40) & (inside[:, 1] > inside[:, 2])).mean()
        keep = far_from(box, src.size, 6)
        assert np.array_equal(o[keep], a[keep])
        seeds_ok += green > 0.5
    assert seeds_ok >= 2


def test_editor_values_become_image_and_mask_per_sub_mode() -> None:
    """What each sub-tab's editor value turns into (real PIL layers as Gradio's ImageEditor sends them)."""
    from webui.ui.img2img import InputError, editor_inputs
    base = picture(seed=11).convert("RGBA")
    stroke = Image.new("RGBA", base.size, (0, 0, 0, 0))
    ImageDraw.Draw(stroke).rectangle((10, 10, 29, 19), fill=(255, 255, 255, 255))
    composite = base.copy()
    composite.alpha_composite(stroke)
    value = {"background": base, "layers": [stroke], "composite": composite}

    img, mask = editor_inputs("img2img", base)
    assert img is base and mask is None
    img, mask = editor_inputs("Sketch", value)  # the sketch is part of the picture
    assert np.array_equal(np.asarray(img), np.asarray(composite.convert("RGB"))) and mask is None
    img, mask = editor_inputs("Inpaint", value)  # the strokes are the mask, the picture stays clean
    assert np.array_equal(np.asarray(img), np.asarray(base))
    m = np.asarray(mask) > 0
    assert m[10:20, 10:30].all() and m.sum() == 200
    img, mask = editor_inputs("Inpaint", {"background": base, "layers": [], "composite": base})
    assert np.asarray(mask).max() == 0  # nothing drawn: an empty mask
    img, mask = editor_inputs("Inpaint sketch", value, mask_alpha=50)
    m = np.asarray(mask) > 0  # where the sketch changed the picture (white over white stays unmasked)
    changed = np.abs(np.asarray(composite.convert("RGB"), int) - np.asarray(base.convert("RGB"), int)).sum(-1) > 0
    assert np.array_equal(m, changed) and m.sum() > 100
    half = np.asarray(img, int)[15, 15]
    assert np.abs(half - (np.asarray(composite.convert("RGB"), int)[15, 15] + np.asarray(base.convert("RGB"), int)[15, 15]) / 2).max() <= 1
    img, mask = editor_inputs("Inpaint upload", base, box_mask(base.size, (0, 0, 9, 9)))
    assert np.asarray(mask)[5, 5] == 255
    with pytest.raises(InputError, match="mask image"):
        editor_inputs("Inpaint upload", base, None)


def test_batch_from_a_folder_with_masks_and_a_broken_file(services, tmp_path: Path) -> None:
    from webui.services.img2img_batch import run_batch
    from webui.services.img2img_scripts import Img2ImgScripts
    models, svc, _, _ = services
    models.load("sd1.safetensors")
    src, masks_dir, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    src.mkdir()
    masks_dir.mkdir()
    a, b = picture(seed=12), picture(seed=13)
    a.save(src / "a.png")
    b.save(src / "b.jpg", quality=95)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("not an image")
    box_mask(a.size, (20, 20, 43, 43)).save(masks_dir / "a.png")  # b has no mask: plain img2img
    req = Img2ImgRequest(prompt="x", steps=3, width=64, height=64, seed=1, denoising_strength=0.8, mask_blur=0,
                         inpaint_full_res=False)
    res = run_batch(Img2ImgScripts(svc), req, str(src), str(out), str(masks_dir), JobState("t", "t"))
    assert len(res.images) == 2 and len(res.paths) == 2
    assert [p.parent for p in res.paths] == [out, out]
    assert len(res.errors) == 1 and res.errors[0].startswith("broken.png")
    o = np.asarray(res.images[0]).astype(int)
    keep = far_from((20, 20, 43, 43), a.size, 1)
    assert np.array_equal(o[keep], np.asarray(a).astype(int)[keep])  # a: inpainted inside its mask only
    assert np.abs(np.asarray(res.images[1]).astype(int) - np.asarray(b)).mean() > 5  # b: all of it
    with pytest.raises(GenerationError, match="does not exist"):
        run_batch(Img2ImgScripts(svc), req, str(tmp_path / "nope"), "", "", JobState("t", "t"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenerationError, match="no images"):
        run_batch(Img2ImgScripts(svc), req, str(tmp_path / "empty"), "", "", JobState("t", "t"))
