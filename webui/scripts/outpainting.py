"""img2img's outpainting scripts (A1111's "Poor man's outpainting" and "Outpainting mk2"): grow
the canvas on the chosen sides, fill the new border (A1111's fill, or noise in the picture's own
colours for mk2) and inpaint it; the old picture stays, its edge repainted so the seam blends."""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from webui.imaging.resize import flatten
from webui.processing.errors import GenerationError
from webui.processing.pipeline import process_images
from webui.processing.prompts_stage import random_seed
from webui.processing.requests import INPAINTING_FILL
from webui.processing.scripts import ArgInfo, Script

DIRECTIONS = ("left", "right", "up", "down")


class PoorMansOutpainting(Script):
    args = [ArgInfo("Pixels to expand", 128, 8, 256, 8),
            ArgInfo("Mask blur", 4, 0, 64, 1),
            ArgInfo("Masked content", "fill", choices=list(INPAINTING_FILL), kind="radio"),
            ArgInfo("Outpainting direction", list(DIRECTIONS), choices=list(DIRECTIONS), kind="multiselect")]

    def title(self) -> str:
        return "Poor man's outpainting"

    def show(self, is_img2img: bool) -> Any:
        return is_img2img

    def run(self, p: Any, pixels: Any = 128, blur: Any = 4, fill: Any = "fill", directions: Any = DIRECTIONS,
            *_: Any) -> Any:
        return outpaint(p, pixels=int(number("pixels to expand", pixels, 8, 1024)),
                        blur=int(number("mask blur", blur, 0, 64)), fill=fill_index(fill), directions=dirs(directions),
                        noise=None, label=self.title())


class OutpaintingMk2(Script):
    args = [ArgInfo("info", None, kind="info",
                    note="Recommended settings: Sampling Steps: 80-100, Sampler: Euler a, Denoising strength: 0.8"),
            ArgInfo("Pixels to expand", 128, 8, 256, 8),
            ArgInfo("Mask blur", 8, 0, 64, 1),
            ArgInfo("Outpainting direction", list(DIRECTIONS), choices=list(DIRECTIONS), kind="multiselect"),
            ArgInfo("Fall-off exponent (lower=higher detail)", 1.0, 0.0, 4.0, 0.01),
            ArgInfo("Color variation", 0.05, 0.0, 1.0, 0.01)]

    def title(self) -> str:
        return "Outpainting mk2"

    def show(self, is_img2img: bool) -> Any:
        return is_img2img

    def run(self, p: Any, _info: Any = None, pixels: Any = 128, blur: Any = 8, directions: Any = DIRECTIONS,
            falloff: Any = 1.0, variation: Any = 0.05, *_: Any) -> Any:
        falloff, variation = number("fall-off exponent", falloff, 0.0, 4.0), number("color variation", variation, 0.0, 1.0)
        return outpaint(p, pixels=int(number("pixels to expand", pixels, 8, 1024)),
                        blur=int(number("mask blur", blur, 0, 64)), fill=1, directions=dirs(directions),
                        noise=(falloff, variation), label=self.title())


def number(what: str, v: Any, lo: float, hi: float) -> float:
    """A script argument as a finite number within A1111's slider range, else a clear error."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise GenerationError(f"outpainting: {what} must be a number, got {v!r}") from None
    if not lo <= x <= hi:  # also refuses NaN
        raise GenerationError(f"outpainting: {what} must be between {lo} and {hi}, got {v!r}")
    return x


def outpaint(p: Any, *, pixels: int, blur: int, fill: int, directions: list[str],
             noise: tuple[float, float] | None, label: str) -> Any:
    if not 8 <= pixels <= 1024:
        raise GenerationError("pixels to expand must be between 8 and 1024")
    if not 0 <= blur <= 64:
        raise GenerationError("outpainting: mask blur must be between 0 and 64")
    src = flatten(p.init_images[0])
    left, right, up, down = (pixels if d in directions else 0 for d in DIRECTIONS)
    # the canvas must be a multiple of 8 for the model: the extra goes to an expanded side
    left, right = round_up_to_8(src.width, left, right)
    up, down = round_up_to_8(src.height, up, down)
    w, h = src.width + left + right, src.height + up + down
    canvas = Image.new("RGB", (w, h))
    canvas.paste(src, (left, up))
    mask = Image.new("L", (w, h), 255)
    # the kept area reaches 2×blur px less far than the old picture on expanded sides, so the
    # seam itself is repainted and blends (A1111)
    inset = blur * 2
    ImageDraw.Draw(mask).rectangle((left + (inset if left else 0), up + (inset if up else 0),
                                    w - right - (inset if right else 0) - 1,
                                    h - down - (inset if down else 0) - 1), fill=0)
    if noise is not None:
        seed = p.seed if p.seed not in (-1, None) else random_seed()
        canvas = noise_fill(canvas, (left, up, left + src.width, up + src.height), *noise, seed=int(seed))
    p.init_images, p.image_mask = [canvas], mask
    p.mask_blur, p.inpainting_fill = blur, fill
    p.inpaint_full_res, p.inpainting_mask_invert, p.resize_mode = False, 0, 0
    p.width, p.height = w, h
    if w % 8 or h % 8:  # no expanding side could take the remainder: process at the nearest size
        p.width, p.height = w - w % 8 or 8, h - h % 8 or 8
    p.extra_generation_params["Outpainting"] = f"{label}, {pixels} px {'/'.join(directions)}"
    return process_images(p)


def round_up_to_8(size: int, before: int, after: int) -> tuple[int, int]:
    """Expansions (before, after) grown so size + both is a multiple of 8, on a side already growing."""
    extra = -(size + before + after) % 8
    if extra and after:
        after += extra
    elif extra and before:
        before += extra
    return before, after


def fill_index(v: Any) -> int:
    if isinstance(v, str) and not v.isdigit():
        if v not in INPAINTING_FILL:
            raise GenerationError(f"masked content must be one of {list(INPAINTING_FILL)}")
        return INPAINTING_FILL.index(v)
    try:
        i = int(v)
    except (TypeError, ValueError):
        raise GenerationError(f"masked content must be one of {list(INPAINTING_FILL)} or 0..3") from None
    if not 0 <= i < len(INPAINTING_FILL):
        raise GenerationError("masked content must be 0..3")
    return i


def dirs(v: Any) -> list[str]:
    items = [v] if isinstance(v, str) else list(v or []) if isinstance(v, (list, tuple)) else [v]
    bad = [d for d in items if d not in DIRECTIONS]
    if bad or not items:
        raise GenerationError(f"outpainting direction must be some of {list(DIRECTIONS)}, got {items}")
    return items


def noise_fill(canvas: Image.Image, keep: tuple[int, int, int, int], falloff: float, variation: float,
               seed: int) -> Image.Image:
    """mk2's start for the new border: noise in the picture's own colours (mean ± spread per channel,
    varied by ``variation``), smoothed more for a higher fall-off, with the picture pasted back."""
    rng = np.random.default_rng(seed)
    x1, y1, x2, y2 = keep
    arr = np.asarray(canvas, np.float32)
    old = arr[y1:y2, x1:x2].reshape(-1, 3)
    mean, std = old.mean(0), old.std(0) + 1.0
    mean = mean * (1 + rng.uniform(-variation, variation, 3))
    noise = rng.standard_normal(arr.shape).astype(np.float32) * std + mean
    img = Image.fromarray(noise.clip(0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(max(0.0, falloff) * 2))
    img.paste(canvas.crop(keep), (x1, y1))
    return img
