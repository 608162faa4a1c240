"""Upscalers as A1111 lists them: `None`, `Lanczos`, `Nearest`, then the model files found in
models/ESRGAN, models/RealESRGAN, models/SwinIR, models/DAT and models/HAT.

Model files (.pth, .pt, .safetensors) are read safely (safetensors with a validated header, pickles
with ``torch.load(weights_only=True)``; TorchScript is never run) and handed to spandrel, which
detects the architecture (ESRGAN old/new layout, Real-ESRGAN Compact, SwinIR, DAT, HAT, ...) and
builds it. Only image-to-image models of 3 channels are accepted; anything else is listed as
unusable with the reason. Names are A1111's: the file stem, and for the files A1111's downloaders
fetch into models/RealESRGAN and models/DAT the names it gives them ("R-ESRGAN 4x+", "DAT x4").

A model upscaler with scale s runs repeatedly (at most 3 times) while the picture is smaller than
the target, then a Lanczos resize hits the exact size, as A1111's ``Upscaler.upscale`` does.
"""
from __future__ import annotations

import contextlib

import sys
import threading
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from PIL import Image

from webui.hashes import file_stamp
from webui.memory.model_lru import ModelLRU
from webui.imaging.tiling import upscale_tiled
from webui.models.file_io import ModelFileError, load_pickle, load_state_dict

BUILTIN_UPSCALERS = ("None", "Lanczos", "Nearest")
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors")
FOLDER_KINDS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")
# A1111's names for the files its downloaders put into these folders (file stem → shown name)
KNOWN_NAMES: dict[str, dict[str, str]] = {
    "RealESRGAN": {"RealESRGAN_x4plus": "R-ESRGAN 4x+", "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B",
                   "RealESRGAN_x2plus": "R-ESRGAN 2x+", "realesr-general-x4v3": "R-ESRGAN General 4xV3",
                   "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
                   "realesr-animevideov3": "R-ESRGAN AnimeVideo"},
    "DAT": {"DAT_x2": "DAT x2", "DAT_x3": "DAT x3", "DAT_x4": "DAT x4"},
}
MAX_PASSES = 3          # A1111 runs a model at most three times to reach the target
MAX_OUTPUT_SIDE = 16384  # larger results are refused before any work (the 8-bit image alone is 800 MB)
SPANDREL_SPEC = "spandrel==0.4.2"

OnTile = Callable[[int, int], None]


class UpscalerError(ValueError):
    """Unknown upscaler, unusable model file, or a request that cannot be done; message for the user."""


@dataclass(frozen=True)
class UpscalerInfo:
    name: str
    kind: str                       # "builtin" or the folder kind (ESRGAN, RealESRGAN, SwinIR, DAT, HAT)
    path: Path | None = None
    scale: int | None = None        # the model's own factor, known once the file was checked
    architecture: str | None = None
    error: str | None = None        # why the file cannot be used

    @property
    def is_model(self) -> bool:
        return self.path is not None


# ---------------------------------------------------------------- spandrel import

