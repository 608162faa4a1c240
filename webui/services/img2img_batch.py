"""img2img's Batch tab: every image of a folder through the ordinary img2img job, with an optional
mask folder (matched by file name) and output folder. A bad file is reported and skipped."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from webui import filename_patterns as patterns
from webui import outputs
from webui.imaging.decode import ImageInputError, open_image_file
from webui.services.img2img_scripts import Img2ImgScripts
from webui.services.jobs import JobState
from webui.services.requests import Img2ImgRequest
from webui.services.txt2img import GenerationError

if TYPE_CHECKING:
    from webui.serving.path_guard import PathGuard

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class BatchResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def info(self) -> dict:
        """The shape the generation tab shows (infotexts, and the skipped files as warnings)."""
        return {"infotexts": list(self.infotexts), "warnings": list(self.errors), "index_of_first_image": 0}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_mask(mask_dir: Path, image: Path) -> Path | None:
    """Same file name, or the same stem with any image suffix (A1111)."""
    exact = mask_dir / image.name
    if exact.is_file():
        return exact
    for p in sorted(mask_dir.glob(image.stem + ".*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return p
    return None


def check_dirs(input_dir: str, output_dir: str, mask_dir: str,
               guard: "PathGuard | None" = None) -> tuple[Path, Path | None, Path | None]:
    """The batch's folders; `guard` confines them on a server reachable from the network."""
    if not (input_dir or "").strip():
        raise GenerationError("Batch: enter an input directory")
    if guard is not None:
        from webui.serving.path_guard import PathRefused
        for value, what in ((input_dir, "input directory"), (output_dir, "output directory"),
                            (mask_dir, "inpaint mask directory")):
            if (value or "").strip():
                try:
                    guard.check(value.strip(), f"Batch: {what}")
                except PathRefused as e:
                    raise GenerationError(str(e)) from None
    src = Path(input_dir.strip()).expanduser()
    if not src.is_dir():
        raise GenerationError(f"Batch: input directory {src} does not exist")
    if not list_images(src):
        raise GenerationError(f"Batch: no images (png, jpg, webp, ...) in {src}")
    masks = Path(mask_dir.strip()).expanduser() if (mask_dir or "").strip() else None
    if masks is not None and not masks.is_dir():
        raise GenerationError(f"Batch: mask directory {masks} does not exist")
    out = Path(output_dir.strip()).expanduser() if (output_dir or "").strip() else None
    return src, out, masks


def run_batch(scripts: Img2ImgScripts, req: Img2ImgRequest, input_dir: str, output_dir: str, mask_dir: str,
              state: JobState) -> BatchResult:
    src, out, masks = check_dirs(input_dir, output_dir, mask_dir)
    files = list_images(src)
    result = BatchResult()
    state.job_count = len(files) * max(1, req.n_iter)
    settings = scripts.svc.settings
    for n, path in enumerate(files):
        if state.interrupted:
            break
        state.textinfo = f"Batch {n + 1}/{len(files)}: {path.name}"
        try:
            image = open_image_file(path)
            mask = None
            if masks is not None:
                mp = find_mask(masks, path)
                mask = open_image_file(mp) if mp is not None else None
            run = req.model_copy(update={"init_images": [image], "mask": mask})
            res = scripts.run(run, state, save=out is None)
        except (ImageInputError, GenerationError) as e:
            result.errors.append(f"{path.name}: {e}")
            continue
        result.images.extend(res.images)
        result.infotexts.extend(res.infotexts)
        if out is None:
            result.paths.extend(res.paths)
            continue
        # an output folder gets no date subfolders (A1111's batch with an output dir)
        for i, (img, text) in enumerate(zip(res.images, res.infotexts)):
            try:
                result.paths.append(save_to_output_dir(settings, out, path, img, text, res.info, i, req))
            except OSError as e:
                raise GenerationError(f"Batch: cannot save into {out}: {e.strerror or e}") from None
    return result


def save_to_output_dir(settings: Any, out: Path, source: Path, img: Image.Image, text: str, info: dict,
                       index: int, req: Img2ImgRequest) -> Path:
    """One result saved into the batch's output folder. With `use_original_name_batch` (A1111's
    batch naming) it is named for its input file, `<number>-<input name>` (plus `-<generation
    number>` when the job makes several), never replacing a file; otherwise by the file-name
    pattern, as a folder without subdirectories names files (`[seed]-[prompt_spaces]` by default)."""
    from webui.infotext import parse_generation_parameters
    params = parse_generation_parameters(text) if text else {}
    ctx = patterns.context_from_info({**info, "index_of_first_image": 0}, params, img, index,
                                     int(settings.get("directories_max_prompt_words") or 8))
    replace = settings.get("save_images_replace_action") != "Add number suffix"
    if settings.get("use_original_name_batch"):
        # the input's name is taken as it is, not as a pattern: a "[" in a file name stays text
        several = max(1, int(req.n_iter or 1)) > 1 or max(1, int(req.batch_size or 1)) > 1
        decoration = source.stem + (patterns.apply_pattern("-[generation_number]", ctx) if several else "")
        replace = False  # A1111: "Add number suffix" for batch outputs
    else:
        decoration = patterns.file_decoration(str(settings.get("samples_filename_pattern") or ""), False, ctx)
    return outputs.save_image(img, out, seed=ctx.seed, infotext=text if settings.get("enable_pnginfo") else None,
                              fmt=str(settings.get("samples_format")), decoration=decoration,
                              quality=int(settings.get("jpeg_quality") or 80),
                              add_number=bool(settings.get("save_images_add_number")), replace=replace,
                              lossless=bool(settings.get("webp_lossless")))
