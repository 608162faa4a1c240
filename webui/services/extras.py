"""The Extras tab (A1111's run_extras / postprocessing scripts "Upscale", "GFPGAN", "CodeFormer").

One image, a batch of uploaded files, or every file of a folder, each enlarged by upscaler 1
(optionally blended with upscaler 2), "Scale by" a factor (with an optional longest-side limit) or
"Scale to" a width and height (cropped to fit, or not), then its faces restored by GFPGAN and then
CodeFormer, each blended in at its visibility (A1111's script order: Upscale 1000, GFPGAN 2000,
CodeFormer 3000; like A1111 1.x, `upscale_first` does not change it). Results keep the source's text
chunks (`parameters` above all) and gain A1111's postprocessing infotext, e.g.
`Postprocess upscale by: 2, Postprocess upscaler: Lanczos, GFPGAN visibility: 0.5`.

Jobs go through the shared queue, so an upscale never runs beside a generation.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from webui.imaging.decode import ImageInputError, open_image_file
from webui.imaging.face_restore import FaceRestorers
from webui.imaging.upscalers import UpscalerError, UpscalerRegistry, scaled_size
from webui.infotext import quote, read_info_from_image
from webui.outputs import save_image, save_image_named
from webui.services.jobs import SERVER_OWNER, Interrupted, Job, JobQueue, JobState, Skipped
from webui.settings import Settings

RESIZE_MODES = ("Scale by", "Scale to")
MAX_SCALE = 8.0     # the UI slider's top (A1111: 1..8)
MAX_TARGET_SIDE = 8192


class ExtrasError(ValueError):
    """A request the Extras tab cannot do (bad folder, bad value); the message is for the user."""


@dataclass
class ExtrasParams:
    """A1111's run_extras arguments (API field names)."""
    resize_mode: int = 0                  # 0 = Scale by, 1 = Scale to
    upscaling_resize: float = 2.0         # Scale by (API default 2; the UI's slider starts at 4)
    max_side_length: int = 0              # Scale by: longest side limit, 0 = none
    upscaling_resize_w: int = 512         # Scale to
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True           # Scale to: crop to the exact size
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False           # accepted and ignored, as in A1111 1.x (the scripts' order rules)
    gfpgan_visibility: float = 0.0        # 0 = GFPGAN off
    codeformer_visibility: float = 0.0    # 0 = CodeFormer off
    codeformer_weight: float = 0.0        # CodeFormer fidelity: 0 = maximum effect, 1 = minimum effect


def upscaler_suffix(info: dict[str, Any]) -> str:
    """`-<upscaler>` (and `-<second upscaler>` when it was blended in) for `use_upscaler_name_as_suffix`."""
    names = [str(info[k]) for k in ("Postprocess upscaler", "Postprocess upscaler 2") if info.get(k)]
    return "".join(f"-{n}" for n in names)


@dataclass
class ExtrasResult:
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    pnginfo: list[dict[str, str]] = field(default_factory=list)  # text chunks of each result
    names: list[str | None] = field(default_factory=list)
    saved: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)              # "<file>: <reason>" per skipped input
    warnings: list[str] = field(default_factory=list)            # e.g. a face restorer without a model file
    processed: int = 0
    interrupted: bool = False

    @property
    def html_info(self) -> str:
        """A1111's plaintext_to_html of the last image's postprocessing infotext, then the warnings."""
        text = self.infotexts[-1] if self.infotexts else ""
        out = "<p>" + "<br>\n".join(html.escape(x) for x in text.split("\n")) + "</p>"
        return out + "".join(f"<p class='extras-warning'>⚠️ {html.escape(w)}</p>" for w in self.warnings)


def limit_size_by_one_dimension(w: float, h: float, limit: int) -> tuple[int, int]:
    """A1111's limit_size_by_one_dimention: shrink so the longer side is `limit`."""
    if h > w and h > limit:
        w = limit * w // h
        h = limit
    elif w > limit:
        h = limit * h // w
        w = limit
    return int(w), int(h)


