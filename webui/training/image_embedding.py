"""Preview images that carry their embedding (A1111's ``image_embeddings/<name>-<step>.png``).

The embedding's data (the dict of its `.pt` file: ``string_to_param``, ``name``, ``step``, … or an
SDXL ``clip_l``/``clip_g`` pair) is stored in a PNG ``tEXt`` chunk named ``sd-ti-embedding`` as
base64 of JSON in which every tensor is written as ``{"TORCHTENSOR": nested lists}`` -- the encoding
A1111 reads back.  The picture is the preview with a caption band (the embedding's name on top;
model name, checkpoint hash and "<vectors>v <steps>s" below), enlarged first when the preview is
too small for text.  A1111 additionally hides a copy in coloured side blocks of the pixels; we only
write the text chunk, which is what A1111's loader reads first.
"""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

log = logging.getLogger(__name__)

CHUNK_KEY = "sd-ti-embedding"
TENSOR_KEY = "TORCHTENSOR"
MIN_CAPTIONED_WIDTH = 256  # smaller previews are enlarged so the caption stays readable


class _TensorEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            return {TENSOR_KEY: o.detach().to("cpu", torch.float32).numpy().tolist()}
        return super().default(o)


def _tensor_hook(d: dict[str, Any]) -> Any:
    if TENSOR_KEY in d:
        return torch.from_numpy(np.asarray(d[TENSOR_KEY], dtype=np.float32))
    return d


def embedding_to_b64(data: Mapping[str, Any]) -> str:
    """The chunk's text for an embedding's data dict."""
    return base64.b64encode(json.dumps(dict(data), cls=_TensorEncoder).encode("utf-8")).decode("ascii")


def embedding_from_b64(text: str | bytes) -> dict[str, Any]:
    """The data dict back, tensors as float32 torch tensors."""
    return json.loads(base64.b64decode(text), object_hook=_tensor_hook)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def caption_image(image: Image.Image, title: str, footer: tuple[str, str, str]) -> Image.Image:
    """The preview with a dark band at the top (``title``) and one at the bottom (three footers)."""
    img = image.convert("RGB")
    if img.width < MIN_CAPTIONED_WIDTH:
        k = -(-MIN_CAPTIONED_WIDTH // img.width)
        img = img.resize((img.width * k, img.height * k), Image.NEAREST)
    w, h = img.size
    band = max(14, h // 10)
    out = img.convert("RGBA")
    shade = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    draw.rectangle((0, 0, w, band), fill=(0, 0, 0, 170))
    draw.rectangle((0, h - band, w, h), fill=(0, 0, 0, 170))
    out = Image.alpha_composite(out, shade)
    draw = ImageDraw.Draw(out)
    pad = max(2, band // 6)
    font = _font(band - 2 * pad)
    small = _font(max(8, (band - 2 * pad) * 2 // 3))
    white = (255, 255, 255, 235)
    draw.text((pad, band // 2), title, font=font, fill=white, anchor="lm")
    y = h - band // 2
    draw.text((pad, y), footer[0], font=small, fill=white, anchor="lm")
    draw.text((w // 2, y), footer[1], font=small, fill=white, anchor="mm")
    draw.text((w - pad, y), footer[2], font=small, fill=white, anchor="rm")
    return out.convert("RGB")


def vector_count(data: Mapping[str, Any]) -> int | None:
    params = data.get("string_to_param")
    tensor = next(iter(params.values())) if isinstance(params, Mapping) and params else data.get("clip_l")
    return int(tensor.shape[0]) if isinstance(tensor, torch.Tensor) else None


def save_image_embedding(path: Path, image: Image.Image, data: Mapping[str, Any], *, model_name: str,
                         model_hash: str | None, step: int, infotext: str | None = None) -> Path:
    """Write ``path``: the captioned preview with ``data`` in the ``sd-ti-embedding`` chunk."""
    n = vector_count(data)
    title = f"<{data.get('name', '???')}>"
    footer = (model_name, f"[{model_hash or ''}]", f"{n if n is not None else '?'}v {step}s")
    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK_KEY, embedding_to_b64(data))
    if infotext:
        info.add_text("parameters", infotext)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    caption_image(image, title, footer).save(path, "PNG", pnginfo=info)
    return path


def read_image_embedding(path: Path) -> dict[str, Any] | None:
    """The embedding data stored in a PNG's ``sd-ti-embedding`` chunk, or None when it has none."""
    with Image.open(path) as im:
        im.load()
        text = getattr(im, "text", {}).get(CHUNK_KEY) or im.info.get(CHUNK_KEY)
    if not text:
        return None
    try:
        data = embedding_from_b64(text)
    except (ValueError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable %s chunk: %s", Path(path).name, CHUNK_KEY, e)
        return None
    return data if isinstance(data, dict) else None


__all__ = ["CHUNK_KEY", "caption_image", "embedding_from_b64", "embedding_to_b64", "read_image_embedding",
           "save_image_embedding"]
