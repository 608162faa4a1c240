"""img2img's built-in scripts, by A1111's titles and script_args: "SD upscale", "Poor man's
outpainting" and "Outpainting mk2". Each prepares images/masks and runs the ordinary img2img job
(`Img2ImgService.run`) — nothing here samples on its own."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from webui import outputs
from webui.imaging.resize import flatten
from webui.imaging.tiles import combine_grid, pad_to, split_grid
from webui.services.img2img import Img2ImgService
from webui.services.jobs import JobState
from webui.services.requests import INPAINTING_FILL, Img2ImgRequest
from webui.services.txt2img import GenerationError, GenerationResult, random_seed

DIRECTIONS = ("left", "right", "up", "down")
# (image, upscaler name, scale) → upscaled image; the extras upscaler registry provides it
Upscale = Callable[[Image.Image, str, float], Image.Image]


def pil_upscale(img: Image.Image, name: str, scale: float) -> Image.Image:
    """The built-in upscalers alone (tests and a service built without the extras registry)."""
    size = (int(img.width * scale), int(img.height * scale))
    if name == "Nearest":
        return img.resize(size, Image.Resampling.NEAREST)
    if name in ("Lanczos", "None", "", None):
        return img.resize(size, Image.Resampling.LANCZOS) if size != img.size else img
    raise GenerationError(f"upscaler {name!r} not found")


@dataclass
class ScriptInfo:
    title: str
    args: list[dict[str, Any]]  # /sdapi/v1/script-info's arg descriptions (label, value, ...)


SCRIPT_INFO = [
    ScriptInfo("SD upscale", [
        {"label": "info", "value": None},
        {"label": "Tile overlap", "value": 64, "minimum": 0, "maximum": 256, "step": 16},
        {"label": "Upscaler", "value": "Lanczos"},
        {"label": "Scale Factor", "value": 2.0, "minimum": 1.0, "maximum": 4.0, "step": 0.05}]),
    ScriptInfo("Poor man's outpainting", [
        {"label": "Pixels to expand", "value": 128, "minimum": 8, "maximum": 256, "step": 8},
        {"label": "Mask blur", "value": 4, "minimum": 0, "maximum": 64, "step": 1},
        {"label": "Masked content", "value": "fill", "choices": list(INPAINTING_FILL)},
        {"label": "Outpainting direction", "value": list(DIRECTIONS), "choices": list(DIRECTIONS)}]),
    ScriptInfo("Outpainting mk2", [
        {"label": "info", "value": None},
        {"label": "Pixels to expand", "value": 128, "minimum": 8, "maximum": 256, "step": 8},
        {"label": "Mask blur", "value": 8, "minimum": 0, "maximum": 64, "step": 1},
        {"label": "Outpainting direction", "value": list(DIRECTIONS), "choices": list(DIRECTIONS)},
        {"label": "Fall-off exponent (lower=higher detail)", "value": 1.0, "minimum": 0.0, "maximum": 4.0},
        {"label": "Color variation", "value": 0.05, "minimum": 0.0, "maximum": 1.0}]),
]
TITLES = {s.title.lower(): s.title for s in SCRIPT_INFO}


def find_script(name: str | None) -> str | None:
    """A1111 matches script_name against titles case-insensitively; None = no script."""
    if not name:
        return None
    title = TITLES.get(name.strip().lower())
    if title is None:
        raise GenerationError(f"script {name!r} not found; img2img has {[s.title for s in SCRIPT_INFO]}")
    return title


def _arg(args: list[Any], i: int, default: Any) -> Any:
    return args[i] if i < len(args) and args[i] is not None else default


class Img2ImgScripts:
    def __init__(self, img2img: Img2ImgService, upscale: Upscale = pil_upscale,
                 names: Callable[[], list[str]] = lambda: ["None", "Lanczos", "Nearest"]) -> None:
        self.svc = img2img
        self._upscale = upscale
        self.names = names

    def upscale(self, img: Image.Image, name: str, scale: float) -> Image.Image:
        try:
            return self._upscale(img, name, scale)
        except ValueError as e:  # the registry's UpscalerError: unknown or unusable file
            raise GenerationError(f"SD upscale: {e}") from None

    def run(self, req: Img2ImgRequest, state: JobState, *, save: bool) -> GenerationResult:
        title = find_script(req.script_name)
        if title is None:
            return self.svc.run(req, state, save=save)
        if not req.init_images:
            raise GenerationError("img2img needs an input image (init_images)")
        args = list(req.script_args or [])
        if title == "SD upscale":
            return self.sd_upscale(req, state, save, args)
        if title == "Poor man's outpainting":
            return self.outpaint(req, state, save, pixels=int(_arg(args, 0, 128)), blur=int(_arg(args, 1, 4)),
                                 fill=_fill_index(_arg(args, 2, 0)), directions=_dirs(_arg(args, 3, DIRECTIONS)),
                                 noise=None, label="Poor man's outpainting")
        return self.outpaint(req, state, save, pixels=int(_arg(args, 1, 128)), blur=int(_arg(args, 2, 8)),
                             fill=1, directions=_dirs(_arg(args, 3, DIRECTIONS)),
                             noise=(float(_arg(args, 4, 1.0)), float(_arg(args, 5, 0.05))),
                             label="Outpainting mk2")

    # ---- outpainting ----
    def outpaint(self, req: Img2ImgRequest, state: JobState, save: bool, *, pixels: int, blur: int, fill: int,
                 directions: list[str], noise: tuple[float, float] | None, label: str) -> GenerationResult:
        """Grow the canvas by ``pixels`` on the chosen sides, fill the new border (A1111's fill, or
        colour-matched noise for mk2) and inpaint it; the old picture stays (its edge blends in)."""
        if not 8 <= pixels <= 1024:
            raise GenerationError("pixels to expand must be between 8 and 1024")
        src = flatten(req.init_images[0])
        left, right, up, down = (pixels if d in directions else 0 for d in DIRECTIONS)
        # the canvas must be a multiple of 8 for the model: the extra goes to an expanded side
        left, right = _round_up_to_8(src.width, left, right)
        up, down = _round_up_to_8(src.height, up, down)
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
            canvas = _noise_fill(canvas, (left, up, left + src.width, up + src.height), *noise,
                                 seed=req.seed if req.seed not in (-1, None) else random_seed())
        run = req.model_copy(update={
            "init_images": [canvas], "mask": mask, "mask_blur": blur, "inpainting_fill": fill,
            "inpaint_full_res": False, "inpainting_mask_invert": 0, "resize_mode": 0, "width": w, "height": h,
            "script_name": None, "extra_generation_params": {
                **(req.extra_generation_params or {}), "Outpainting": f"{label}, {pixels} px {'/'.join(directions)}"}})
        if w % 8 or h % 8:  # no expanding side could take the remainder: process at the nearest size
            run = run.model_copy(update={"width": w - w % 8 or 8, "height": h - h % 8 or 8})
        return self.svc.run(run, state, save=save)

    # ---- SD upscale ----
    def sd_upscale(self, req: Img2ImgRequest, state: JobState, save: bool, args: list[Any]) -> GenerationResult:
        """Upscale, cut into model-sized tiles that overlap, img2img every tile, join the tiles."""
        overlap = int(_arg(args, 1, 64))
        upscaler = _arg(args, 2, "Lanczos")
        scale = float(_arg(args, 3, 2.0))
        if isinstance(upscaler, int) or (isinstance(upscaler, str) and upscaler.isdigit()):
            names = self.names()  # A1111's UI sends the radio's index
            if not 0 <= int(upscaler) < len(names):
                raise GenerationError(f"SD upscale: upscaler index {upscaler} is not in {names}")
            upscaler = names[int(upscaler)]
        if not 1.0 <= scale <= 8.0:
            raise GenerationError("SD upscale: scale factor must be between 1 and 8")
        if not 0 <= overlap <= 256:
            raise GenerationError("SD upscale: tile overlap must be between 0 and 256")
        model = self.svc.models.require()
        tw = int(req.width or model.sd.default_size)
        th = int(req.height or model.sd.default_size)
        src = flatten(req.init_images[0])
        big = self.upscale(src, str(upscaler), scale)
        target = big.size
        grid = split_grid(pad_to(big, tw, th), tw, th, overlap)
        tiles = grid.tiles()
        seed = random_seed() if req.seed in (-1, None) else int(req.seed)
        per_batch = max(1, req.batch_size)
        images: list[Image.Image] = []
        infotexts: list[str] = []
        info: dict[str, Any] = {}
        text = ""
        extra = {**(req.extra_generation_params or {}), "SD upscale overlap": overlap,
                 "SD upscale upscaler": upscaler}
        for n in range(max(1, req.n_iter)):
            done: list[Image.Image] = []
            batch_seed = seed + n
            for i in range(0, len(tiles), per_batch):
                if state.interrupted:
                    break
                part = tiles[i: i + per_batch]
                run = req.model_copy(update={
                    "init_images": [t.image for t in part], "batch_size": len(part), "n_iter": 1,
                    "width": tw, "height": th, "seed": batch_seed, "resize_mode": 0, "mask": None,
                    "script_name": None, "extra_generation_params": extra})
                res = self.svc.run(run, state, save=False)
                batch_seed = res.info["seed"] + 1
                done.extend(res.images)
                info = info or res.info
                text = res.infotexts[0]
            if len(done) < len(tiles):
                break
            grid.replace(done)
            out = combine_grid(grid).crop((0, 0, *target))
            images.append(out)
            infotexts.append(text)
        if not images:
            raise GenerationError("SD upscale was interrupted before a whole image was done")
        paths = []
        if save and self.svc.settings.get("samples_save") and not req.do_not_save_samples:
            out_dir = self.svc.settings.get("outdir_img2img_samples") or self.svc.outputs_dir / "img2img-images"
            for img, text, s in zip(images, infotexts, range(seed, seed + len(images))):
                paths.append(outputs.save_image(img, Path(out_dir) / time.strftime("%Y-%m-%d"), seed=s,
                                                infotext=text if self.svc.settings.get("enable_pnginfo") else None,
                                                fmt=str(self.svc.settings.get("samples_format"))))
        info = dict(info, infotexts=infotexts, width=target[0], height=target[1], index_of_first_image=0)
        return GenerationResult(images, infotexts, info, paths)


def _round_up_to_8(size: int, before: int, after: int) -> tuple[int, int]:
    """Expansions (before, after) grown so size + both is a multiple of 8, on a side already growing."""
    extra = -(size + before + after) % 8
    if extra and after:
        after += extra
    elif extra and before:
        before += extra
    return before, after


def _fill_index(v: Any) -> int:
    if isinstance(v, str) and not v.isdigit():
        if v not in INPAINTING_FILL:
            raise GenerationError(f"masked content must be one of {list(INPAINTING_FILL)}")
        return INPAINTING_FILL.index(v)
    i = int(v)
    if not 0 <= i < len(INPAINTING_FILL):
        raise GenerationError("masked content must be 0..3")
    return i


def _dirs(v: Any) -> list[str]:
    items = [v] if isinstance(v, str) else list(v or [])
    bad = [d for d in items if d not in DIRECTIONS]
    if bad or not items:
        raise GenerationError(f"outpainting direction must be some of {list(DIRECTIONS)}, got {items}")
    return items


def _noise_fill(canvas: Image.Image, keep: tuple[int, int, int, int], falloff: float, variation: float,
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
