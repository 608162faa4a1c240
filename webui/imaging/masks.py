"""Inpainting masks as A1111 prepares them: binarise, invert, blur, the "only masked" crop box,
the "fill" masked content, and the overlay that pastes the untouched original back on top."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter, ImageOps

from webui.imaging.resize import resize_image


def binary_mask(mask: Image.Image, round_: bool = True) -> Image.Image:
    """L-mode mask, 255 = repaint. An RGBA mask with real transparency uses its alpha (what a
    browser editor layer gives); otherwise the grey level."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1] != (255, 255):
        m = mask.split()[-1].convert("L")
    else:
        m = mask.convert("L")
    return m.point(lambda v: 255 if v > 128 else 0) if round_ else m


def blur(mask: Image.Image, blur_x: int, blur_y: int) -> Image.Image:
    """Separable Gaussian blur with A1111's kernel size (2·⌊2.5σ+0.5⌋+1)."""
    arr = np.asarray(mask.convert("L"))
    if blur_x > 0:
        k = 2 * int(2.5 * blur_x + 0.5) + 1
        arr = cv2.GaussianBlur(arr, (k, 1), blur_x)
    if blur_y > 0:
        k = 2 * int(2.5 * blur_y + 0.5) + 1
        arr = cv2.GaussianBlur(arr, (1, k), blur_y)
    return Image.fromarray(arr)


def crop_region(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int] | None:
    """Bounding box of the painted pixels grown by ``pad`` and kept inside the image; None when empty."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def _grow(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """Widen [lo, hi) by ``want`` around its centre, slid back inside [0, limit)."""
    lo -= want // 2
    hi += want - want // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    if lo < 0:
        hi -= lo
        lo = 0
    return lo, min(hi, limit)


def expand_crop_region(region: tuple[int, int, int, int], width: int, height: int,
                       image_w: int, image_h: int) -> tuple[int, int, int, int]:
    """Grow the box to the processing size's aspect ratio (so the crop scales without distortion),
    sliding it back inside the image where it runs over an edge."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > width / height:
        y1, y2 = _grow(y1, y2, int((x2 - x1) * height / width - (y2 - y1)), image_h)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * width / height - (x2 - x1)), image_w)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the hole takes the colours around it, smeared in by ever smaller blurs."""
    keep = ImageOps.invert(mask.convert("L"))
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def overlay(original: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original with alpha = not-repainted: composited over the result, it keeps every pixel
    outside the mask exactly and blends across the blurred edge."""
    over = Image.new("RGBa", original.size)
    over.paste(original.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return over.convert("RGBA")


def apply_overlay(image: Image.Image, over: Image.Image | None,
                  paste_box: tuple[int, int, int, int] | None) -> Image.Image:
    """Result → final image: a crop result ("only masked") is scaled back into its box on the full
    canvas, then the original is composited on top."""
    if over is None:
        return image
    if paste_box is not None:
        x, y, w, h = paste_box
        base = Image.new("RGBA", over.size)
        base.paste(resize_image(1, image, w, h), (x, y))
        image = base
    out = image.convert("RGBA")
    out.alpha_composite(over)
    return out.convert("RGB")

