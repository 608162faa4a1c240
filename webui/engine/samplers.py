"""A1111's samplers and schedule types: names, legacy-name resolution, sigma tables, and running one.

Names, aliases, options and UI order follow A1111 v1.10 (`sd_samplers_kdiffusion`, `_timesteps`, `_lcm`,
`sd_schedulers`), so infotexts and API requests written for A1111 resolve to the same sampler/schedule.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from webui.engine import model_schedule as sched
from webui.engine import sampler_algorithms as alg
from webui.engine import sampler_timesteps as ts
from webui.engine.model_schedule import ModelSchedule
from webui.engine.noise import NoiseSource, brownian_noise_sampler

__all__ = ["SamplerInfo", "ScheduleType", "StepInfo", "SAMPLERS", "SCHEDULE_TYPES", "UnknownSamplerError",
           "find_sampler", "find_schedule", "resolve_sampler", "effective_schedule", "get_sigmas", "sample",
           "default_eta", "is_timesteps_sampler", "txt2img_noise_scale"]


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    aliases: tuple[str, ...]
    options: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ScheduleType:
    name: str
    label: str
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0  # -1: the schedule has no rho
    need_inner_model: bool = False


@dataclass
class StepInfo:
    i: int
    total: int
    x: torch.Tensor  # x after step i
    denoised: torch.Tensor  # the x0 estimate made during step i
    sigma: torch.Tensor  # the noise level step i started from


class UnknownSamplerError(ValueError):
    pass


# (name, algorithm, aliases, options) in A1111's UI order.
_TABLE: list[tuple[str, Callable, tuple[str, ...], dict]] = [
    ("DPM++ 2M", alg.sample_dpmpp_2m, ("k_dpmpp_2m",), {"scheduler": "karras"}),
    ("DPM++ SDE", alg.sample_dpmpp_sde, ("k_dpmpp_sde",), {"scheduler": "karras", "second_order": True, "brownian_noise": True}),
    ("DPM++ 2M SDE", alg.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde",), {"scheduler": "exponential", "brownian_noise": True}),
    ("DPM++ 2M SDE Heun", alg.sample_dpmpp_2m_sde, ("k_dpmpp_2m_sde_heun",), {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}),
    ("DPM++ 2S a", alg.sample_dpmpp_2s_ancestral, ("k_dpmpp_2s_a",), {"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    ("DPM++ 3M SDE", alg.sample_dpmpp_3m_sde, ("k_dpmpp_3m_sde",), {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True}),
    ("Euler a", alg.sample_euler_ancestral, ("k_euler_a", "k_euler_ancestral"), {"uses_ensd": True}),
    ("Euler", alg.sample_euler, ("k_euler",), {}),
    ("LMS", alg.sample_lms, ("k_lms",), {}),
    ("Heun", alg.sample_heun, ("k_heun",), {"second_order": True}),
    ("DPM2", alg.sample_dpm_2, ("k_dpm_2",), {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
    ("DPM2 a", alg.sample_dpm_2_ancestral, ("k_dpm_2_a",), {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    ("DPM fast", alg.sample_dpm_fast, ("k_dpm_fast",), {"uses_ensd": True}),
    ("DPM adaptive", alg.sample_dpm_adaptive, ("k_dpm_ad",), {"uses_ensd": True}),
    ("Restart", alg.sample_restart, ("restart",), {"scheduler": "karras", "second_order": True}),
    ("DDIM", ts.sample_ddim, ("ddim",), {}),
    ("PLMS", ts.sample_plms, ("plms",), {}),
    ("UniPC", ts.sample_unipc, ("unipc",), {}),
    ("LCM", alg.sample_lcm, ("k_lcm",), {}),
]
SAMPLERS: list[SamplerInfo] = [SamplerInfo(n, a, o) for n, _, a, o in _TABLE]
_ALGORITHMS: dict[str, Callable] = {n: f for n, f, _, _ in _TABLE}
_TIMESTEPS = {"DDIM", "PLMS", "UniPC"}  # A1111 runs these on its own timestep grid, whatever the schedule
# Which knobs A1111 hands to which sampler (it passes only what the k-diffusion function accepts).
_TAKES_ETA = {"Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE",
              "DPM fast", "DPM adaptive", "DDIM"}
_TAKES_CHURN = {"Euler", "Heun", "DPM2"}
_TAKES_S_NOISE = _TAKES_CHURN | {"DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
                                 "DPM++ 3M SDE", "DPM fast"}

SCHEDULE_TYPES: list[ScheduleType] = [
    ScheduleType("automatic", "Automatic"),
    ScheduleType("uniform", "Uniform", need_inner_model=True),
    ScheduleType("karras", "Karras", default_rho=7.0),
    ScheduleType("exponential", "Exponential"),
    ScheduleType("polyexponential", "Polyexponential", default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", ("SGMUniform",), need_inner_model=True),
    ScheduleType("kl_optimal", "KL Optimal"),
    ScheduleType("align_your_steps", "Align Your Steps"),
    ScheduleType("simple", "Simple", need_inner_model=True),
    ScheduleType("normal", "Normal", need_inner_model=True),
    ScheduleType("ddim", "DDIM", need_inner_model=True),
    ScheduleType("beta", "Beta", need_inner_model=True),
]
AUTOMATIC = SCHEDULE_TYPES[0]


def _lookup(items, key: str):
    k = key.strip().lower()
    for it in items:
        names = [it.name, getattr(it, "label", it.name), *it.aliases]
        if k in (n.lower() for n in names):
            return it
    return None


def find_sampler(name: str) -> SamplerInfo:
    """By name or alias, case-insensitive."""
    found = _lookup(SAMPLERS, name or "")
    if found is None:
        valid = ", ".join(s.name for s in SAMPLERS)
        raise UnknownSamplerError(f"Sampler not found: {name!r}. Valid samplers: {valid}")
    return found


def find_schedule(name: str | None) -> ScheduleType | None:
    """By name, label or alias, case-insensitive; None when unknown."""
    return _lookup(SCHEDULE_TYPES, name) if name else None


def resolve_sampler(name: str | None, scheduler: str | None, *, convert_automatic: bool = False) -> tuple[SamplerInfo, ScheduleType]:
    """A1111 get_sampler_and_scheduler: split legacy combined names ("DPM++ 2M Karras") into sampler and
    schedule type; an empty name means the first sampler, an unknown or empty schedule means Automatic.
    convert_automatic=True maps a schedule equal to the sampler's default back to Automatic (what the UI
    shows after pasting an infotext); False keeps it explicit (what a generation uses)."""
    schedule = find_schedule(scheduler) or AUTOMATIC
    name = (name or "").strip() or SAMPLERS[0].name
    sampler = _lookup(SAMPLERS, name)
    if sampler is None:
        for st in SCHEDULE_TYPES:
            for option in (st.label, st.name, *st.aliases):
                if name.lower().endswith(" " + option.lower()):
                    schedule, name = st, name[: -(len(option) + 1)]
                    break
        sampler = find_sampler(name)
    if convert_automatic and sampler.options.get("scheduler") == schedule.name:
        schedule = AUTOMATIC
    return sampler, schedule


def effective_schedule(sampler: SamplerInfo, schedule: ScheduleType) -> ScheduleType:
    """The schedule actually used (and written as "Schedule type"): Automatic -> the sampler's default."""
    if schedule.name == "automatic" and sampler.options.get("scheduler"):
        return find_schedule(sampler.options["scheduler"]) or schedule
    return schedule


