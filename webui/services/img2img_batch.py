"""img2img's Batch tab: every image of a folder through the ordinary img2img job, with an optional
mask folder (matched by file name) and output folder. A bad file is reported and skipped."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from webui import outputs
from webui.imaging.decode import ImageInputError, open_image_file
from webui.services.img2img_scripts import Img2ImgScripts
from webui.services.jobs import JobState
from webui.services.requests import Img2ImgRequest
from webui.services.txt2img import GenerationError

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


def check_dirs(input_dir: str, output_dir: str, mask_dir: str) -> tuple[Path, Path | None, Path | None]:
    if not (input_dir or "").strip():
        raise GenerationError("Batch: enter an input directory")
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
        # an output folder gets numbered files, no date subfolders (A1111's batch with an output dir)
        for img, text, seed in zip(res.images, res.infotexts, res.info.get("all_seeds") or [None] * len(res.images)):
            result.paths.append(outputs.save_image(img, out, seed=seed,
                                                   infotext=text if settings.get("enable_pnginfo") else None,
                                                   fmt=str(settings.get("samples_format"))))
    return result
