"""Validation of a job's values, and what they resolve to (sampler, schedule, hires size).

Runs before queueing (bad input fails fast, API 4xx) and again when the job starts, because a
script may have changed `p` in between (X/Y/Z sets `p.steps`, `p.sampler_name`, ...).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from webui.engine.samplers import SCHEDULE_TYPES, UnknownSamplerError, find_schedule, resolve_sampler
from webui.processing.errors import GenerationError
from webui.processing.requests import LATENT_UPSCALE_MODES, SEED_MAX
from webui.settings import SettingsError

if TYPE_CHECKING:
    from webui.processing.context import Processing
    from webui.settings import Settings

MAX_STEPS = 500
MAX_SIDE = 4096
# an img2img/hires pass with fixed steps runs the tail of a schedule of steps / denoising_strength
# steps (A1111's setup_img2img_steps); a tiny strength would make that schedule astronomically long
MAX_SCHEDULE = 100_000
INT64 = 2**63  # option numbers must lie in -INT64 < v < INT64 (the seed arithmetic needs ENSD bounded)


class RequestValueError(GenerationError):
    """A value of the request that is out of range or does not fit the others: the API answers 422,
    the message naming the field (or option) to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def option(p: "Processing", key: str) -> Any:
    """An option as this job sees it: its snapshot once the job runs, the shared settings before."""
    if p.opts is not None:
        return p.opt(key)
    return p.pipeline.settings.get(key) if p.pipeline is not None else None


def check_option_value(settings: "Settings", key: str, value: Any, field: str | None = None) -> Any:
    """`value` coerced for option `key` as POST /options stores it; non-finite numbers (and integers
    beyond ±2**63) are refused too. Raises RequestValueError naming `field` (default: the key)."""
    field = field or key
    try:
        v = settings.coerce(key, value)
    except SettingsError as e:
        raise RequestValueError(field, f"{field}: {e}") from None
    except OverflowError:  # int(float("inf")) for an integer option
        raise RequestValueError(field, f"{field}: {value!r} is not a finite number") from None
    if isinstance(v, float) and not math.isfinite(v) or (
            isinstance(v, int) and not isinstance(v, bool) and not -INT64 < v < INT64):
        raise RequestValueError(field, f"{field}: {value!r} is not a finite number between -2**63 and 2**63")
    return v


def check_overrides(p: "Processing") -> None:
    """override_settings checked before the job is queued, as POST /options checks values (the job's
    options snapshot coerces them again when it starts)."""
    if p.opts is not None or p.pipeline is None:
        return
    for key, value in p.override_settings.items():
        if value is not None:
            check_option_value(p.pipeline.settings, str(key), value, field=f"override_settings.{key}")


def n_images(p: "Processing") -> int:
    """Images the job makes: img2img with several init images makes them one batch (A1111)."""
    batch = max(p.batch_size, len(getattr(p, "init_images", None) or [])) if p.is_img2img else p.batch_size
    return batch * p.n_iter


def check_seeds(p: "Processing") -> None:
    """Seeds in 0..2**64-1 (or -1, random): the request models refuse others; p.seed may also come from
    a pasted infotext or a script. Image i of the job is seeded seed + i, its sampler noise seed + i +
    eta_noise_seed_delta (ENSD), and torch takes seeds in -2**63..2**64-1: those must fit too."""
    ensd = option(p, "eta_noise_seed_delta") or 0
    if p.override_settings.get("eta_noise_seed_delta") is not None and p.opts is None and p.pipeline is not None:
        ensd = check_option_value(p.pipeline.settings, "eta_noise_seed_delta",
                                  p.override_settings["eta_noise_seed_delta"], "override_settings.eta_noise_seed_delta")
    try:
        ensd = int(ensd)  # the noise code reads it with int() too
    except (TypeError, ValueError, OverflowError):
        ensd = None
    if ensd is None or not -INT64 < ensd < INT64:
        raise RequestValueError("eta_noise_seed_delta", "the option eta_noise_seed_delta must be a whole number "
                                                        "between -2**63 and 2**63")
    last = n_images(p) - 1
    for field, value in (("seed", p.seed), ("subseed", p.subseed)):
        delta = ensd if field == "seed" else 0
        for v in value if isinstance(value, list) else [value]:
            if v in (-1, None, ""):
                continue  # random: 0..2**32-2
            try:
                v = int(v)
            except (TypeError, ValueError, OverflowError):
                raise RequestValueError(field, f"{field} must be a whole number, got {v!r}") from None
            if not 0 <= v <= SEED_MAX:
                raise RequestValueError(field, f"{field} must be -1 (random) or between 0 and 2**64-1, got {v}")
            if v + last + max(delta, 0) > SEED_MAX or v + min(delta, 0) < -INT64:
                raise RequestValueError(field, f"{field} {v}: the job's seeds {field} + 0..{last}"
                                               + (f" + eta_noise_seed_delta {delta}" if delta else "")
                                               + " must stay within 0..2**64-1 (torch's seed range)")
    for field, v in (("seed_resize_from_w", p.seed_resize_from_w), ("seed_resize_from_h", p.seed_resize_from_h)):
        if v is not None and v > MAX_SIDE:
            raise RequestValueError(field, f"{field} must be at most {MAX_SIDE} (0 or -1: off), got {v}")


