"""A1111's `modules.images` on our outputs, resize and grid code.

`save_image(...)` writes through `webui.outputs` (A1111's numbering: `00012-<seed>.png`,
`<basename>-0004-<seed>.png`; a name is never overwritten), with the text chunks, and fires the
before/after image-saved callbacks as the pipeline does. `save_to_dirs=None` means what A1111's
defaults mean: a date subfolder (`[date]`), except with `no_prompt`. No `.txt` is written
(this app has no `save_txt` option): the second value returned is None. `forced_filename` saves
under that name (a taken name gets `-1`, `-2`, ...). A `[prompt]`-style filename pattern does not
exist here; `prompt` and `short_filename` only decide whether the seed is in the name.

`resize_image(resize_mode, im, width, height, upscaler_name=None)`, `image_grid(imgs,
batch_size=1, rows=None)` (fires `image_grid` callbacks), `GridAnnotation`,
`draw_grid_annotations`, `draw_prompt_matrix`, `get_font`, `read_info_from_image`,
`get_next_sequence_number`, `flatten`, `LANCZOS`, `NEAREST`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from PIL import Image

from webui import outputs
from webui.extensions.compat import binding
from webui.imaging import resize as _resize
from webui.imaging.grid_annotations import (GridAnnotation, draw_grid_annotations, draw_prompt_matrix,  # noqa: F401
                                            get_font)
from webui.imaging.grid_annotations import image_grid as _image_grid
from webui.infotext import read_info_from_image  # noqa: F401
from webui.processing.callbacks import ImageGridLoopParams, ImageSaveParams


LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


def _callbacks() -> Any:
    return binding.current().pipeline.callbacks if binding.is_bound() else None


def save_image(image: Image.Image, path: str, basename: str, seed: int | None = None, prompt: str | None = None,
               extension: str = "png", info: str | None = None, short_filename: bool = False,
               no_prompt: bool = False, grid: bool = False, pnginfo_section_name: str = "parameters",
               p: Any = None, existing_info: dict[str, Any] | None = None, forced_filename: str | None = None,
               suffix: str = "", save_to_dirs: bool | None = None) -> tuple[str, str | None]:
    """Save an image as A1111 does; returns (full file name, txt file name or None)."""
    directory = Path(path)
    if save_to_dirs is None:
        save_to_dirs = grid or not no_prompt
    if save_to_dirs:
        directory = directory / time.strftime("%Y-%m-%d")
    pnginfo: dict[str, Any] = dict(existing_info or {})
    if info is not None:
        pnginfo[pnginfo_section_name] = info
    params = ImageSaveParams(image, p, forced_filename or "", pnginfo)
    callbacks = _callbacks()
    if callbacks is not None:
        callbacks.run("before_image_saved", params, p)
    text = params.pnginfo.get("parameters") if params.pnginfo else None
    extra = {k: str(v) for k, v in (params.pnginfo or {}).items() if k != "parameters"} or None
    fmt = extension.lstrip(".")
    if params.filename:
        target = Path(params.filename)
        folder = target.parent if target.is_absolute() else directory / target.parent
        stem = target.stem if target.suffix.lower().lstrip(".") in outputs.FORMATS else target.name
        saved = outputs.save_image_named(params.image, folder, stem, infotext=text, fmt=fmt, extra_pnginfo=extra)
    else:
        use_seed = None if (short_filename or seed is None or seed == "") else seed
        saved = outputs.save_image(params.image, directory, seed=use_seed, infotext=text, basename=basename or "",
                                   grid=grid, fmt=fmt, extra_pnginfo=extra, suffix=suffix)
    if callbacks is not None:
        callbacks.run("image_saved", ImageSaveParams(params.image, p, str(saved), params.pnginfo), p)
    return str(saved), None


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int,
                 upscaler_name: str | None = None) -> Image.Image:
    """A1111's resize modes (0 just resize, 1 crop and resize, 2 resize and fill, 3 latent = just resize);
    enlargements go through `upscaler_name` when given."""
    upscale = binding.current().pipeline.upscale if upscaler_name and upscaler_name != "None" else None

    def resizer(img: Image.Image, w: int, h: int) -> Image.Image:
        scale = max(w / img.width, h / img.height)
        if scale > 1.0 and upscale is not None:
            img = upscale(img, str(upscaler_name), scale)
        return img if img.size == (w, h) else _resize.lanczos(img, w, h)
    return _resize.resize_image(_resize.resize_mode_index(resize_mode), im, width, height, resizer)


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """A grid of the images (A1111's row rule), after the `image_grid` callbacks had their say."""
    if rows is None:
        rows = max(1, min(round(math.sqrt(len(imgs))), len(imgs)))
    cols = math.ceil(len(imgs) / rows)
    params = ImageGridLoopParams(list(imgs), cols, rows)
    callbacks = _callbacks()
    if callbacks is not None:
        callbacks.run("image_grid", params)
    return _image_grid(params.imgs, rows=params.rows, cols=params.cols)


def get_next_sequence_number(path: str, basename: str) -> int:
    """The number the next saved file in `path` gets (A1111 counts from 0; so does this)."""
    return outputs.next_sequence_number(Path(path), basename)


def flatten(img: Image.Image, bgcolor: str) -> Image.Image:
    return _resize.flatten(img, bgcolor)

__all__ = [
    "GridAnnotation", "ImageGridLoopParams", "ImageSaveParams", "LANCZOS", "NEAREST", "draw_grid_annotations",
    "draw_prompt_matrix", "flatten", "get_font", "get_next_sequence_number", "image_grid", "read_info_from_image",
    "resize_image", "save_image"
]
