"""Stages 5–8: decode a batch, post-process each image, save it, and make the job's grid.

Saving goes through the before/after image-saved callbacks (A1111's `on_before_image_saved` may
change the image, the file name or the text chunks; `on_image_saved` learns the path).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from webui import filename_patterns as patterns
from webui import outputs
from webui.engine import memory_stages as stages
from webui.engine import vae as vae_ops
from webui.filename_patterns import NameContext
from webui.processing.errors import GenerationError
from webui.processing.callbacks import ImageSaveParams
from webui.processing.scripts import PostprocessBatchListArgs, PostprocessImageArgs

if TYPE_CHECKING:
    from webui.processing.context import Processing


def decode(p: "Processing", latents: torch.Tensor) -> torch.Tensor:
    """Latents → images in [0, 1], [B, 3, H, W] on the CPU, by the model sampling ended on (a refiner's
    or hires checkpoint's VAE, as A1111)."""
    current = p.pipeline.models.current if p.pipeline is not None else None
    return decode_with(p, current or p.sd_model, latents)


def decode_with(p: "Processing", model: Any, latents: torch.Tensor) -> torch.Tensor:
    """``model``'s VAE decode under the job's auto_vae_precision options."""
    try:
        return stages.decode(model, latents, nan_precision=vae_nan_precision(p))
    except stages.VaeNaNError as e:
        raise GenerationError(str(e)) from None


def vae_nan_precision(p: "Processing") -> str:
    """What a decode that gives NaNs does again in (A1111's auto_vae_precision_bfloat16, which wins,
    and auto_vae_precision); "" = fail."""
    if p.opt("auto_vae_precision_bfloat16"):
        return "bfloat16"
    return "float32" if p.opt("auto_vae_precision", True) else ""


def batch_images(p: "Processing", decoded: torch.Tensor, n: int) -> list[Any]:
    """A1111's postprocess_batch and postprocess_batch_list: scripts see the batch and may replace,
    drop or add images (as [3, H, W] tensors or PIL images)."""
    if p.scripts is None:
        return list(decoded)
    p.scripts.postprocess_batch(p, decoded, batch_number=n)
    pp = PostprocessBatchListArgs(list(decoded))
    p.scripts.postprocess_batch_list(p, pp, batch_number=n)
    return pp.images


def to_pil(item: Any) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    return vae_ops.to_pil(item.unsqueeze(0) if item.ndim == 3 else item)[0]


def postprocess_image(p: "Processing", img: Image.Image) -> Image.Image:
    """Per image, in A1111's order: face restoration, the scripts' postprocess_image."""
    if p.restore_faces:
        faces = p.pipeline.faces if p.pipeline is not None else None
        if faces is None:
            p.warn("Restore faces: no face restoration is available in this build")
        else:
            img, warning = faces.restore(img, str(p.opt("face_restoration_model") or "CodeFormer"),
                                         float(p.opt("code_former_weight", 0.5)))
            if warning:
                p.warn(warning)
    if p.scripts is not None:
        pp = PostprocessImageArgs(img)
        p.scripts.postprocess_image(p, pp)
        img = pp.image
    return img


def name_context(p: "Processing", img: Image.Image, seed: int | None, index: int | None = None) -> NameContext:
    """What the file-name patterns may tell of picture `index` of the job (default: the one being saved)."""
    if index is None:
        index = p.iteration * p.batch_size + p.batch_index

    def pick(values: list[str], fallback: Any) -> Any:
        return values[min(max(index, 0), len(values) - 1)] if values else fallback
    styles = list(p.styles or [])
    db = p.pipeline.styles if p.pipeline is not None else None
    model = p.sd_model
    vae = getattr(model, "vae_file", None) if model is not None else None
    return NameContext(
        seed=seed, prompt=pick(p.all_prompts, p.prompt if isinstance(p.prompt, str) else ""),
        negative_prompt=pick(p.all_negative_prompts, p.negative_prompt if isinstance(p.negative_prompt, str) else ""),
        job_prompt=str(p.prompt), job_negative_prompt=str(p.negative_prompt), styles=styles,
        style_prompts=db.get_style_prompts(styles) if db is not None else [],
        steps=p.steps, cfg=p.cfg_scale, sampler=p.sampler.name if p.sampler is not None else p.sampler_name,
        scheduler=p.scheduler, model_hash=model.info.shorthash if model is not None else None,
        model_name=model.info.name_for_extra if model is not None else None,
        vae_filename=vae.name if vae is not None else None,
        job_timestamp=p.state.job_timestamp if p.state is not None else None,
        batch_index=p.batch_index, batch_size=p.batch_size, n_iter=p.n_iter, iteration=p.iteration,
        all_seeds=list(p.all_seeds), clip_skip=p.opt("CLIP_stop_at_last_layers"), denoising=p.denoising_strength,
        image=img, max_prompt_words=int(p.opt("directories_max_prompt_words") or 8))


@dataclass
class SaveOrder:
    """One image to write, with everything decided: a scale-out worker sends these to the front, which
    writes them into its own outputs folder (numbering and file names in one place)."""
    image: Image.Image
    directory: str  # relative to the outputs folder when inside it
    seed: int | None
    infotext: str | None
    grid: bool
    fmt: str
    extra_pnginfo: dict[str, str] | None
    quality: int
    decoration: str
    add_number: bool
    replace: bool
    lossless: bool
    stem: str = ""  # a name an image-saved callback chose
    txt: str = ""  # the infotext beside the image (save_txt)

    def write(self, outputs_dir: Path) -> Path:
        directory = outputs_dir / self.directory  # an absolute folder stays what it is
        if self.stem:
            path = outputs.save_image_named(self.image, directory, self.stem, infotext=self.infotext, fmt=self.fmt,
                                            extra_pnginfo=self.extra_pnginfo, quality=self.quality,
                                            replace=self.replace, lossless=self.lossless)
        else:
            path = outputs.save_image(self.image, directory, seed=self.seed, infotext=self.infotext, grid=self.grid,
                                      fmt=self.fmt, extra_pnginfo=self.extra_pnginfo, quality=self.quality,
                                      decoration=self.decoration, add_number=self.add_number, replace=self.replace,
                                      lossless=self.lossless)
        if self.txt:
            path.with_suffix(".txt").write_text(self.txt, encoding="utf-8")  # A1111: infotext beside the image
        return path


def save(p: "Processing", img: Image.Image, text: str, seed: int | None, *, grid: bool = False) -> Path | None:
    """Save one image (or the grid) where the job's options say, named by its file-name and folder
    patterns, through the image-saved callbacks. When the job's state defers saving (a scale-out
    worker), the order is kept on the state for the front to write and a placeholder path returned."""
    callbacks = p.pipeline.callbacks if p.pipeline is not None else None
    with_info = bool(p.opt("enable_pnginfo"))
    ctx = name_context(p, img, seed, 0 if grid else None)
    directory = p.outdir("grids" if grid else "samples")
    if p.opt("grid_save_to_dirs" if grid else "save_to_dirs"):
        folders = patterns.directory_name(str(p.opt("directories_filename_pattern") or ""), ctx)
        directory = directory.joinpath(*folders)
    short = seed is None or (grid and not p.opt("grid_extended_filename"))  # A1111: grids are grid-0003
    decoration = "" if short else patterns.file_decoration(str(p.opt("samples_filename_pattern") or ""),
                                                           bool(p.opt("save_to_dirs")), ctx)
    params = ImageSaveParams(img, p, "", {"parameters": text} if with_info else {})
    if callbacks is not None:
        callbacks.run("before_image_saved", params, p)
    stem = ""
    if params.filename:  # a callback chose the name
        target = Path(params.filename)
        directory = target.parent if target.parent != Path("") else directory
        stem = target.stem
    outputs_dir = Path(p.pipeline.outputs_dir).absolute() if p.pipeline is not None else Path.cwd()
    directory = Path(directory).absolute()
    if directory.is_relative_to(outputs_dir):  # sent relative: the front writes into its own outputs folder
        directory = directory.relative_to(outputs_dir)
    order = SaveOrder(params.image, str(directory), seed, params.pnginfo.get("parameters") if params.pnginfo else None,
                      grid, str(p.opt("grid_format" if grid else "samples_format")),
                      {k: str(v) for k, v in (params.pnginfo or {}).items() if k != "parameters"} or None,
                      int(p.opt("jpeg_quality")), decoration, bool(p.opt("save_images_add_number")),
                      p.opt("save_images_replace_action") != "Add number suffix", bool(p.opt("webp_lossless")),
                      stem, text if p.opt("save_txt") and text else "")
    deferred = getattr(p.state, "deferred_saves", None)
    if deferred is not None:
        deferred.append(order)
        return Path(order.directory) / f"pending-{len(deferred)}"
    try:
        path = order.write(outputs_dir)
    except OSError as e:  # an output folder option or a pattern naming something unwritable: say which
        raise GenerationError(f"cannot save the {'grid' if grid else 'image'} into {directory}: "
                              f"{e.strerror or e} (see the outdir_* options and the file and folder "
                              "name patterns)") from None
    if callbacks is not None:
        callbacks.run("image_saved", ImageSaveParams(params.image, p, str(path), params.pnginfo), p)
    return path


def make_grid(p: "Processing", images: list[Image.Image]) -> Image.Image:
    return outputs.make_grid(images, batch_size=p.batch_size, n_rows=int(p.opt("n_rows")),
                             prevent_empty_spots=bool(p.opt("grid_prevent_empty_spots")))
