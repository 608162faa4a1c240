"""A1111's `modules.images` on our outputs, resize and grid code.

`save_image(...)` writes through `webui.outputs` and names the file as the app's own savers do, by
A1111's options and patterns (`webui.filename_patterns`: `samples_filename_pattern`,
`directories_filename_pattern`, `save_images_add_number`, `save_images_replace_action`), with the
text chunks, and fires the before/after image-saved callbacks as the pipeline does. `save_to_dirs=None`
means what it means in A1111 (`grid_save_to_dirs` for grids, else `save_to_dirs` unless `no_prompt`).
No `.txt` is written: the second value returned is None. `forced_filename` saves under that name.
`FilenameGenerator(p, seed, prompt, image).apply("[seed]-[prompt_words]")` and
`sanitize_filename_part` are A1111's names for the same engine.

`resize_image(resize_mode, im, width, height, upscaler_name=None)`, `image_grid(imgs,
batch_size=1, rows=None)` (fires `image_grid` callbacks), `GridAnnotation`,
`draw_grid_annotations`, `draw_prompt_matrix`, `get_font`, `read_info_from_image`,
`get_next_sequence_number`, `flatten`, `LANCZOS`, `NEAREST`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from webui import filename_patterns as patterns
from webui import outputs
from webui.extensions.compat import binding
from webui.imaging import resize as _resize
from webui.imaging import grid_annotations as _ga
from webui.imaging.grid_annotations import GridAnnotation, get_font  # noqa: F401
from webui.imaging.grid_annotations import image_grid as _image_grid
from webui.infotext import read_info_from_image  # noqa: F401
from webui.processing.callbacks import ImageGridLoopParams, ImageSaveParams


LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST


def _callbacks() -> Any:
    return binding.current().pipeline.callbacks if binding.is_bound() else None


def _options() -> dict[str, Any]:
    if binding.is_bound():
        return binding.current().settings.all()
    from webui.settings import OPTIONS
    return {k: info.default for k, info in OPTIONS.items()}


def _context(p: Any, seed: Any, prompt: str | None, image: Image.Image | None, basename: str = "",
             zip: bool = False) -> patterns.NameContext:
    """A1111's FilenameGenerator inputs: a job of ours tells everything, anything else what it has."""
    if getattr(p, "opts", None) is not None and getattr(p, "pipeline", None) is not None and image is not None:
        from webui.processing.output_stage import name_context
        ctx = name_context(p, image, seed)
    else:
        neg = getattr(p, "negative_prompt", None)
        ctx = patterns.NameContext(
            seed=seed, steps=getattr(p, "steps", None), cfg=getattr(p, "cfg_scale", None),
            sampler=getattr(p, "sampler_name", None), scheduler=getattr(p, "scheduler", None),
            styles=list(getattr(p, "styles", None) or []), batch_size=int(getattr(p, "batch_size", 1) or 1),
            n_iter=int(getattr(p, "n_iter", 1) or 1), all_seeds=list(getattr(p, "all_seeds", None) or []),
            negative_prompt=neg if isinstance(neg, str) else None,
            image=image, max_prompt_words=int(_options().get("directories_max_prompt_words") or 8))
    if prompt is not None:
        ctx.prompt = prompt
    ctx.basename, ctx.zip = basename, zip
    return ctx


class FilenameGenerator:
    """A1111's `FilenameGenerator(p, seed, prompt, image, zip=False, basename="").apply(pattern)`."""

    def __init__(self, p: Any, seed: Any, prompt: str | None, image: Image.Image | None, zip: bool = False,
                 basename: str = "") -> None:
        self.ctx = _context(p, seed, prompt, image, basename, zip)

    def apply(self, x: str) -> str:
        return patterns.apply_pattern(x, self.ctx)


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    return None if text is None else patterns.sanitize_part(text, replace_spaces)


def save_image(image: Image.Image, path: str, basename: str, seed: int | None = None, prompt: str | None = None,
               extension: str = "png", info: str | None = None, short_filename: bool = False,
               no_prompt: bool = False, grid: bool = False, pnginfo_section_name: str = "parameters",
               p: Any = None, existing_info: dict[str, Any] | None = None, forced_filename: str | None = None,
               suffix: str = "", save_to_dirs: bool | None = None) -> tuple[str, str | None]:
    """Save an image as A1111 does; returns (full file name, txt file name or None)."""
    directory = Path(path)
    opts = _options()
    ctx = _context(p, seed, prompt, image, basename or "")
    if save_to_dirs is None:
        save_to_dirs = bool(opts.get("grid_save_to_dirs")) if grid else bool(opts.get("save_to_dirs")) and not no_prompt
    if save_to_dirs:
        directory = directory.joinpath(*patterns.directory_name(str(opts.get("directories_filename_pattern") or ""),
                                                                ctx))
    replace = opts.get("save_images_replace_action") != "Add number suffix"
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
        saved = outputs.save_image_named(params.image, folder, stem, infotext=text, fmt=fmt, extra_pnginfo=extra,
                                         replace=replace, lossless=bool(opts.get("webp_lossless")))
    else:
        short = short_filename or seed is None or seed == ""
        decoration = "" if short else patterns.file_decoration(str(opts.get("samples_filename_pattern") or ""),
                                                               bool(opts.get("save_to_dirs")), ctx)
        saved = outputs.save_image(params.image, directory, seed=None if short else seed, infotext=text,
                                   basename=basename or "", grid=grid, fmt=fmt, extra_pnginfo=extra, suffix=suffix,
                                   decoration=decoration, add_number=bool(opts.get("save_images_add_number", True)),
                                   replace=replace, lossless=bool(opts.get("webp_lossless")),
                                   quality=int(opts.get("jpeg_quality") or 80))
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


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts: Any, ver_texts: Any,
                          margin: int = 0, **kwargs: Any) -> Image.Image:
    """A1111's: labels in the font and colours of its font / grid_*_color options."""
    return _ga.draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin,
                                     **{**_ga.style_from_options(_options().get), **kwargs})


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: list[str], margin: int = 0,
                       **kwargs: Any) -> Image.Image:
    return _ga.draw_prompt_matrix(im, width, height, all_prompts, margin,
                                  **{**_ga.style_from_options(_options().get), **kwargs})


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """A grid of the images (A1111's row rule), after the `image_grid` callbacks had their say."""
    if rows is None:  # A1111: the n_rows and grid_prevent_empty_spots options
        opts = _options()
        rows = _ga.grid_rows(len(imgs), batch_size, int(opts.get("n_rows", -1)),
                             bool(opts.get("grid_prevent_empty_spots")))
        rows = max(1, min(rows, len(imgs)))
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
    "FilenameGenerator", "GridAnnotation", "ImageGridLoopParams", "ImageSaveParams", "LANCZOS", "NEAREST",
    "draw_grid_annotations", "draw_prompt_matrix", "flatten", "get_font", "get_next_sequence_number", "image_grid",
    "read_info_from_image", "resize_image", "sanitize_filename_part", "save_image"
]