def is_timesteps_sampler(sampler: SamplerInfo) -> bool:
    return sampler.name in _TIMESTEPS


def default_eta(sampler: SamplerInfo) -> float:
    """A1111 option defaults: "Eta for DDIM" 0, "Eta for k-diffusion samplers" 1."""
    return 0.0 if is_timesteps_sampler(sampler) else 1.0


def txt2img_noise_scale(sampler: SamplerInfo, sigmas: torch.Tensor) -> float:
    """Multiplier for unit noise at the start of txt2img. A1111's timestep samplers start from VP noise
    (x_vp = noise), which is noise * sqrt(1 + sigma_0**2) in sigma space; the others use sigma_0."""
    s0 = float(sigmas[0])
    return (1 + s0 ** 2) ** 0.5 if is_timesteps_sampler(sampler) else s0


def get_sigmas(sampler: SamplerInfo, schedule: ScheduleType, steps: int, ms: ModelSchedule, *,
               discard_next_to_last: bool | None = None, sigma_min: float | None = None,
               sigma_max: float | None = None, rho: float | None = None, is_sdxl: bool = False,
               beta_alpha: float = 0.6, beta_beta: float = 0.6, unipc_skip_type: str = "time_uniform") -> torch.Tensor:
    """A1111's sigmas for sampler/schedule/steps (float32, CPU, descending, normally steps+1 long ending at 0).

    discard_next_to_last True forces A1111's "Always discard next-to-last sigma" (samplers with the option
    always discard). sigma_min/sigma_max/rho are A1111's schedule overrides (None or 0 = model default).
    Exceptions kept from A1111: "DDIM" schedule type and DDIM/PLMS for steps not dividing 1000 can give a
    different number of steps; "KL Optimal" ends at sigma_min instead of 0; UniPC has steps+1 levels then 0.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError("steps must be >= 1")
    discard = bool(sampler.options.get("discard_next_to_last_sigma")) or bool(discard_next_to_last)
    n = steps + 1 if discard else steps
    if sampler.name in ("DDIM", "PLMS"):  # A1111 only adds a step here; nothing is discarded
        return ts.ddim_sigmas(n, ms)
    if sampler.name == "UniPC":
        return ts.unipc_sigmas(n, ms, unipc_skip_type)
    inner = ms.lcm if sampler.name == "LCM" else ms
    st = effective_schedule(sampler, schedule)
    m_min, m_max = float(inner.sigmas[0]), float(inner.sigmas[-1])
    smin = sigma_min if sigma_min else m_min
    smax = sigma_max if sigma_max else m_max
    r = rho if (rho and st.default_rho != -1) else st.default_rho
    name = st.name
    if name in ("automatic", "uniform"):
        sigmas = inner.get_sigmas(n)
    elif name == "karras":
        sigmas = sched.karras(n, smin, smax, r)
    elif name == "exponential":
        sigmas = sched.exponential(n, smin, smax)
    elif name == "polyexponential":
        sigmas = sched.polyexponential(n, smin, smax, r)
    elif name == "sgm_uniform":
        sigmas = sched.sgm_uniform(n, smin, smax, inner)
    elif name == "kl_optimal":
        sigmas = sched.kl_optimal(n, smin, smax)
    elif name == "align_your_steps":
        sigmas = sched.align_your_steps(n, is_sdxl)
    elif name == "simple":
        sigmas = sched.simple(n, inner)
    elif name == "normal":
        sigmas = sched.normal(n, smin, smax, inner)
    elif name == "ddim":
        sigmas = sched.ddim_uniform(n, inner)
    elif name == "beta":
        sigmas = sched.beta(n, smin, smax, beta_alpha, beta_beta)
    else:  # pragma: no cover - every SCHEDULE_TYPES entry is handled above
        raise ValueError(f"unknown schedule type {st.name!r}")
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.float().cpu()


def sample(sampler: SamplerInfo, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
           sigmas: torch.Tensor, *, ms: ModelSchedule, noise: NoiseSource,
           callback: Callable[[StepInfo], None] | None = None, eta: float | None = None, s_churn: float = 0.0,
           s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
           noise_sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
           unipc_variant: str = "bh1", unipc_order: int = 3, unipc_lower_order_final: bool = True) -> torch.Tensor:
    """Run `sampler` over `sigmas` from x (already noised to sigmas[0]); returns the final latent.

    eta None = the A1111 default for the sampler (see default_eta). Like A1111, eta/churn/s_noise reach only
    the samplers whose algorithm takes them. s_tmax <= 0 means infinity (A1111's "0 = inf").
    noise_sampler overrides the Brownian noise of the SDE samplers (A1111 img2img builds it over the full
    schedule, not the tail being run: pass brownian_noise_sampler(x, full_sigmas, seeds) to match that).
    """
    name = sampler.name
    algorithm = _ALGORITHMS.get(name)
    if algorithm is None:
        raise UnknownSamplerError(f"Sampler not found: {name!r}")
    sigmas = sigmas.to(x.device, torch.float32)

    def randn() -> torch.Tensor:
        return noise.next_like(x)

    if noise_sampler is None:
        if sampler.options.get("brownian_noise") and len(sigmas) > 1 and bool((sigmas > 0).any()):
            noise_sampler = brownian_noise_sampler(x, sigmas, noise.seeds)
        else:
            noise_sampler = lambda sigma, sigma_next: randn()  # noqa: E731 - ancestral: next draw per image
    eta_v = default_eta(sampler) if eta is None else float(eta)
    ctx = alg.Ctx(
        model=denoiser, callback=lambda *a: None, randn=randn, noise_sampler=noise_sampler,
        eta=eta_v if name in _TAKES_ETA else 1.0,
        s_churn=s_churn if name in _TAKES_CHURN else 0.0,
        s_tmin=s_tmin if name in _TAKES_CHURN else 0.0,
        s_tmax=(s_tmax if s_tmax and s_tmax > 0 else float("inf")) if name in _TAKES_CHURN else float("inf"),
        s_noise=s_noise if name in _TAKES_S_NOISE else 1.0,
        total=len(sigmas) - 1,
    )
    if callback is not None:
        ctx.callback = lambda i, xi, den, sig: callback(StepInfo(i, ctx.total, xi, den, sig))
    if len(sigmas) < 2:
        return x
    kwargs: dict = {}
    if sampler.options.get("solver_type") == "heun":
        kwargs["solver_type"] = "heun"
    if name == "UniPC":
        kwargs = {"variant": unipc_variant, "order": unipc_order, "lower_order_final": unipc_lower_order_final}
    with torch.no_grad():
        return algorithm(ctx, x, sigmas, **kwargs)
