"""Validation of a job's values, and what they resolve to (sampler, schedule, hires size).

Runs before queueing (bad input fails fast, API 4xx) and again when the job starts, because a
script may have changed `p` in between (X/Y/Z sets `p.steps`, `p.sampler_name`, ...).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from webui.engine.samplers import SCHEDULE_TYPES, UnknownSamplerError, find_schedule, resolve_sampler
from webui.processing.errors import GenerationError
from webui.processing.requests import LATENT_UPSCALE_MODES

if TYPE_CHECKING:
    from webui.processing.context import Processing

MAX_STEPS = 500
MAX_SIDE = 4096


def check_numbers(p: "Processing") -> None:
    for name, v in (("width", p.width), ("height", p.height)):
        if v is None:
            continue  # filled in from the loaded model when the job runs
        if v < 64 or v > MAX_SIDE:
            raise GenerationError(f"{name} must be between 64 and {MAX_SIDE}, got {v}")
        if v % 8:
            raise GenerationError(f"{name} must be a multiple of 8, got {v}")
    if not 1 <= p.steps <= MAX_STEPS:
        raise GenerationError(f"steps must be between 1 and {MAX_STEPS}, got {p.steps}")
    if not 1 <= p.batch_size <= 64 or not 1 <= p.n_iter <= 1000:
        raise GenerationError("batch_size must be 1..64 and n_iter 1..1000")
    if not 0 <= p.cfg_scale <= 100:
        raise GenerationError(f"cfg_scale must be between 0 and 100, got {p.cfg_scale}")
    if not 0.0 <= p.subseed_strength <= 1.0:
        raise GenerationError("subseed_strength must be between 0 and 1")


def resolve_samplers(p: "Processing") -> None:
    """p.sampler/p.schedule and the hires pass's (A1111: "Use same sampler/scheduler" or a name)."""
    for field, value in (("scheduler", p.scheduler), ("hr_scheduler", p.hr_scheduler)):
        # the resolver falls back to Automatic for pasted text; a request naming an unknown one is refused
        if value and value != "Use same scheduler" and find_schedule(str(value)) is None:
            raise GenerationError(f"{field}: unknown schedule type {value!r}; choose one of "
                                  f"{[s.label for s in SCHEDULE_TYPES]} (or their names "
                                  f"{[s.name for s in SCHEDULE_TYPES]})")
    try:
        sampler, schedule = resolve_sampler(p.sampler_name, p.scheduler)
        hr_sampler, hr_schedule = sampler, schedule
        if p.hr_sampler_name and p.hr_sampler_name != "Use same sampler":
            hr_sampler, hr_schedule = resolve_sampler(
                p.hr_sampler_name, p.hr_scheduler if p.hr_scheduler != "Use same scheduler" else None)
        elif p.hr_scheduler and p.hr_scheduler != "Use same scheduler":
            _, hr_schedule = resolve_sampler(sampler.name, p.hr_scheduler)
    except (UnknownSamplerError, ValueError, KeyError) as e:
        raise GenerationError(str(e.args[0] if e.args else e)) from None
    p.sampler, p.schedule, p.hr_sampler, p.hr_schedule = sampler, schedule, hr_sampler, hr_schedule


def resolve_hires(p: "Processing", image_upscalers: list[str]) -> None:
    """p.hr_size / p.hr_crop for txt2img's hires fix (None: no second pass)."""
    p.hr_size, p.hr_crop = None, (0, 0)
    if not p.enable_hr or p.is_img2img or p.width is None or p.height is None:
        return
    up = p.hr_upscaler or "Latent"
    if up not in LATENT_UPSCALE_MODES and up not in image_upscalers:
        raise GenerationError(f"unknown hires upscaler {up!r}; choose one of "
                              f"{list(LATENT_UPSCALE_MODES) + image_upscalers}")
    if p.denoising_strength is not None and not 0.0 <= p.denoising_strength <= 1.0:
        raise GenerationError("denoising_strength must be between 0 and 1")
    if not 0 <= p.hr_second_pass_steps <= MAX_STEPS:
        raise GenerationError(f"hr_second_pass_steps must be between 0 and {MAX_STEPS}")
    p.hr_size, p.hr_crop = hires_target(p.width, p.height, p.hr_scale, p.hr_resize_x, p.hr_resize_y)
    if max(p.hr_size) > MAX_SIDE:
        raise GenerationError(f"hires size {p.hr_size[0]}x{p.hr_size[1]} exceeds {MAX_SIDE}")


def check(p: "Processing", image_upscalers: list[str]) -> None:
    check_numbers(p)
    resolve_samplers(p)
    resolve_hires(p, image_upscalers)


def hires_target(width: int, height: int, scale: float, rx: int, ry: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(target size, latent crop) as A1111 computes hires sizes; sizes are rounded down to multiples of 8."""
    if rx == 0 and ry == 0:
        w, h = int(width * scale), int(height * scale)
        return (w - w % 8, h - h % 8), (0, 0)
    if ry == 0:
        w, h = rx, rx * height // width
    elif rx == 0:
        w, h = ry * width // height, ry
    else:
        # cover the requested box keeping the aspect ratio, then crop the overflow in latent space
        src, dst = width / height, rx / ry
        if src < dst:
            w, h = rx, rx * height // width
        else:
            w, h = ry * width // height, ry
        w, h = w - w % 8, h - h % 8
        return (rx - rx % 8, ry - ry % 8), ((w - (rx - rx % 8)) // 8, (h - (ry - ry % 8)) // 8)
    return (w - w % 8, h - h % 8), (0, 0)
