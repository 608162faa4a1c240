"""Callbacks that run at fixed points of every job (A1111's `script_callbacks`), with A1111's
parameter objects. One `Callbacks` object belongs to the app (the extension loader fills it);
scripts get the same per-step points as hooks (`on_cfg_denoiser`, ... on the Script class).

A callback that raises is logged and named in the job's warnings; the job goes on.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from PIL import Image

    from webui.processing.context import Processing

log = logging.getLogger(__name__)


@dataclass
class CFGDenoiserParams:
    """Before the model call of a sampling step; replace `x`, `sigma`, `text_cond`, `text_uncond`."""
    x: Any
    image_cond: Any
    sigma: Any
    sampling_step: int
    total_sampling_steps: int
    text_cond: Any
    text_uncond: Any
    denoiser: Any = None


@dataclass
class CFGDenoisedParams:
    """After the model call, before CFG: `x` holds every row's prediction (conds, then unconds)."""
    x: Any
    sampling_step: int
    total_sampling_steps: int
    inner_model: Any = None


@dataclass
class AfterCFGCallbackParams:
    """After CFG combined the predictions; replace `x` to change the step's result."""
    x: Any
    sampling_step: int
    total_sampling_steps: int


@dataclass
class ImageSaveParams:
    """Before an image is saved (change `image`, `filename`, `pnginfo`) and after (`filename` is the path)."""
    image: "Image.Image"
    p: "Processing | None"
    filename: str
    pnginfo: dict[str, Any]


@dataclass
class ExtraNoiseParams:
    """img2img / hires with extra noise: `noise` (replace it to change what is added), the start
    latent `x`, and `xi` = x plus the schedule's noise, before the extra noise is added."""
    noise: Any
    x: Any
    xi: Any


@dataclass
class BeforeTokenCounterParams:
    """Before the UI counts a prompt's tokens; an extension may change any field (A1111)."""
    prompt: str
    steps: int
    styles: list[str]
    is_positive: bool = True


@dataclass
class ImageGridLoopParams:
    imgs: list[Any]
    cols: int
    rows: int


KINDS = ("cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_image_saved", "image_saved", "image_grid",
         "model_loaded", "infotext_pasted", "extra_noise")


@dataclass
class Callbacks:
    """The app's registered callbacks, by kind; each entry is (name, function)."""
    entries: dict[str, list[tuple[str, Callable[..., Any]]]] = field(
        default_factory=lambda: {k: [] for k in KINDS})

    def add(self, kind: str, fn: Callable[..., Any], name: str | None = None) -> None:
        if kind not in self.entries:
            raise ValueError(f"unknown callback kind {kind!r}; known: {list(self.entries)}")
        self.entries[kind].append((name or getattr(fn, "__qualname__", repr(fn)), fn))

    def remove(self, fn: Callable[..., Any]) -> None:
        for kind, items in self.entries.items():
            self.entries[kind] = [(n, f) for n, f in items if f is not fn]

    def reorder(self, kind: str, fns_in_order: list[Callable[..., Any]]) -> None:
        """Put the listed functions of ``kind`` in this order (extensions' metadata.ini ordering);
        entries not listed keep their place after them."""
        items = self.entries.get(kind, [])
        rank = {id(fn): i for i, fn in enumerate(fns_in_order)}
        listed = sorted((e for e in items if id(e[1]) in rank), key=lambda e: rank[id(e[1])])
        self.entries[kind] = listed + [e for e in items if id(e[1]) not in rank]

    def has(self, kind: str) -> bool:
        return bool(self.entries.get(kind))

    def run(self, kind: str, params: Any, p: "Processing | None" = None) -> None:
        for name, fn in list(self.entries.get(kind, ())):
            try:
                fn(params)
            except Exception as e:  # noqa: BLE001 - a broken callback must not stop the job
                log.error("callback %s (%s) failed:\n%s", name, kind, traceback.format_exc())
                if p is not None:
                    p.warn(f"Callback {name} failed in {kind}: {type(e).__name__}: {e}")
