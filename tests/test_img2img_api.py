"""POST /sdapi/v1/img2img against the real server: A1111's fields, base64 in and out, bad input."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from conftest import Server

BASE = {"prompt": "a red circle", "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 77}


def b64(img: Image.Image, prefix: bool = False, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    s = base64.b64encode(buf.getvalue()).decode()
    return f"data:image/{fmt.lower()};base64,{s}" if prefix else s


def unb64(s: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(s)))
    img.load()
    return img


def picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (8, 8, 3)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    return Image.fromarray(arr)


def post(server: Server, payload: dict) -> requests.Response:
    return requests.post(server.api("img2img"), json=payload, timeout=180)


def test_img2img_with_mask_keeps_the_outside_and_reports_a1111_fields(api_server: Server) -> None:
    src = picture(1)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((24, 24, 39, 39), fill=255)
    r = post(api_server, dict(BASE, init_images=[b64(src, prefix=True)], mask=b64(mask), mask_blur=2,
                              inpainting_fill=1, inpaint_full_res=False, denoising_strength=0.8))
    assert r.status_code == 200, r.text
    body = r.json()
    out = unb64(body["images"][0])
    a, o = np.asarray(src).astype(int), np.asarray(out.convert("RGB")).astype(int)
    keep = np.ones((64, 64), bool)
    keep[16:48, 16:48] = False
    assert np.array_equal(o[keep], a[keep])
    assert np.abs(o[26:38, 26:38] - a[26:38, 26:38]).mean() > 5
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.8
    text = info["infotexts"][0]
    assert "Denoising strength: 0.8" in text and "Mask blur: 2" in text and "Masked content" not in text
    assert out.info["parameters"] == text
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None
    assert body["parameters"]["inpainting_fill"] == 1


def test_img2img_plain_defaults_and_include_init_images(api_server: Server) -> None:
    src = picture(2)
    data = b64(src)
    r = post(api_server, dict(BASE, init_images=[data], denoising_strength=0.0, include_init_images=True,
                              batch_size=2))
    assert r.status_code == 200, r.text
    body = r.json()
    imgs = [unb64(s) for s in body["images"]]
    assert len(imgs) == 3  # grid first when there are several, as A1111
    for im in imgs[1:]:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(src))
    assert body["parameters"]["init_images"] == [data]
    assert "Denoising strength: 0," in json.loads(body["info"])["infotexts"][0]


def test_img2img_jpeg_input_other_size_and_resize_modes(api_server: Server) -> None:
    src = picture(3).resize((96, 48))
    for mode in (0, 1, 2, 3):
        r = post(api_server, dict(BASE, init_images=[b64(src, True, "JPEG")], resize_mode=mode,
                                  denoising_strength=0.4))
        assert r.status_code == 200, (mode, r.text)
        assert unb64(r.json()["images"][0]).size == (64, 64)


def _huge_png() -> str:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("payload,needle", [
    ({"init_images": []}, "init_images"),
    ({"init_images": ["bm90IGFuIGltYWdl"]}, "not an image"),
    ({"init_images": ["corrupt"]}, "init_images[0]"),
    ({"init_images": ["HUGE"]}, "8192"),
    ({"init_images": ["OK"], "mask": "bm90IGFuIGltYWdl"}, "mask"),
    ({"init_images": ["OK"], "inpainting_fill": 9}, "inpainting_fill"),
    ({"init_images": ["OK"], "resize_mode": 9}, "resize_mode"),
    ({"init_images": ["OK"], "denoising_strength": 2}, "denoising_strength"),
])
def test_bad_img2img_input_is_4xx_and_server_survives(api_server: Server, payload: dict, needle: str) -> None:
    ok = b64(picture(4))
    png = base64.b64decode(ok)
    corrupt = base64.b64encode(png[: len(png) // 2]).decode()
    subst = {"OK": ok, "corrupt": corrupt, "HUGE": _huge_png() if payload["init_images"] == ["HUGE"] else ""}
    payload = dict(payload, init_images=[subst.get(x, x) for x in payload["init_images"]])
    r = post(api_server, dict(BASE, **payload))
    assert 400 <= r.status_code < 500, r.text
    assert needle.lower() in r.text.lower(), r.text
    assert post(api_server, dict(BASE, init_images=[ok], denoising_strength=0.0)).status_code == 200
