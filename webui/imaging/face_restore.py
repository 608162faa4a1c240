"""Face restoration as A1111 offers it ("Restore faces"; Extras' GFPGAN and CodeFormer), offline.

Restorers, in A1111's order and names: ``CodeFormer`` (files in models/Codeformer,
``--codeformer-models-path``) and ``GFPGAN`` (models/GFPGAN, ``--gfpgan-models-path``). Their model
files are read with the upscalers' safe loaders (validated safetensors, weights-only pickles) and
built by spandrel: GFPGAN v1.3/v1.4 ("clean" architecture) by spandrel itself, CodeFormer by
spandrel_extra_arches (installed by webui.sh beside spandrel, also without dependencies). A file that
cannot be used is listed with the reason. Nothing is downloaded: with no model file the picture comes
back unchanged with a warning that names the folder to fill.

Faces are found without downloaded weights. A1111 uses facexlib's RetinaFace (weights fetched at
first use) and aligns each face on 5 landmarks; here OpenCV's frontal-face Haar cascade
(``haarcascade_frontalface_default.xml``, bundled gzipped beside this module with its Intel licence,
because OpenCV 5 no longer ships the cascades nor ``CascadeClassifier``) is evaluated in numpy exactly
as OpenCV 4's ``detectMultiScale`` does (scale factor 1.1, 3 neighbours). Haar finds upright,
frontal faces only and gives no landmarks, so a face is not rotated: its box is widened to a square
(``CROP_SCALE`` times the box, roughly the framing of the FFHQ crops the models were trained on),
resized to 512x512, restored, resized back and pasted with a feathered elliptical mask, so pixels
outside that square never change.

CodeFormer's fidelity weight (A1111's ``code_former_weight`` option, 0 = strongest effect,
1 = closest to the input) is passed to models whose ``forward`` takes ``weight``. GFPGAN runs with
the noise stored in its file (``randomize_noise=False``) so the same input always gives the same
result (A1111 draws fresh noise on each call).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from webui.hashes import file_stamp
from webui.memory.model_lru import ModelLRU
from webui.imaging.face_detect import Box, detect_faces
from webui.imaging.upscalers import (MODEL_SUFFIXES, UpscalerError, probe_model_file, read_model_state_dict,
                                     spandrel_module)
from webui.models.file_io import ModelFileError

log = logging.getLogger(__name__)

FACE_RESTORERS = ("CodeFormer", "GFPGAN")          # A1111's shared.face_restorers, in its order
FOLDER_NAMES = {"CodeFormer": "Codeformer", "GFPGAN": "GFPGAN"}  # A1111's folders under models/
# the files A1111's downloaders put there (used first when several files are present)
KNOWN_FILES = {"CodeFormer": ("codeformer-v0.1.0.pth", "codeformer.pth"),
               "GFPGAN": ("GFPGANv1.4.pth", "GFPGANv1.3.pth")}
DOWNLOAD_URLS = {"CodeFormer": "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
                 "GFPGAN": "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"}
DEFAULT_MODEL = "CodeFormer"        # A1111's face_restoration_model default
DEFAULT_CODEFORMER_WEIGHT = 0.5     # A1111's code_former_weight default
FACE_SIZE = 512                     # the models' input and output side
CROP_SCALE = 1.75                   # crop side / Haar box side
SPANDREL_EXTRA_ARCHES_SPEC = "spandrel_extra_arches==0.2.0"



class FaceRestoreError(ValueError):
    """A face-restoration request that cannot be done; the message is for the user."""


# ---------------------------------------------------------------- crop, restore, paste

def face_crop_box(box: Sequence[int]) -> tuple[int, int, int]:
    """(left, top, side) of the square that a face box is restored in; it may reach past the picture."""
    x, y, w, h = (float(v) for v in box[:4])
    side = max(8, int(round(max(w, h) * CROP_SCALE)))
    return int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2)), side


def feather_mask(side: int) -> np.ndarray:
    """(side, side) float32 weights: an ellipse filling the square, blurred at its edge, exactly 0 on
    the square's border (so nothing outside the crop square changes)."""
    f = max(1, side // 16)
    m = np.zeros((side, side), np.float32)
    half = side / 2
    axes = (max(1, int(half - f - 1)), max(1, int(half - f - 1)))
    cv2.ellipse(m, (int(half), int(half)), axes, 0, 0, 360, 1.0, -1)
    m = cv2.GaussianBlur(m, (2 * f + 1, 2 * f + 1), max(0.5, f / 2))
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 0.0
    return m


def _crop_square(arr: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The square of the picture, its parts outside the picture filled by replicating the edge."""
    h, w = arr.shape[:2]
    x0, y0, x1, y1 = max(0, left), max(0, top), min(w, left + side), min(h, top + side)
    part = arr[y0:y1, x0:x1]
    pad = ((y0 - top, top + side - y1), (x0 - left, left + side - x1), (0, 0))
    return np.pad(part, pad, mode="edge") if any(p for pair in pad for p in pair) else part.copy()


def paste_restored_faces(arr: np.ndarray, boxes: Iterable[Sequence[int]],
                         restore_crop: Callable[[np.ndarray], np.ndarray], size: int = FACE_SIZE) -> np.ndarray:
    """Each face: its square crop resized to ``size``, ``restore_crop`` (uint8 RGB in and out, same
    size), resized back and blended in with ``feather_mask``. Crops come from the original picture."""
    src = np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
    h, w = src.shape[:2]
    out = src.astype(np.float32)
    for box in boxes:
        left, top, side = face_crop_box(box)
        x0, y0, x1, y1 = max(0, left), max(0, top), min(w, left + side), min(h, top + side)
        if x1 <= x0 or y1 <= y0:
            continue
        crop = _crop_square(src, left, top, side)
        face = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
        restored = np.asarray(restore_crop(face), dtype=np.uint8)
        if restored.shape != (size, size, 3):
            raise FaceRestoreError(f"the face model returned {restored.shape}, expected {(size, size, 3)}")
        back = cv2.resize(restored, (side, side), interpolation=cv2.INTER_AREA if side < size else cv2.INTER_LINEAR)
        m = feather_mask(side)[y0 - top:y1 - top, x0 - left:x1 - left, None]
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = region * (1.0 - m) + back[y0 - top:y1 - top, x0 - left:x1 - left].astype(np.float32) * m
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- model files

@dataclass(frozen=True)
class FaceModelInfo:
    name: str                       # file stem
    restorer: str                   # "CodeFormer" or "GFPGAN": the folder it was found in
    path: Path
    architecture: str | None = None
    error: str | None = None        # why the file cannot be used


_arch_registry: Any = None
_arch_note: str | None = None
_arch_lock = threading.Lock()


def face_arch_registry() -> tuple[Any, str | None]:
    """(spandrel registry with spandrel's own architectures plus spandrel_extra_arches', a note when
    the extra architectures, hence CodeFormer, are unavailable). The global MAIN_REGISTRY is untouched."""
    global _arch_registry, _arch_note
    with _arch_lock:
        if _arch_registry is None:
            spandrel = spandrel_module()
            reg = spandrel.MAIN_REGISTRY.copy()
            try:
                import spandrel_extra_arches
                reg.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
            except Exception as e:  # noqa: BLE001 - missing, or built for another spandrel
                _arch_note = (f"CodeFormer needs the spandrel_extra_arches package ({type(e).__name__}: {e}); "
                              f"run ./webui.sh once, or `pip install --no-deps {SPANDREL_EXTRA_ARCHES_SPEC}`")
            _arch_registry = reg
        return _arch_registry, _arch_note


def load_face_model_file(path: Path, restorer: str) -> Any:
    """Path → spandrel ImageModelDescriptor (CPU, eval) of the expected restorer; ModelFileError with
    the reason otherwise."""
    path = Path(path)
    sd = read_model_state_dict(path)
    spandrel = spandrel_module()
    registry, note = face_arch_registry()
    try:
        desc = spandrel.ModelLoader(device="cpu", registry=registry).load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        if restorer == "CodeFormer" and note:
            raise UpscalerError(note) from None
        raise ModelFileError(path, f"not a {restorer} model: spandrel does not recognise the weights") from None
    except (KeyError, ValueError, RuntimeError, AssertionError, IndexError, TypeError) as e:
        raise ModelFileError(path, f"looks like a known architecture but its weights do not fit "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    arch = desc.architecture.name
    if arch != restorer:
        where = f"; put it in models/{FOLDER_NAMES[arch]}" if arch in FOLDER_NAMES else ""
        purpose = getattr(desc, "purpose", "")
        raise ModelFileError(path, f"a {arch} model{f' for {purpose}' if purpose else ''}, not a {restorer} "
                                   f"face restorer{where}")
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.input_channels != 3 or desc.output_channels != 3:
        raise ModelFileError(path, f"a {arch} model for {getattr(desc, 'input_channels', '?')}-channel images; "
                                   "face restorers need RGB (3 channels)")
    desc.model.eval()
    return desc


def _call_kwargs(model: torch.nn.Module, weight: float | None) -> dict[str, Any]:
    params = inspect.signature(model.forward).parameters
    kw: dict[str, Any] = {}
    if weight is not None and "weight" in params:
        kw["weight"] = float(weight)         # CodeFormer's fidelity
    if "randomize_noise" in params:
        kw["randomize_noise"] = False        # GFPGAN: the noise stored in the file, reproducible
    if "return_rgb" in params:
        kw["return_rgb"] = False             # GFPGAN: skip the intermediate pictures (as A1111's GFPGANer)
    return kw


def run_face_model(desc: Any, face: np.ndarray, weight: float | None = None) -> np.ndarray:
    """One 512x512 RGB uint8 face through the model ([-1, 1] in and out, as A1111 normalises)."""
    model = desc.model
    x = torch.from_numpy(np.array(face, dtype=np.uint8)).permute(2, 0, 1)[None].to(torch.float32)
    x = (x / 127.5 - 1.0).to(device=desc.device, dtype=desc.dtype)
    with torch.inference_mode():
        y = model(x, **_call_kwargs(model, weight))
    if isinstance(y, (tuple, list)):
        y = y[0]
    y = (y[0].float().clamp(-1, 1) + 1.0) * 127.5
    return y.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# ---------------------------------------------------------------- the registry

class FaceRestorers:
    """CodeFormer and GFPGAN: their model files (rescanned on demand, each checked once per file
    version), the loaded models (a small LRU) and ``restore``."""

    def __init__(self, folders: Mapping[str, Path] | None = None, *, device: str | torch.device = "cpu",
                 cpu_for: Iterable[str] = (), memory: Any = None, settings: Any = None, cache_size: int = 2) -> None:
        given = dict(folders or {})
        self.folders = {k: Path(given.get(k, Path("models") / FOLDER_NAMES[k])) for k in FACE_RESTORERS}
        self.device = torch.device(device)
        self.cpu_for = {n for n in cpu_for if n in FACE_RESTORERS}   # --use-cpu gfpgan / codeformer
        self.memory = memory          # webui.memory.manager.MemoryManager on `device`, or None
        self.settings = settings      # face_restoration_model / code_former_weight come from here
        self.cache_size = max(1, cache_size)
        self._lock = threading.RLock()
        self._checks: dict[Path, tuple[tuple[int, int], FaceModelInfo]] = {}
        self._models = ModelLRU(self.cache_size, memory, "face restorer")  # loaded models by (file, stamp)

    # ------------------------------------------------------------ listing
    def names(self) -> list[str]:
        """A1111's face restorer names (always both, as A1111 lists them with or without a file)."""
        return list(FACE_RESTORERS)

    def canonical_name(self, name: str | None) -> str | None:
        key = (name or "").strip().lower()
        return next((n for n in FACE_RESTORERS if n.lower() == key), None)

    def _scan(self, restorer: str) -> list[FaceModelInfo]:
        folder = self.folders[restorer]
        if not folder.is_dir():
            return []
        files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES
                 and not p.name.startswith(".")]
        known = {n.lower(): i for i, n in enumerate(KNOWN_FILES[restorer])}
        files.sort(key=lambda p: (known.get(p.name.lower(), len(known)), str(p).lower()))
        return [FaceModelInfo(p.stem, restorer, p) for p in files]

    def _known(self, info: FaceModelInfo) -> FaceModelInfo:
        try:
            stamp = file_stamp(info.path)
        except OSError as e:
            return replace(info, error=f"unreadable: {e.strerror or e}")
        hit = self._checks.get(info.path)
        return hit[1] if hit is not None and hit[0] == stamp else info

    def check(self, info: FaceModelInfo) -> FaceModelInfo:
        """Load a file once per version to learn whether it is usable (kept loaded when it is)."""
        with self._lock:
            known = self._known(info)
            if known.error or known.architecture:
                return known
            probe = probe_model_file(info.path, lambda path: load_face_model_file(path, info.restorer))
            if probe.desc is not None:
                checked = replace(info, architecture=probe.desc.architecture.name)
                self._models.put((info.path, probe.stamp), probe.desc)
            else:
                checked = replace(info, error=probe.error)
            if probe.final:
                self._checks[info.path] = (probe.stamp, checked)
            return checked

    def files(self, restorer: str | None = None, *, check: bool = True) -> list[FaceModelInfo]:
        """Every model file of one restorer (or both), in the order they are tried; `check` reads
        the files not checked yet, otherwise entries carry what earlier checks found."""
        out = []
        for r in ([restorer] if restorer else FACE_RESTORERS):
            for info in self._scan(r):
                out.append(self.check(info) if check else self._known(info))
        return out

    def unusable(self) -> list[FaceModelInfo]:
        return [e for e in self.files() if e.error]

    def model_file(self, restorer: str) -> FaceModelInfo | None:
        """The file a restorer uses: A1111's download name first, then by name; the first usable one."""
        for info in self.files(restorer):
            if not info.error:
                return info
        return None

    def missing_reason(self, restorer: str) -> str:
        folder = self.folders[restorer]
        bad = [e for e in self.files(restorer) if e.error]
        if bad:
            return (f"{restorer}: no usable model file in {folder} ("
                    + "; ".join(f"{e.path.name}: {e.error}" for e in bad) + ")")
        return (f"{restorer}: no model file in {folder}; put {KNOWN_FILES[restorer][0]} there "
                f"(A1111 downloads it from {DOWNLOAD_URLS[restorer]}; this web UI downloads nothing)")

    def listing(self) -> list[dict[str, Any]]:
        """GET /sdapi/v1/face-restorers: A1111's {name, cmd_dir} plus the file used (or why none)."""
        out = []
        for r in FACE_RESTORERS:
            info = self.model_file(r)
            item: dict[str, Any] = {"name": r, "cmd_dir": str(self.folders[r]),
                                    "model_path": str(info.path) if info else None}
            if info is None:
                item["error"] = self.missing_reason(r)
            out.append(item)
        return out

    # ------------------------------------------------------------ models
    @property
    def cache(self) -> ModelLRU:
        return self._models

    def clear_cache(self) -> None:
        with self._lock:
            self._models.clear()

    def _managed(self, restorer: str) -> bool:
        return self.memory is not None and restorer not in self.cpu_for

    def model(self, info: FaceModelInfo) -> Any:
        """The loaded model of a file, from the cache while the file is unchanged, placed for use."""
        with self._lock:
            try:
                stamp = file_stamp(info.path)
            except OSError as e:
                raise FaceRestoreError(f"{info.path.name}: unreadable ({e.strerror or e})") from None
            desc = self._models.get((info.path, stamp))
            if desc is None:
                try:
                    desc = load_face_model_file(info.path, info.restorer)
                except (ModelFileError, UpscalerError) as e:
                    raise FaceRestoreError(str(e)) from None
            if self._managed(info.restorer):
                if self.memory.part_of(desc.model) is None:
                    self.memory.register(desc.model, f"face restorer {info.restorer}", "upscaler")
            else:
                device = torch.device("cpu") if info.restorer in self.cpu_for else self.device
                if desc.device != device:
                    desc = desc.to(device)
            self._models.put((info.path, stamp), desc)
            return desc

    def _on_device(self, desc: Any, restorer: str) -> contextlib.AbstractContextManager:
        if not self._managed(restorer):
            return contextlib.nullcontext()
        from webui.memory.estimates import upscaler_activation_bytes
        return self.memory.use(self.memory.part_of(desc.model),
                               activations=upscaler_activation_bytes(FACE_SIZE, 1, dtype_size=4))

    # ------------------------------------------------------------ restoring
    def restore_faces(self, img: Image.Image, model_name: str | None, codeformer_weight: float | None, *,
                      faces: Sequence[Sequence[int]] | None = None) -> tuple[Image.Image, str | None]:
        """(picture with its faces restored by ``model_name``, None) or (the picture unchanged, a
        warning) when the restorer has no usable model file or is unknown. ``faces``: boxes
        (x, y, w, h) to restore instead of the detected ones. A picture without faces is returned
        as it is, without a warning. ``codeformer_weight`` is used by CodeFormer only."""
        restorer = self.canonical_name(model_name)
        if restorer is None:
            if (model_name or "None").strip() in ("", "None"):
                return img, None
            return img, f"unknown face restorer {model_name!r}; choose one of {', '.join(FACE_RESTORERS)}"
        try:
            info = self.model_file(restorer)
            if info is None:
                return img, self.missing_reason(restorer)
            desc = self.model(info)
        except (FaceRestoreError, UpscalerError) as e:
            return img, f"{restorer}: {e}"
        rgb = np.asarray(img.convert("RGB"))
        boxes = detect_faces(rgb) if faces is None else [tuple(int(v) for v in b[:4]) for b in faces]
        if not boxes:
            log.debug("%s: no face found in a %dx%d picture", restorer, img.width, img.height)
            return img, None
        weight = None
        if restorer == "CodeFormer":
            weight = DEFAULT_CODEFORMER_WEIGHT if codeformer_weight is None else float(codeformer_weight)
            weight = min(1.0, max(0.0, weight))
        with self._on_device(desc, restorer):
            out = paste_restored_faces(rgb, boxes, lambda face: run_face_model(desc, face, weight))
        result = Image.fromarray(out, "RGB")
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            result.putalpha(img.convert("RGBA").getchannel("A"))
        return result, None

    def restore(self, img: Image.Image, name: str | None = None, codeformer_weight: float | None = None, *,
                faces: Sequence[Sequence[int]] | None = None) -> tuple[Image.Image, str | None]:
        """``restore_faces`` with A1111's options as defaults: ``face_restoration_model`` for the
        restorer, ``code_former_weight`` for CodeFormer's weight (the generation pipeline's entry)."""
        if name is None:
            name = self._option("face_restoration_model", DEFAULT_MODEL)
        if codeformer_weight is None:
            codeformer_weight = float(self._option("code_former_weight", DEFAULT_CODEFORMER_WEIGHT))
        return self.restore_faces(img, name, codeformer_weight, faces=faces)

    def _option(self, key: str, default: Any) -> Any:
        if self.settings is None:
            return default
        try:
            value = self.settings.get(key)
        except Exception:  # noqa: BLE001 - an options object without the key
            return default
        return default if value is None else value


def restore_faces(img: Image.Image, model_name: str | None, codeformer_weight: float | None, *,
                  registry: FaceRestorers, faces: Sequence[Sequence[int]] | None = None
                  ) -> tuple[Image.Image, str | None]:
    """Module-level form of ``FaceRestorers.restore_faces``."""
    return registry.restore_faces(img, model_name, codeformer_weight, faces=faces)


__all__ = ["FACE_RESTORERS", "FOLDER_NAMES", "CROP_SCALE", "FACE_SIZE", "Box", "FaceModelInfo", "FaceRestoreError",
           "FaceRestorers", "SPANDREL_EXTRA_ARCHES_SPEC", "detect_faces", "face_crop_box",
           "feather_mask", "load_face_model_file", "paste_restored_faces", "restore_faces",
           "run_face_model"]