def check_schedule_length(p: "Processing", field: str, steps: int, strength: float | None, fixed: bool) -> None:
    """A fixed-steps pass (hires; img2img with the option img2img_fix_steps) samples the tail of a
    schedule of steps / strength steps: refuse the strengths that make it absurdly long."""
    if not fixed or strength is None or strength <= 0:
        return
    total = steps / min(strength, 0.999)
    if total > MAX_SCHEDULE:
        raise RequestValueError(field, f"{field} {strength} with {steps} steps needs a schedule of {total:.0f} steps "
                                       f"(at most {MAX_SCHEDULE}); use a larger denoising_strength or fewer steps")


def pixel_limit(p: "Processing") -> int | None:
    """The option generation_max_pixels for this job: override_settings can lower it, not raise it."""
    limits = [option(p, "generation_max_pixels")]
    if p.pipeline is not None:
        limits.append(p.pipeline.settings.get("generation_max_pixels"))
    limit = min((v for v in limits if v), default=None)
    return int(limit) if limit else None


def check_pixels(p: "Processing", images: int, w: int, h: int, what: str = "the request") -> None:
    limit = pixel_limit(p)
    total = images * w * h
    if limit and total > limit:
        raise RequestValueError("generation_max_pixels",
                                f"{what} asks for {images} image{'s' if images > 1 else ''} of {w}x{h} = "
                                f"{total} pixels; the option generation_max_pixels allows {limit}")


def check_request_size(p: "Processing") -> None:
    """batch_size x n_iter x width x height (the hires size when it is larger) against the option
    generation_max_pixels, before anything runs."""
    if p.width is None or p.height is None:
        return  # the model's size: checked again when the job runs
    w, h = p.width, p.height
    if p.hr_size is not None and p.hr_size[0] * p.hr_size[1] > w * h:
        w, h = p.hr_size
    check_pixels(p, n_images(p), w, h)


def check_numbers(p: "Processing") -> None:
    for name, v in (("width", p.width), ("height", p.height)):
        if v is None:
            continue  # filled in from the loaded model when the job runs
        if v < 64 or v > MAX_SIDE:
            raise RequestValueError(name, f"{name} must be between 64 and {MAX_SIDE}, got {v}")
        if v % 8:
            raise RequestValueError(name, f"{name} must be a multiple of 8, got {v}")
    if not 1 <= p.steps <= MAX_STEPS:
        raise RequestValueError("steps", f"steps must be between 1 and {MAX_STEPS}, got {p.steps}")
    if not 1 <= p.batch_size <= 64:
        raise RequestValueError("batch_size", f"batch_size must be 1..64 (and n_iter 1..1000), got {p.batch_size}")
    if not 1 <= p.n_iter <= 1000:
        raise RequestValueError("n_iter", f"n_iter must be 1..1000 (and batch_size 1..64), got {p.n_iter}")
    if not 0 <= p.cfg_scale <= 100:
        raise RequestValueError("cfg_scale", f"cfg_scale must be between 0 and 100, got {p.cfg_scale}")
    if not 0.0 <= p.subseed_strength <= 1.0:
        raise RequestValueError("subseed_strength", f"subseed_strength must be between 0 and 1, got {p.subseed_strength}")


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
        raise RequestValueError("denoising_strength", "denoising_strength must be between 0 and 1")
    if not 0 <= p.hr_second_pass_steps <= MAX_STEPS:
        raise RequestValueError("hr_second_pass_steps", f"hr_second_pass_steps must be between 0 and {MAX_STEPS}")
    check_schedule_length(p, "denoising_strength", p.hr_second_pass_steps or p.steps, p.denoising_strength, True)
    rx, ry = p.hr_resize_x, p.hr_resize_y
    for field, v in (("hr_resize_x", rx), ("hr_resize_y", ry)):
        if v != 0 and not 64 <= v <= MAX_SIDE:
            raise RequestValueError(field, f"{field} must be 0 (use hr_scale) or between 64 and {MAX_SIDE}, got {v}")
    if rx == 0 and ry == 0 and not (p.hr_scale > 0 and p.width * p.hr_scale <= MAX_SIDE
                                    and p.height * p.hr_scale <= MAX_SIDE):
        # also catches NaN; checked before hires_target multiplies (1e308 would overflow int())
        raise RequestValueError("hr_scale", f"hr_scale must be above 0 and keep the hires size within {MAX_SIDE} "
                                            f"(at most {MAX_SIDE / max(p.width, p.height):g} for "
                                            f"{p.width}x{p.height}), got {p.hr_scale}")
    p.hr_size, p.hr_crop = hires_target(p.width, p.height, p.hr_scale, rx, ry)
    if not (64 <= min(p.hr_size) and max(p.hr_size) <= MAX_SIDE):
        field = "hr_scale" if rx == 0 and ry == 0 else ("hr_resize_x" if rx else "hr_resize_y")
        size = p.hr_size
        p.hr_size = None
        raise RequestValueError(field, f"{field} makes the hires size {size[0]}x{size[1]} from {p.width}x{p.height}; "
                                       f"each side must be between 64 and {MAX_SIDE}")


def check(p: "Processing", image_upscalers: list[str]) -> None:
    check_numbers(p)
    check_overrides(p)
    check_seeds(p)
    resolve_samplers(p)
    resolve_hires(p, image_upscalers)
    if p.is_img2img:
        strength = 0.75 if p.denoising_strength is None else p.denoising_strength
        check_schedule_length(p, "denoising_strength", p.steps, strength, bool(option(p, "img2img_fix_steps")))
    check_request_size(p)


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
