"""Typed options persisted to config.json, applied without a restart.

One `Settings` object is owned by the app and passed to whoever needs it (no module globals).
Keys use A1111's option names so `/sdapi/v1/options` and `override_settings` from A1111 clients work.
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class OptionInfo:
    default: Any
    label: str
    section: str
    component: str = "textbox"  # textbox | number | slider | checkbox | dropdown
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    # Infotext key that carries this option (A1111 pastes these into "Override settings").
    infotext: str | None = None


OPTIONS: dict[str, OptionInfo] = {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint", "Stable Diffusion", "dropdown",
                                      infotext="Model hash"),
    "sd_vae": OptionInfo("Automatic", "SD VAE (Automatic: <checkpoint>.vae.* if present; None: the checkpoint's "
                                      "own; or a file from models/VAE)", "Stable Diffusion", "dropdown",
                         infotext="VAE"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time (kept in RAM; "
                                          "switching back to one is instant)", "Stable Diffusion", "slider",
                                       minimum=1, maximum=10, step=1),
    "gpu_weights_mb": OptionInfo(0, "GPU weights (MB): most model weight memory kept on the GPU; the rest is "
                                    "streamed from RAM (0 = decided from free VRAM)", "Memory", "number",
                                 minimum=0, maximum=1048576, step=64),
    "control_net_unit_count": OptionInfo(3, "Multi-ControlNet: ControlNet unit number", "ControlNet", "slider",
                                         minimum=1, maximum=10, step=1),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", "Stable Diffusion", "slider",
                                           minimum=1, maximum=12, step=1, infotext="Clip skip"),
    "emphasis": OptionInfo("Original", "Emphasis mode: how (word:1.2) weights change the conditioning",
                           "Stable Diffusion", "dropdown", choices=("Original", "No norm", "Ignore", "None"),
                           infotext="Emphasis"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit (tokens moved to the next 75-token "
                                              "chunk after the last comma)", "Stable Diffusion", "slider",
                                          minimum=0, maximum=74, step=1),
    "use_old_scheduling": OptionInfo(False, "Use old prompt editing timelines", "Compatibility", "checkbox",
                                     infotext="Old prompt editing timelines"),
    "eta_ancestral": OptionInfo(1.0, "Eta for ancestral samplers (noise multiplier)", "Sampler parameters",
                                "slider", minimum=0.0, maximum=1.0, step=0.01),
    "eta_noise_seed_delta": OptionInfo(0, "Eta noise seed delta (ENSD)", "Sampler parameters", "number",
                                       infotext="ENSD"),
    "always_discard_next_to_last_sigma": OptionInfo(False, "Always discard next-to-last sigma",
                                                    "Sampler parameters", "checkbox"),
    "samples_save": OptionInfo(True, "Always save all generated images", "Saving images", "checkbox"),
    "grid_save": OptionInfo(True, "Always save all generated image grids", "Saving images", "checkbox"),
    "samples_format": OptionInfo("png", "File format for images", "Saving images", "dropdown",
                                 choices=("png", "jpg", "webp")),
    "return_grid": OptionInfo(True, "Show grid in gallery (and first in the API's images)", "Saving images",
                              "checkbox"),
    "enable_pnginfo": OptionInfo(True, "Save text information about generation parameters as chunks to png files",
                                 "Saving images", "checkbox"),
    "outdir_txt2img_samples": OptionInfo("", "Output directory for txt2img images (empty = outputs/txt2img-images)",
                                         "Paths for saving"),
    "outdir_txt2img_grids": OptionInfo("", "Output directory for txt2img grids (empty = outputs/txt2img-grids)",
                                       "Paths for saving"),
    "outdir_img2img_samples": OptionInfo("", "Output directory for img2img images (empty = outputs/img2img-images)",
                                         "Paths for saving"),
    "outdir_img2img_grids": OptionInfo("", "Output directory for img2img grids (empty = outputs/img2img-grids)",
                                       "Paths for saving"),
    "outdir_extras_samples": OptionInfo("", "Output directory for images from extras (empty = outputs/extras-images)",
                                        "Paths for saving"),
    "ESRGAN_tile": OptionInfo(192, "Tile size for model upscalers (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT); 0 = no tiling",
                              "Upscaling", "slider", minimum=0, maximum=512, step=16),
    "ESRGAN_tile_overlap": OptionInfo(8, "Tile overlap for model upscalers, in pixels (low values = visible seams)",
                                      "Upscaling", "slider", minimum=0, maximum=48, step=1),
    "initial_noise_multiplier": OptionInfo(1.0, "Noise multiplier for img2img", "img2img", "slider",
                                           minimum=0.0, maximum=1.5, step=0.001, infotext="Noise multiplier"),
    "inpainting_mask_weight": OptionInfo(1.0, "Inpainting conditioning mask strength (9-channel inpainting models)",
                                         "img2img", "slider", minimum=0.0, maximum=1.0, step=0.01,
                                         infotext="Conditional mask weight"),
    "img2img_background_color": OptionInfo("#ffffff", "With img2img, fill transparent parts of the input image "
                                                      "with this colour", "img2img"),
    "img2img_fix_steps": OptionInfo(False, "With img2img, do exactly the amount of steps the slider specifies "
                                           "(normally you'd do less with less denoising)", "img2img", "checkbox"),
    "img2img_sketch_default_brush_color": OptionInfo("#ffffff", "Sketch initial brush color", "img2img"),
    "img2img_inpaint_mask_brush_color": OptionInfo("#ffffff", "Inpaint mask brush color", "img2img"),
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image", "Live previews", "checkbox"),
    "show_progress_every_n_steps": OptionInfo(5, "Live preview display period (in sampling steps, -1 = only at end)",
                                              "Live previews", "slider", minimum=-1, maximum=32, step=1),
    "interrupt_after_current": OptionInfo(True, "Don't interrupt in the middle of an image when generating several",
                                          "User interface", "checkbox"),
    "samplers_in_dropdown": OptionInfo(True, "Use dropdown for sampler selection", "User interface", "checkbox"),
}


class SettingsError(ValueError):
    pass


@dataclass
class Settings:
    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _listeners: dict[str, list[Callable[[Any], None]]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path) -> "Settings":
        values: dict[str, Any] = {}
        if path.exists():
            try:
                values = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                # A broken config must not stop the app; keep the file for the user to inspect.
                print(f"config.json unreadable ({e}); using defaults")
                values = {}
        return cls(path=path, values=values if isinstance(values, dict) else {})

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self.values:
                return self.values[key]
            info = OPTIONS.get(key)
            return info.default if info else None

    def all(self) -> dict[str, Any]:
        with self._lock:
            out = {k: info.default for k, info in OPTIONS.items()}
            out.update(self.values)
            return out

    def coerce(self, key: str, value: Any) -> Any:
        info = OPTIONS.get(key)
        if info is None:
            return value  # unknown keys are kept (extensions add their own), as A1111 does
        d = info.default
        try:
            if isinstance(d, bool):
                if isinstance(value, str):
                    return value.strip().lower() in ("1", "true", "yes", "on")
                return bool(value)
            if isinstance(d, int) and not isinstance(d, bool):
                v = int(float(value))
            elif isinstance(d, float):
                v = float(value)
            else:
                v = value
        except (TypeError, ValueError):
            raise SettingsError(f"option {key}: {value!r} is not a valid {type(d).__name__}") from None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if info.minimum is not None and v < info.minimum or info.maximum is not None and v > info.maximum:
                raise SettingsError(f"option {key}: {v} is outside {info.minimum}..{info.maximum}")
        if info.choices and v not in info.choices:
            raise SettingsError(f"option {key}: {v!r} is not one of {list(info.choices)}")
        return v

    def on_change(self, key: str, fn: Callable[[Any], None]) -> None:
        self._listeners.setdefault(key, []).append(fn)

    def set(self, key: str, value: Any, *, save: bool = True, notify: bool = True) -> None:
        self.update({key: value}, save=save, notify=notify)

    def update(self, changes: dict[str, Any], *, save: bool = True, notify: bool = True) -> None:
        """Validate everything first so a bad value changes nothing; listeners run before
        the value is stored, so a failing model switch leaves the old setting in place."""
        coerced = {k: self.coerce(k, v) for k, v in changes.items()}
        with self._lock:
            for k, v in coerced.items():
                if notify and self.get(k) != v:
                    for fn in self._listeners.get(k, []):
                        fn(v)
                self.values[k] = v
            if save:
                self.save()

    def save(self) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.values, f, indent=4, ensure_ascii=False)
            os.replace(tmp, self.path)