def format_infotext(info: dict[str, Any]) -> str:
    return ", ".join(k if k == v else f"{k}: {quote(v)}" for k, v in info.items() if v is not None)


def _number(v: float) -> float | int:
    v = float(v)
    return int(v) if v.is_integer() else v


class ExtrasService:
    def __init__(self, upscalers: UpscalerRegistry, settings: Settings, outputs_dir: Path, queue: JobQueue,
                 faces: FaceRestorers | None = None) -> None:
        self.upscalers = upscalers
        self.settings = settings
        self.outputs_dir = Path(outputs_dir)
        self.queue = queue
        # face restorers (GFPGAN, CodeFormer); the generation pipeline's "Restore faces" uses
        # faces.restore(img, name=None, codeformer_weight=None) -> (image, warning | None)
        self.faces = faces if faces is not None else FaceRestorers(settings=settings)
        # set by build_services: the batch-from-directory folders a request names are confined
        # when the server is reachable from the network (None: any folder)
        self.path_guard: Any = None

    def upscale(self, img: Image.Image, name: str, scale: float) -> Image.Image:
        """One picture by one upscaler, with the tile settings (hires fix and SD upscale use this)."""
        return self.upscalers.upscale(img, scale, name, tile=int(self.settings.get("ESRGAN_tile")),
                                      overlap=int(self.settings.get("ESRGAN_tile_overlap")))

    # ------------------------------------------------------------ checks
    def validate(self, p: ExtrasParams) -> None:
        """Fail before queueing: values out of range, unknown or unusable upscalers, a face restorer
        asked for without a usable model file."""
        if p.resize_mode not in (0, 1):
            raise ExtrasError(f"resize_mode must be 0 (Scale by) or 1 (Scale to), got {p.resize_mode!r}")
        if p.resize_mode == 0 and not 0 < float(p.upscaling_resize) <= MAX_SCALE:
            raise ExtrasError(f"upscaling_resize must be above 0 and at most {MAX_SCALE:g}, got {p.upscaling_resize}")
        if p.max_side_length < 0:
            raise ExtrasError(f"max_side_length must be 0 (no limit) or positive, got {p.max_side_length}")
        if p.resize_mode == 1:
            for k in ("upscaling_resize_w", "upscaling_resize_h"):
                v = getattr(p, k)
                if not 1 <= int(v) <= MAX_TARGET_SIDE:
                    raise ExtrasError(f"{k} must be 1..{MAX_TARGET_SIDE}, got {v}")
        for k in ("extras_upscaler_2_visibility", "gfpgan_visibility", "codeformer_visibility", "codeformer_weight"):
            if not 0.0 <= float(getattr(p, k)) <= 1.0:
                raise ExtrasError(f"{k} must be 0..1, got {getattr(p, k)}")
        self.upscalers.find(p.upscaler_1)
        self.upscalers.find(p.upscaler_2)
        for name, vis in (("GFPGAN", p.gfpgan_visibility), ("CodeFormer", p.codeformer_visibility)):
            if float(vis) > 0 and self.faces.model_file(name) is None:  # asked for, impossible: say so up front
                raise ExtrasError(f"face restoration: {self.faces.missing_reason(name)}")

    # ------------------------------------------------------------ one image
    def _scale(self, img: Image.Image, name: str, p: ExtrasParams, info: dict[str, Any],
               state: JobState | None) -> Image.Image:
        """A1111's ScriptPostprocessingUpscale.upscale for one upscaler."""
        mode, scale = p.resize_mode, float(p.upscaling_resize)
        w_to, h_to, crop = int(p.upscaling_resize_w), int(p.upscaling_resize_h), bool(p.upscaling_crop)
        if mode == 1:
            scale = max(w_to / img.width, h_to / img.height)
            info["Postprocess upscale to"] = f"{w_to}x{h_to}"
        else:
            info["Postprocess upscale by"] = _number(p.upscaling_resize)
            if p.max_side_length and max(img.size) * scale > p.max_side_length:
                mode, crop = 1, False
                w_to, h_to = limit_size_by_one_dimension(img.width * scale, img.height * scale, int(p.max_side_length))
                scale = max(w_to / img.width, h_to / img.height)
                info["Max side length"] = int(p.max_side_length)

        def on_tile(done: int, total: int) -> None:
            if state is not None:
                state.sampling_step, state.sampling_steps = done, total
                state.check()  # Interrupt / Skip between tiles

        out = self.upscalers.upscale(img, scale, name, tile=int(self.settings.get("ESRGAN_tile")),
                                     overlap=int(self.settings.get("ESRGAN_tile_overlap")), on_tile=on_tile)
        if mode == 1 and crop:
            if out.size != (w_to, h_to):  # centred, as A1111 pastes it into a new w_to x h_to picture
                canvas = Image.new(out.mode, (w_to, h_to))
                canvas.paste(out, box=(w_to // 2 - out.width // 2, h_to // 2 - out.height // 2))
                out = canvas
            info["Postprocess crop to"] = f"{out.width}x{out.height}"
        return out

    def upscale_image(self, img: Image.Image, p: ExtrasParams,
                      state: JobState | None = None) -> tuple[Image.Image, dict[str, Any]]:
        """(result, postprocessing info) for one picture; upscaler 1 "None" leaves it as it is."""
        if img.mode not in ("RGB", "RGBA"):
            alpha = img.mode in ("LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            img = img.convert("RGBA" if alpha else "RGB")
        info: dict[str, Any] = {}
        first = self.upscalers.find(p.upscaler_1)
        if first.name == "None":
            return img, info
        second = self.upscalers.find(p.upscaler_2)
        out = self._scale(img, first.name, p, info, state)
        info["Postprocess upscaler"] = first.name
        vis = float(p.extras_upscaler_2_visibility)
        if second.name != "None" and vis > 0:
            other = self._scale(img, second.name, p, info, state)
            if other.mode != out.mode:
                other = other.convert(out.mode)
            out = Image.blend(out, other, vis)
            info["Postprocess upscaler 2"] = second.name
        return out, info

    def restore_faces_image(self, img: Image.Image, p: ExtrasParams,
                            info: dict[str, Any]) -> tuple[Image.Image, list[str]]:
        """A1111's GFPGAN then CodeFormer postprocessing scripts: each restores the faces of the picture
        so far and is blended in at its visibility; (result, warnings)."""
        warnings: list[str] = []
        for name, vis in (("GFPGAN", float(p.gfpgan_visibility)), ("CodeFormer", float(p.codeformer_visibility))):
            if vis <= 0:
                continue
            weight = float(p.codeformer_weight) if name == "CodeFormer" else None
            restored, warning = self.faces.restore_faces(img, name, weight)
            if warning:
                warnings.append(warning)
                continue
            if vis < 1.0:
                if restored.mode != img.mode:
                    restored = restored.convert(img.mode)
                restored = Image.blend(img, restored, vis)
            img = restored
            info[f"{name} visibility"] = round(vis, 3)
            if name == "CodeFormer":
                info["CodeFormer weight"] = round(float(p.codeformer_weight), 3)
        return img, warnings

    def process_image(self, img: Image.Image, p: ExtrasParams,
                      state: JobState | None = None) -> tuple[Image.Image, dict[str, Any], list[str]]:
        """(result, postprocessing info, warnings) for one picture: upscale, then face restoration."""
        out, info = self.upscale_image(img, p, state)
        if p.gfpgan_visibility > 0 or p.codeformer_visibility > 0:
            if out.mode not in ("RGB", "RGBA"):
                out = out.convert("RGBA" if "A" in out.getbands() else "RGB")
            out, warnings = self.restore_faces_image(out, p, info)
            return out, info, warnings
        return out, info, []

    # ------------------------------------------------------------ batches
    def _naming(self) -> dict[str, Any]:
        """The saving options Extras follows (read once per run)."""
        get = self.settings.get
        return {"original": bool(get("use_original_name_batch")), "suffix": bool(get("use_upscaler_name_as_suffix")),
                "replace": get("save_images_replace_action") != "Add number suffix",
                "lossless": bool(get("webp_lossless")), "quality": int(get("jpeg_quality") or 80)}

    def output_dir(self) -> Path:
        # A1111: outdir_samples, when set, wins over the Extras folder
        custom = str(self.settings.get("outdir_samples") or self.settings.get("outdir_extras_samples") or "").strip()
        return Path(custom) if custom else self.outputs_dir / "extras-images"

    def run(self, images: Iterable[tuple[Image.Image | Path, str | None]], p: ExtrasParams,
            state: JobState | None = None, *, save: bool, output_dir: Path | None = None,
            keep_results: bool = True) -> ExtrasResult:
        """Upscale each (image or file, name); a file that cannot be read is reported and skipped.

        `name` (the source file name) makes the saved file `<name stem>.<format>` as A1111's
        `use_original_name_batch` does; without one, or with that option off, the file is numbered
        (`00012.png`). `use_upscaler_name_as_suffix` adds `-<upscaler>` to either."""
        items = list(images)
        res = ExtrasResult()
        if state is not None:
            state.job_count = len(items)
        out_dir = Path(output_dir) if output_dir else self.output_dir()
        fmt = str(self.settings.get("samples_format") or "png")
        naming = self._naming()
        for i, (src, name) in enumerate(items):
            if state is not None:
                state.job_no, state.textinfo = i, name or ""
                state.sampling_step = state.sampling_steps = 0
                if state.interrupted:
                    res.interrupted = True
                    break
            label = name or (src.name if isinstance(src, Path) else f"image {i + 1}")
            try:
                img = open_image_file(src) if isinstance(src, Path) else src
                text, items_info = read_info_from_image(img)
                out, info, warnings = self.process_image(img, p, state)
                res.warnings.extend(w for w in warnings if w not in res.warnings)
            except ImageInputError as e:
                msg = str(e)
                res.errors.append(f"{label}: {msg[len(label):].strip() if msg.startswith(label) else msg}")
                continue
            except Skipped:
                continue
            except Interrupted:
                res.interrupted = True
                break
            post = format_infotext(info)
            chunks = {k: v for k, v in items_info.items() if isinstance(k, str) and isinstance(v, str)}
            if text:
                chunks["parameters"] = text
            if post:
                chunks["postprocessing"] = post
                chunks["extras"] = post
            res.processed += 1
            if save:
                extra = {k: v for k, v in chunks.items() if k != "parameters"}
                geninfo = text if (text or fmt.lower() == "png") else (post or None)
                suffix = upscaler_suffix(info) if naming["suffix"] else ""
                try:
                    if name and naming["original"]:
                        path = save_image_named(out, out_dir, os.path.splitext(os.path.basename(name))[0] + suffix,
                                                infotext=geninfo, fmt=fmt, extra_pnginfo=extra,
                                                quality=naming["quality"], replace=naming["replace"],
                                                lossless=naming["lossless"])
                    else:
                        path = save_image(out, out_dir, seed=None, infotext=geninfo, fmt=fmt, extra_pnginfo=extra,
                                          suffix=suffix, quality=naming["quality"], lossless=naming["lossless"])
                except OSError as e:
                    raise ExtrasError(f"cannot save into {out_dir}: {e.strerror or e}") from None
                res.saved.append(path)
            res.infotexts.append(post)
            if keep_results:
                res.images.append(out)
                res.pnginfo.append(chunks)
                res.names.append(name)
        return res

    def directory_files(self, input_dir: str | Path, output_dir: str | Path | None = None) -> list[Path]:
        """The files of an input folder (A1111's listfiles: sorted, not recursive); clear errors."""
        if not str(input_dir or "").strip():
            raise ExtrasError("input directory not selected")
        if self.path_guard is not None:
            for value, what in ((input_dir, "input directory"), (output_dir, "output directory")):
                if value and str(value).strip():
                    try:
                        self.path_guard.check(str(value).strip(), what)
                    except ValueError as e:
                        raise ExtrasError(str(e)) from None
        d = Path(str(input_dir).strip()).expanduser()
        if not d.exists():
            raise ExtrasError(f"input directory {d} does not exist")
        if not d.is_dir():
            raise ExtrasError(f"{d} is not a directory")
        try:
            files = sorted((f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")),
                           key=lambda f: f.name.lower())
        except OSError as e:
            raise ExtrasError(f"cannot read input directory {d}: {e.strerror or e}") from None
        if not files:
            raise ExtrasError(f"input directory {d} has no files")
        if output_dir and str(output_dir).strip():
            out = Path(str(output_dir).strip()).expanduser()
            if out.exists() and not out.is_dir():
                raise ExtrasError(f"output directory {out} is a file")
        return files

    # ------------------------------------------------------------ through the queue
    def submit(self, images: list[tuple[Image.Image | Path, str | None]], p: ExtrasParams, *, save: bool,
               label: str = "extras", owner: str = SERVER_OWNER) -> Job:
        self.validate(p)
        if not images:
            raise ExtrasError("image not selected")
        return self.queue.submit(lambda state: self.run(images, p, state, save=save), label=label, owner=owner)

    def submit_directory(self, input_dir: str, output_dir: str, p: ExtrasParams, *, show_results: bool = True,
                         label: str = "extras (directory)", owner: str = SERVER_OWNER) -> Job:
        self.validate(p)
        files = self.directory_files(input_dir, output_dir)
        out = Path(output_dir.strip()).expanduser() if output_dir and output_dir.strip() else None
        return self.queue.submit(lambda state: self.run([(f, f.name) for f in files], p, state, save=True,
                                                        output_dir=out, keep_results=show_results), label=label,
                                 owner=owner)


__all__ = ["ExtrasError", "ExtrasParams", "ExtrasResult", "ExtrasService", "RESIZE_MODES", "UpscalerError"]


def build_extras_service(args: Any, paths: Any, settings: Settings, queue: JobQueue,
                         memory: Any = None) -> ExtrasService:
    """Wiring for the app: folders from the flags, device from --use-cpu (all/esrgan) and --device-id."""
    import torch

    on_cpu = bool({"all", "esrgan"} & set(getattr(args, "use_cpu", None) or [])) or not torch.cuda.is_available()
    device = torch.device("cpu") if on_cpu else torch.device(
        f"cuda:{args.device_id}" if getattr(args, "device_id", None) not in (None, "") else "cuda")
    full = getattr(args, "no_half", False) or getattr(args, "precision", "autocast") == "full"
    dtype = torch.float32 if on_cpu or full else torch.float16
    # the memory manager places upscaler models too, when they run on its device
    shared = memory if memory is not None and memory.device == device else None
    registry = UpscalerRegistry(paths.upscaler_folders(), device=device, dtype=dtype, memory=shared)
    # face restorers: their own --use-cpu names (A1111's gfpgan / codeformer); fp32 always (neither supports fp16)
    use_cpu = set(getattr(args, "use_cpu", None) or [])
    face_device = torch.device("cpu") if "all" in use_cpu or not torch.cuda.is_available() else torch.device(
        f"cuda:{args.device_id}" if getattr(args, "device_id", None) not in (None, "") else "cuda")
    cpu_for = [n for n, flag in (("GFPGAN", "gfpgan"), ("CodeFormer", "codeformer")) if flag in use_cpu]
    face_memory = memory if memory is not None and memory.device == face_device else None
    faces = FaceRestorers(paths.face_restorer_folders(), device=face_device, cpu_for=cpu_for, memory=face_memory,
                          settings=settings)
    return ExtrasService(registry, settings, paths.outputs_dir, queue, faces=faces)
