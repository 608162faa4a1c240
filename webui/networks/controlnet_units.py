"""ControlNet models from `models/ControlNet`, preprocessors, and A1111-ControlNet unit requests.

Units arrive as sd-webui-controlnet's API sends them (`alwayson_scripts.controlnet.args`):
`{enabled, module, model, weight, image, resize_mode, processor_res, threshold_a, threshold_b,
guidance_start, guidance_end, control_mode, pixel_perfect}`.  Preprocessors here need no
downloaded weights: none, canny, invert, threshold (scribble), reference passthrough.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from webui.engine.controlnet import ControlUnitRuntime, control_mode_name
from webui.hashes import sha256_file
from webui.memory.bounded_cache import BoundedCache
from webui.models.controlnet_io import check_controlnet_file
from webui.models.file_checks import CheckCache

PREPROCESSORS = ("none", "canny", "invert", "threshold", "scribble_hed_free", "scribble_xdog", "lineart_standard",
                 "reference_passthrough")
# sd-webui-controlnet's long display names for the same filters
_MODULE_ALIASES = {"invert (from white bg & black line)": "invert",
                   "lineart_standard (from white bg & black line)": "lineart_standard"}
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
CN_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".bin")
CACHE_MODELS = 3  # loaded ControlNet models kept (A1111's default unit count)


class ControlNetError(ValueError):
    """A unit the user must fix (answered as HTTP 4xx)."""


def resize_mode_name(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RESIZE_MODES[int(value)]
    aliases = {"Envelope (Outer Fit)": "Resize and Fill", "Scale to Fit (Inner Fit)": "Crop and Resize",
               "Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill"}
    value = aliases.get(value, value)
    if value not in RESIZE_MODES:
        raise ControlNetError(f"resize_mode must be one of {list(RESIZE_MODES)}, got {value!r}")
    return str(value)


def preprocess(module: str, image: np.ndarray, res: int, a: float, b: float) -> np.ndarray:
    """RGB uint8 in → the control map (RGB uint8), computed at ``res`` on the short side."""
    module = (module or "none").lower()
    module = _MODULE_ALIASES.get(module, module)
    if module in ("none", "reference_passthrough"):
        return image
    h, w = image.shape[:2]
    k = res / min(h, w) if res > 0 else 1.0
    work = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA if k < 1
                      else cv2.INTER_CUBIC) if k != 1.0 else image
    if module == "canny":
        low, high = (a if a > 0 else 100), (b if b > 0 else 200)
        edges = np.zeros(work.shape[:2], np.uint8)
        for ch in range(3):  # per channel, so hue-only edges are found too
            edges |= cv2.Canny(np.ascontiguousarray(work[:, :, ch]), low, high)
        out = np.repeat(edges[:, :, None], 3, axis=2)
    elif module == "invert":
        out = 255 - work
    elif module in ("threshold", "scribble_hed_free"):
        grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY)
        t = a if a > 0 else 127
        out = np.repeat(np.where(grey > t, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)
    elif module == "scribble_xdog":
        # difference of Gaussians (sigma 0.5 vs 5): strokes where the image is darker than its
        # surroundings, thresholded (threshold A, default 32) into white lines on black
        f = work.astype(np.float32)
        dog = (cv2.GaussianBlur(f, (0, 0), 5.0) - cv2.GaussianBlur(f, (0, 0), 0.5)).max(axis=2)
        t = a if a > 0 else 32
        out = np.repeat(np.where(2 * dog > t, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)
    elif module == "lineart_standard":
        # line art from a drawing (dark lines on light paper): how much darker each pixel is than a
        # wide blur of itself, normalised by the typical line strength
        f = work.astype(np.float32)
        darker = (cv2.GaussianBlur(f, (0, 0), 6.0) - f).min(axis=2).clip(0, 255)
        strong = darker[darker > 8]
        darker = darker / max(16.0, float(np.median(strong)) if strong.size else 16.0) * 127
        out = np.repeat(darker.clip(0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    else:
        raise ControlNetError(f"unknown preprocessor {module!r}; available: {list(PREPROCESSORS)}")
    return out


def fit_to(image: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """The control map at the generation size, as the three resize modes place it."""
    h, w = image.shape[:2]
    if mode == "Just Resize":
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if mode == "Crop and Resize":
        k = max(width / w, height / h)
        big = cv2.resize(image, (max(width, round(w * k)), max(height, round(h * k))), interpolation=cv2.INTER_AREA)
        y, x = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
        return big[y:y + height, x:x + width]
    k = min(width / w, height / h)  # Resize and Fill: fit inside, pad with black
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def decode_image(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):  # from the UI's image box
        arr = value.astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else np.ascontiguousarray(arr[:, :, :3])
    if isinstance(value, dict):  # A1111-ControlNet also sends {"image": b64, "mask": b64}
        value = value.get("image")
    if not isinstance(value, str) or not value:
        raise ControlNetError("the unit has no image (base64 PNG/JPEG in `image` or `input_image`)")
    from webui.imaging.decode import ImageInputError, decode_base64_image
    try:
        return np.asarray(decode_base64_image(value, "the unit's image").convert("RGB"))
    except ImageInputError as e:
        raise ControlNetError(f"the unit's image is not a readable base64 image: {e}") from None


@dataclass
class ControlNetFile:
    name: str
    path: Path
    _hash: str | None = None

    @property
    def shorthash(self) -> str:
        """sd-webui-controlnet lists models as `name [sha256[:8]]`."""
        if self._hash is None:
            self._hash = sha256_file(self.path)[:8]
        return self._hash

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]"


class ControlNetModels:
    def __init__(self, folders: list[Path], memory: Any = None) -> None:
        self.folders = [f for f in folders if f is not None]
        self.memory = memory  # webui.memory.manager.MemoryManager: loaded models are registered there
        self.files: dict[str, ControlNetFile] = {}
        # up to three units' models stay loaded; one dropped is forgotten by the memory manager too
        self.cache: BoundedCache[Any] = BoundedCache("ControlNet", None, CACHE_MODELS, on_evict=self._release)
        self.checks = CheckCache(check_controlnet_file)
        self.refresh()

    def refresh(self) -> None:
        found: dict[str, ControlNetFile] = {}
        for folder in self.folders:
            if folder.is_dir():
                for p in sorted(folder.rglob("*")):
                    if p.is_file() and p.suffix.lower() in CN_SUFFIXES:
                        old = self.files.get(p.stem)
                        found.setdefault(p.stem, old if old and old.path == p else ControlNetFile(p.stem, p))
        self.files = found

    def usable(self) -> list[ControlNetFile]:
        return [f for f in self.files.values() if not self.checks.get(f.path).error]

    def unusable(self) -> dict[str, str]:
        """file name -> why it cannot be used (header, layout, pickle safety)."""
        return {f.path.name: err for f in self.files.values() if (err := self.checks.get(f.path).error)}

    def find(self, model: str) -> ControlNetFile:
        name = (model or "").split(" [", 1)[0].strip()
        if name in ("", "None"):
            raise ControlNetError("the unit names no ControlNet model")
        for _ in range(2):
            if name in self.files:
                f = self.files[name]
                if err := self.checks.get(f.path).error:
                    raise ControlNetError(f"ControlNet {f.path.name} is unusable: {err}")
                return f
            self.refresh()
        raise ControlNetError(f"ControlNet model not found: {model!r} (available: {sorted(self.files)})")

    def load(self, f: ControlNetFile, device: torch.device, dtype: torch.dtype) -> Any:
        from webui.models.controlnet_io import load_controlnet
        from webui.models.file_io import ModelFileError

        def read(path: Path) -> Any:
            try:
                # CPU RAM first; the memory manager puts it on the device beside the UNet when sampling
                model = load_controlnet(path, dtype=dtype, device=torch.device("cpu") if self.memory else device)
            except (ModelFileError, KeyError, ValueError, RuntimeError) as e:
                raise ControlNetError(f"ControlNet {f.name} could not be loaded: {e}") from None
            if self.memory is not None:
                self.memory.register(model, f"ControlNet {f.name}", "controlnet")
            return model

        model = self.cache.get_or_load(f.path, read)
        return model

    def _release(self, model: Any) -> None:
        if self.memory is not None and (part := self.memory.part_of(model)) is not None:
            self.memory.forget(part)


def _num(unit: dict[str, Any], key: str, default: float) -> float:
    v = unit.get(key, default)
    try:
        return float(default if v is None else v)
    except (TypeError, ValueError):
        raise ControlNetError(f"ControlNet unit field {key} must be a number, got {v!r}") from None


def check_fits(name: str, controlnet: Any, unet_config: Any) -> None:
    """A ControlNet mirrors its base UNet's encoder: context width and SDXL's added embedding must match."""
    cfg = controlnet.config
    if (cfg.cross_attention_dim != unet_config.cross_attention_dim
            or getattr(cfg, "addition_embed_type", None) != getattr(unet_config, "addition_embed_type", None)
            or tuple(cfg.block_out_channels) != tuple(unet_config.block_out_channels)):
        def arch(c: Any) -> str:
            kind = "SDXL" if getattr(c, "addition_embed_type", None) == "text_time" else "SD1/SD2"
            return f"{kind}, context width {c.cross_attention_dim}, channels {tuple(c.block_out_channels)}"
        raise ControlNetError(f"ControlNet {name} does not fit the loaded model ({arch(cfg)} vs the model's "
                              f"{arch(unet_config)}): choose a ControlNet made for this model's architecture")


def _as_hint(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def build_units(args: list[Any], models: ControlNetModels, width: int, height: int, device: torch.device,
                dtype: torch.dtype, max_units: int = 3, unet_config: Any = None,
                hr_size: tuple[int, int] | None = None,
                ) -> tuple[list[ControlUnitRuntime], list[str], list[np.ndarray]]:
    """(runtime units, infotext values, detected maps) for the enabled units of a request;
    ``unet_config``: the loaded UNet's, to refuse a ControlNet made for another architecture;
    ``hr_size``: (width, height) of a hires-fix pass, which gets the map fitted to that size."""
    units, infos, maps = [], [], []
    enabled = [u for u in args if isinstance(u, dict) and u.get("enabled", True)]
    if len(enabled) > max_units:
        raise ControlNetError(f"{len(enabled)} ControlNet units enabled; the limit is {max_units} (setting)")
    for i, u in enumerate(enabled):
        module = str(u.get("module") or "none")
        f = models.find(str(u.get("model") or ""))
        img = decode_image(u.get("image") if u.get("image") is not None else u.get("input_image"))
        resize = resize_mode_name(u.get("resize_mode", "Crop and Resize"))
        res = int(_num(u, "processor_res", 512))
        if u.get("pixel_perfect"):
            res = min(width, height)  # the map is made at the size it will be used
        a, b = _num(u, "threshold_a", -1), _num(u, "threshold_b", -1)
        control_map = preprocess(module, img, res, a, b)
        detected = fit_to(control_map, width, height, resize)
        start, end = _num(u, "guidance_start", 0.0), _num(u, "guidance_end", 1.0)
        if not 0 <= start <= end <= 1:
            raise ControlNetError("guidance_start/guidance_end must satisfy 0 <= start <= end <= 1")
        try:
            mode = control_mode_name(u.get("control_mode", "Balanced"))
        except (ValueError, IndexError) as e:
            raise ControlNetError(str(e)) from None
        weight = _num(u, "weight", 1.0)
        net = models.load(f, device, dtype)
        if unet_config is not None:
            check_fits(f.name, net, unet_config)
        hr_hint = _as_hint(fit_to(control_map, hr_size[0], hr_size[1], resize)) if hr_size else None
        units.append(ControlUnitRuntime(net, _as_hint(detected), weight, start, end, mode, hr_hint))
        maps.append(detected)
        infos.append(f"Module: {module}, Model: {f.title}, Weight: {weight:g}, Resize Mode: {resize}, "
                     f"Processor Res: {res}, Threshold A: {a:g}, Threshold B: {b:g}, Guidance Start: {start:g}, "
                     f"Guidance End: {end:g}, Pixel Perfect: {bool(u.get('pixel_perfect'))}, Control Mode: {mode}")
    return units, infos, maps
