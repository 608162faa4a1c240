"""A1111's img2img resize modes, on PIL images.

0 Just resize, 1 Crop and resize, 2 Resize and fill, 3 Just resize (latent upscale) — the last
resizes in latent space, so on pixels it is a plain resize (used for masks and overlays).
"""
from __future__ import annotations

from typing import Callable

from PIL import Image

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")

# (image, width, height) → resized image; lets a caller plug in a model upscaler for enlargements
Resizer = Callable[[Image.Image, int, int], Image.Image]


def lanczos(im: Image.Image, w: int, h: int) -> Image.Image:
    return im.resize((w, h), Image.Resampling.LANCZOS)


def resize_mode_index(mode: int | str) -> int:
    if isinstance(mode, str) and not mode.strip().isdigit():
        try:
            return RESIZE_MODES.index(mode)
        except ValueError:
            raise ValueError(f"unknown resize mode {mode!r}; choose one of {list(RESIZE_MODES)}") from None
    i = int(mode)
    if not 0 <= i < len(RESIZE_MODES):
        raise ValueError(f"resize_mode must be 0..{len(RESIZE_MODES) - 1}, got {i}")
    return i


def resize_image(mode: int, im: Image.Image, width: int, height: int, resizer: Resizer = lanczos) -> Image.Image:
    """Fit ``im`` to width×height the way A1111's images.resize_image does for each mode."""
    if mode in (0, 3):
        return im if im.size == (width, height) else resizer(im, width, height)
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:  # cover the box, crop the overflow (centred)
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
    else:          # fit inside the box, then stretch the edge rows/columns into the empty bands
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resizer(im, src_w, src_h)
    out = Image.new(resized.mode if resized.mode in ("RGB", "RGBA", "L") else "RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == 2:
        if ratio < src_ratio:
            fill = height // 2 - src_h // 2
            if fill > 0:
                out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
                out.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                          box=(0, fill + src_h))
        elif ratio > src_ratio:
            fill = width // 2 - src_w // 2
            if fill > 0:
                out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
                out.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                          box=(fill + src_w, 0))
    return out


def flatten(im: Image.Image, background: str = "#ffffff") -> Image.Image:
    """RGB image; transparent parts take the background colour (A1111's img2img_background_color)."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background)
        base.alpha_composite(rgba)
        return base.convert("RGB")
    return im.convert("RGB")