_spandrel: Any = None
_spandrel_lock = threading.Lock()


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """The three names spandrel imports from torchvision at module level, for LaMa (inpainting) and
    RestoreFormer (face restoration), architectures this app never runs: calling them says so."""
    import enum

    def unavailable(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("this model architecture needs torchvision, which is not installed")

    tv, tr, fn = (types.ModuleType(n) for n in ("torchvision", "torchvision.transforms",
                                                 "torchvision.transforms.functional"))
    tv.__path__, tr.__path__ = [], []  # packages, so the submodule imports resolve
    fn.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")  # type: ignore[attr-defined]
    fn.rotate = fn.normalize = unavailable  # type: ignore[attr-defined]
    tv.transforms, tr.functional = tr, fn  # type: ignore[attr-defined]
    return {"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn}


def spandrel_module() -> Any:
    """Import spandrel once. Its package imports torchvision for two architectures we never use;
    when torchvision is missing or unusable (a CUDA torchvision wheel beside CPU torch fails to
    import) those names are stood in for during the import only, and nothing stays in sys.modules."""
    global _spandrel
    with _spandrel_lock:
        if _spandrel is not None:
            return _spandrel
        import importlib.util
        if importlib.util.find_spec("spandrel") is None:
            raise UpscalerError(f"model upscalers need the spandrel package: run ./webui.sh once, or "
                                f"`pip install --no-deps {SPANDREL_SPEC} einops`")
        try:
            import torchvision  # noqa: F401
            have_tv = True
        except Exception:  # noqa: BLE001 - ImportError, or a RuntimeError from a mismatched wheel
            have_tv = False
            for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
                del sys.modules[k]
        if have_tv:
            import spandrel
        else:
            stand_in = _torchvision_stand_in()
            sys.modules.update(stand_in)
            try:
                import spandrel
            finally:
                for k in stand_in:
                    sys.modules.pop(k, None)
        _spandrel = spandrel
        return spandrel


# ---------------------------------------------------------------- reading model files

def read_model_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an upscaler file, unwrapped from the usual containers (params_ema, params, ...)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        sd: Any = load_state_dict(path)
    elif suffix in (".pth", ".pt"):
        sd = load_pickle(path)  # weights_only=True: a pickle that would run code is refused
    else:
        raise ModelFileError(path, f"unsupported file type {suffix!r} (expected {', '.join(MODEL_SUFFIXES)})")
    if not isinstance(sd, dict):
        raise ModelFileError(path, f"expected a dict of tensors, found {type(sd).__name__}")
    sd = spandrel_module().canonicalize_state_dict(sd)
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(path, "file contains no tensors")
    return tensors


def load_model_file(path: Path) -> Any:
    """Path → spandrel ImageModelDescriptor on the CPU in eval mode; ModelFileError with the reason."""
    path = Path(path)
    sd = read_model_state_dict(path)
    spandrel = spandrel_module()
    try:
        desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise ModelFileError(path, "not an upscaler architecture spandrel knows (ESRGAN, Real-ESRGAN, SwinIR, "
                                   "DAT, HAT, ...): the file holds other weights") from None
    except (KeyError, ValueError, RuntimeError, AssertionError, IndexError, TypeError) as e:
        raise ModelFileError(path, f"looks like a known architecture but its weights do not fit "
                                   f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.purpose not in ("SR", "Restoration"):
        purpose = getattr(desc, "purpose", type(desc).__name__)
        raise ModelFileError(path, f"a {desc.architecture.name} model for {purpose}, not an upscaler")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise ModelFileError(path, f"a {desc.architecture.name} model for {desc.input_channels}-channel images; "
                                   "upscalers need RGB (3 channels)")
    desc.model.eval()
    return desc


# ---------------------------------------------------------------- pixels

def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """A1111's int(side * scale); the epsilon keeps 3 * (10/3) from landing on 9."""
    return int(width * scale + 1e-6), int(height * scale + 1e-6)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL → (3, H, W) float32 RGB in 0..1 (the channel order ESRGAN-family models were trained on)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def run_model(desc: Any, img: Image.Image, *, tile: int, overlap: int, on_tile: OnTile | None = None) -> Image.Image:
    """One pass of a model over the picture, tiled; the alpha channel (if any) follows by Lanczos."""
    spandrel = spandrel_module()
    x = image_to_tensor(img).to(device=desc.device, dtype=desc.dtype)
    if desc.tiling == spandrel.ModelTiling.INTERNAL:
        tile = 0
    req = desc.size_requirements
    arr = upscale_tiled(desc, x, tile=tile, overlap=overlap, multiple_of=max(1, req.multiple_of), on_tile=on_tile)
    out = Image.fromarray(arr, "RGB")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        alpha = img.convert("RGBA").getchannel("A").resize(out.size, Image.Resampling.LANCZOS)
        out.putalpha(alpha)
    return out


# ---------------------------------------------------------------- the registry

@dataclass
class ModelFileProbe:
    """What loading an untrusted model file once told: the loaded model, or why it cannot be used.
    `final` is False when the answer is not a verdict on the file (unreadable, a package missing)."""
    stamp: tuple[int, int] | None
    desc: Any = None
    error: str | None = None
    final: bool = True


def probe_model_file(path: Path, load: Callable[[Path], Any]) -> ModelFileProbe:
    """Load ``path`` with ``load`` (safe loaders only), turning every failure into a reason."""
    try:
        stamp = file_stamp(path)
    except OSError as e:
        return ModelFileProbe(None, error=f"unreadable: {e.strerror or e}", final=False)
    if stamp[1] == 0:
        return ModelFileProbe(stamp, error="file is empty (0 bytes); the download or copy probably failed")
    try:
        return ModelFileProbe(stamp, desc=load(path))
    except ModelFileError as e:
        return ModelFileProbe(stamp, error=e.reason)
    except UpscalerError as e:  # spandrel (or an extra package) missing: not a verdict on the file
        return ModelFileProbe(stamp, error=str(e), final=False)
    except Exception as e:  # noqa: BLE001 - untrusted files: any failure means unusable
        return ModelFileProbe(stamp, error=f"{type(e).__name__}: {e}")


class UpscalerRegistry:
    """The upscaler list (rescanned on demand) and a small LRU of loaded models."""

    def __init__(self, folders: Mapping[str, Path], *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, cache_size: int = 2, memory: Any = None) -> None:
        self.folders = {k: Path(v) for k, v in folders.items()}
        self.device = torch.device(device)
        # webui.memory.manager.MemoryManager on the same device: models are registered there and
        # put on the device only while they run (None: they are moved to `device` at load)
        self.memory = memory
        self.dtype = dtype
        self.cache_size = max(1, cache_size)
        self._lock = threading.RLock()
        self._entries: list[UpscalerInfo] = []
        self._checks: dict[Path, tuple[tuple[int, int], UpscalerInfo]] = {}
        self._models = ModelLRU(self.cache_size, memory, "upscaler")  # loaded models by (file, stamp)
        self.refresh()

    # ------------------------------------------------------------ listing
    def _files(self) -> list[tuple[str, str, Path]]:
        """(name, kind, path) of every model file, names unique (a clash gets the folder in brackets)."""
        out: list[tuple[str, str, Path]] = []
        seen: set[str] = set(BUILTIN_UPSCALERS)
        for kind in FOLDER_KINDS:
            folder = self.folders.get(kind)
            if folder is None or not folder.is_dir():
                continue
            for p in sorted(folder.rglob("*"), key=lambda q: str(q).lower()):
                if not p.is_file() or p.suffix.lower() not in MODEL_SUFFIXES or p.name.startswith("."):
                    continue
                name = KNOWN_NAMES.get(kind, {}).get(p.stem, p.stem)
                if name in seen:
                    name = f"{name} ({kind})"
                seen.add(name)
                out.append((name, kind, p))
        return out

    def refresh(self) -> list[UpscalerInfo]:
        """Rescan the folders (cheap: file names and stamps; results of earlier checks are kept)."""
        entries = [UpscalerInfo(n, "builtin") for n in BUILTIN_UPSCALERS]
        files = []
        for name, kind, path in self._files():
            files.append(self._known(UpscalerInfo(name, kind, path)))
        # A1111 order: the built-ins, then the models by name
        entries += sorted(files, key=lambda e: e.name.lower())
        with self._lock:
            self._entries = entries
        return list(entries)

    def _known(self, info: UpscalerInfo) -> UpscalerInfo:
        """The entry with what an earlier check of the same file version found."""
        assert info.path is not None
        try:
            stamp = file_stamp(info.path)
        except OSError as e:
            return replace(info, error=f"unreadable: {e.strerror or e}")
        hit = self._checks.get(info.path)
        if hit is not None and hit[0] == stamp:
            return replace(hit[1], name=info.name, kind=info.kind)
        return info

    def check(self, info: UpscalerInfo) -> UpscalerInfo:
        """Load the file once per version to learn whether it is usable, its architecture and scale."""
        if not info.is_model:
            return info
        assert info.path is not None
        with self._lock:
            known = self._known(info)
            if known.error or known.scale is not None:
                return known
            probe = probe_model_file(info.path, load_model_file)
            if probe.desc is not None:
                checked = replace(info, scale=int(probe.desc.scale), architecture=probe.desc.architecture.name)
                self._models.put((info.path, probe.stamp), probe.desc)
            else:
                checked = replace(info, error=probe.error)
            if probe.final:
                self._checks[info.path] = (probe.stamp, checked)
            return checked

    def list(self, *, check: bool = True, refresh: bool = True) -> list[UpscalerInfo]:
        """Every upscaler; `check` reads each model file not yet checked (once per file version),
        otherwise entries carry what earlier checks found."""
        entries = self.refresh() if refresh else list(self._entries)
        if check:
            return [self.check(e) for e in entries]
        with self._lock:
            return [self._known(e) if e.is_model else e for e in entries]

    def names(self) -> list[str]:
        """Names for the dropdowns: every entry not already known to be unusable (no file is read)."""
        return [e.name for e in self.list(check=False, refresh=False) if not e.error]

    def unusable(self) -> list[UpscalerInfo]:
        return [e for e in self.list() if e.error]

    def find(self, name: str | None) -> UpscalerInfo:
        """The entry for a name; unknown names and unusable files are an UpscalerError with the reason."""
        key = (name or "None").strip() or "None"
        for refresh in (False, True):  # a file dropped in since the last scan is found too
            entries = self.refresh() if refresh else list(self._entries)
            for e in entries:
                if e.name == key or (e.path is not None and (e.path.name == key or e.path.stem == key)):
                    e = self.check(e)
                    if e.error:
                        raise UpscalerError(f"upscaler {e.name!r} ({e.path.name if e.path else ''}) is unusable: "
                                            f"{e.error}")
                    return e
            for e in entries:  # A1111 clients sometimes send lower-case names
                if e.name.lower() == key.lower():
                    return self.find(e.name)
        names = self.names()
        raise UpscalerError(f"unknown upscaler {key!r}; choose one of {names}")

    # ------------------------------------------------------------ models
    def model(self, info: UpscalerInfo) -> Any:
        """The loaded model of an entry, from the LRU cache when the file is unchanged."""
        if info.path is None:
            raise UpscalerError(f"{info.name} is not a model upscaler")
        with self._lock:
            try:
                stamp = file_stamp(info.path)
            except OSError as e:
                raise UpscalerError(f"{info.path.name}: unreadable ({e.strerror or e})") from None
            key = (info.path, stamp)
            desc = self._models.get(key)
            if desc is None:
                try:
                    desc = load_model_file(info.path)
                except ModelFileError as e:
                    raise UpscalerError(str(e)) from None
            desc = self._place(desc)
            self._models.put((info.path, stamp), desc)
            return desc

    def _place(self, desc: Any) -> Any:
        dtype = self.dtype
        if dtype == torch.float16 and not desc.supports_half:
            dtype = torch.float32
        if self.memory is not None:
            if desc.dtype != dtype:
                desc = desc.to(dtype)  # type: ignore[call-overload]
            if self.memory.part_of(desc.model) is None:
                self.memory.register(desc.model, f"upscaler {desc.architecture.name}", "upscaler")
            return desc
        if desc.device != self.device or desc.dtype != dtype:
            desc = desc.to(self.device, dtype)  # type: ignore[call-overload]
        return desc

    @property
    def cache(self) -> ModelLRU:
        return self._models

    def clear_cache(self) -> None:
        with self._lock:
            self._models.clear()

    def _on_device(self, desc: Any, tile: int) -> contextlib.AbstractContextManager:
        if self.memory is None:
            return contextlib.nullcontext()
        from webui.memory.estimates import upscaler_activation_bytes
        act = upscaler_activation_bytes(tile or 512, int(desc.scale), dtype_size=4 if desc.dtype == torch.float32 else 2)
        return self.memory.use(self.memory.part_of(desc.model), activations=act)

    # ------------------------------------------------------------ upscaling
    def upscale(self, img: Image.Image, scale: float, name: str | None, *, tile: int = 192, overlap: int = 8,
                on_tile: OnTile | None = None) -> Image.Image:
        """A1111's Upscaler.upscale: `img` enlarged `scale` times (int(side * scale) pixels)."""
        info = self.find(name)
        dest = scaled_size(img.width, img.height, scale)
        if info.name == "None":
            return img
        if min(dest) < 1:
            raise UpscalerError(f"scale {scale} turns {img.width}x{img.height} into nothing")
        if max(dest) > MAX_OUTPUT_SIDE:
            raise UpscalerError(f"the result would be {dest[0]}x{dest[1]}; the largest side allowed is "
                                f"{MAX_OUTPUT_SIDE} px")
        if info.name == "Lanczos":
            return img.resize(dest, Image.Resampling.LANCZOS)
        if info.name == "Nearest":
            return img.resize(dest, Image.Resampling.NEAREST)
        desc = self.model(info)
        for i in range(MAX_PASSES):
            if img.width >= dest[0] and img.height >= dest[1] and (i > 0 or scale != 1):
                break
            if max(img.width, img.height) * int(desc.scale) > MAX_OUTPUT_SIDE:
                if i == 0:
                    raise UpscalerError(f"{info.name} enlarges {desc.scale}x: {img.width}x{img.height} would become "
                                        f"{img.width * desc.scale}x{img.height * desc.scale}, over the "
                                        f"{MAX_OUTPUT_SIDE} px limit; use a smaller picture or Lanczos")
                break  # one more pass would overshoot the limit: Lanczos does the rest
            before = img.size
            with self._on_device(desc, tile):
                img = run_model(desc, img, tile=tile, overlap=overlap, on_tile=on_tile)
            if img.size == before:
                break
        if img.size != dest:
            img = img.resize(dest, Image.Resampling.LANCZOS)
        return img
