"""The denoising loop: one sampling pass from noise (or a noised latent) to a latent.

txt2img, the hires. fix second pass and img2img/inpainting all come through `run_pass`, so the
per-step work — progress, live preview, interrupt/skip, hooks — lives in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from webui.engine.denoiser import CFGDenoiser, ConditioningSource
from webui.engine.model_schedule import ModelSchedule
from webui.engine.noise import NoiseSource
from webui.engine.noise import brownian_noise_sampler
from webui.engine.samplers import SamplerInfo, ScheduleType, get_sigmas, sample, txt2img_noise_scale


class StopSampling(Exception):
    """Raised by a step callback to end the pass early; the loop returns the last denoised latent."""


@dataclass
class PassConfig:
    sampler: SamplerInfo
    schedule: ScheduleType
    steps: int
    cfg_scale: float
    width: int
    height: int
    eta: float | None = None  # None = the sampler's A1111 default (1 for k-diffusion, 0 for DDIM)
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    discard_next_to_last_sigma: bool | None = None
    # A1111's sigma_min / sigma_max / rho options (0 = the model's or the schedule's own) and the Beta
    # schedule's beta_dist_alpha / beta_dist_beta
    sigma_min: float = 0.0
    sigma_max: float = 0.0
    rho: float = 0.0
    beta_alpha: float = 0.6
    beta_beta: float = 0.6
    # img2img / hires: the latent to start from and how much of the schedule to run.
    init_latent: torch.Tensor | None = None
    denoising_strength: float = 1.0
    fixed_steps: bool = False  # hires: run exactly `steps` steps (A1111 with steps given)
    noise_multiplier: float = 1.0  # img2img: A1111's initial_noise_multiplier on the added noise
    # img2img / hires: A1111's img2img_extra_noise — noise × this added on top of the start latent;
    # the hook (noise, x, xi) -> noise lets extensions change it (on_extra_noise)
    extra_noise: float = 0.0
    extra_noise_hook: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


@dataclass
class StepReport:
    step: int
    total: int
    x: torch.Tensor
    denoised: torch.Tensor


@dataclass
class PassResult:
    latents: torch.Tensor
    stopped_early: bool = False
    sigmas: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def img2img_sigmas(full: Callable[[int], torch.Tensor], steps: int, strength: float, fixed_steps: bool) -> torch.Tensor:
    """A1111's setup_img2img_steps: which tail of which schedule an img2img/hires pass runs."""
    strength = min(strength, 0.999)
    if fixed_steps:
        total = int(steps / strength) if strength > 0 else 0
        t_enc = steps - 1
    else:
        total = steps
        t_enc = int(strength * steps)
    sigmas = full(total)
    return sigmas[total - t_enc - 1:]


def run_pass(unet: Any, family: str, prediction_type: str, schedule: ModelSchedule, cfg: PassConfig,
             conds: ConditioningSource, noise: NoiseSource,
             on_step: Callable[[StepReport], None] | None = None,
             image_conditioning: torch.Tensor | None = None,
             denoiser_setup: Callable[[CFGDenoiser], None] | None = None,
             before_sampling: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
             ) -> PassResult:
    """One pass; ``before_sampling(x, noise)`` sees the starting latent and the noise it holds
    (A1111's process_before_every_sampling) and may return a replacement for x."""
    def full(n: int) -> torch.Tensor:
        return get_sigmas(cfg.sampler, cfg.schedule, n, schedule, discard_next_to_last=cfg.discard_next_to_last_sigma,
                          sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho,
                          beta_alpha=cfg.beta_alpha, beta_beta=cfg.beta_beta)

    noise_sampler = None
    if cfg.init_latent is None:
        sigmas = full(cfg.steps)
        x = noise.first() * txt2img_noise_scale(cfg.sampler, sigmas)
    else:
        sigmas = img2img_sigmas(full, cfg.steps, cfg.denoising_strength, cfg.fixed_steps)
        x = cfg.init_latent + noise.first() * (sigmas[0] * cfg.noise_multiplier)
        if cfg.extra_noise > 0:
            extra = noise.first() * cfg.noise_multiplier
            if cfg.extra_noise_hook is not None:
                extra = cfg.extra_noise_hook(extra, cfg.init_latent, x)
            x = x + extra.to(x.device, x.dtype) * cfg.extra_noise
        if cfg.sampler.options.get("brownian_noise"):
            # A1111 builds the Brownian tree over the whole schedule, not the tail an img2img pass runs
            total = int(cfg.steps / min(cfg.denoising_strength, 0.999)) if cfg.fixed_steps else cfg.steps
            noise_sampler = brownian_noise_sampler(x, full(total), noise.seeds)
    sigmas = sigmas.to(x.device)
    if before_sampling is not None:
        replaced = before_sampling(x, noise.first())
        if replaced is not None:
            x = replaced
    denoiser = CFGDenoiser(unet=unet, schedule=schedule, prediction_type=prediction_type, conds=conds,
                           cfg_scale=cfg.cfg_scale, width=cfg.width, height=cfg.height,
                           family=family, image_conditioning=image_conditioning, total_steps=len(sigmas) - 1)
    if denoiser_setup:
        denoiser_setup(denoiser)
    last: dict[str, torch.Tensor] = {}

    def callback(info: Any) -> None:
        last["denoised"] = info.denoised
        if on_step:
            on_step(StepReport(info.i, info.total, info.x, info.denoised))

    try:
        out = sample(cfg.sampler, denoiser, x, sigmas, ms=schedule, noise=noise, callback=callback, eta=cfg.eta,
                     s_churn=cfg.s_churn, s_tmin=cfg.s_tmin, s_tmax=cfg.s_tmax, s_noise=cfg.s_noise,
                     noise_sampler=noise_sampler)
        return PassResult(out, sigmas=sigmas)
    except StopSampling:
        return PassResult(last.get("denoised", x), stopped_early=True, sigmas=sigmas)
