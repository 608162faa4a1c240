"""Stages 2–4 of a batch: conditioning, the first sampling pass, and txt2img's hires-fix pass.

The denoiser of every pass gets this job's per-step hooks: ControlNet residuals, the scripts'
`on_cfg_denoiser` / `on_cfg_denoised` / `on_cfg_after_cfg`, the app's callbacks of the same names,
img2img's mask blend and the NGMS skip.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from PIL import Image

from webui.engine import memory_stages as stages
from webui.engine import vae as vae_ops
from webui.engine.denoiser import CFGDenoiser, DenoiserCall
from webui.engine.loop import PassConfig, StepReport, run_pass
from webui.engine.noise import NoiseSource
from webui.engine.samplers import is_timesteps_sampler
from webui.processing import checkpoints_stage
from webui.processing.callbacks import AfterCFGCallbackParams, CFGDenoisedParams, CFGDenoiserParams, ExtraNoiseParams
from webui.processing.errors import GenerationError
from webui.processing.requests import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES
from webui.prompts.conditioning import build_conditioning, schedule_steps
from webui.prompts.encoder import EncodeOptions

if TYPE_CHECKING:
    from webui.processing.context import Processing

OnStep = Callable[[StepReport], None]


def encode_options(p: "Processing") -> EncodeOptions:
    return EncodeOptions(p.clip_skip, str(p.opt("emphasis")), int(p.opt("comma_padding_backtrack")),
                         bool(p.opt("sdxl_clip_l_skip")))


def first_pass_total(p: "Processing") -> int:
    assert p.sampler is not None
    return schedule_steps(p.steps, bool(p.sampler.options.get("second_order")))


def conditioning(p: "Processing", prompts: list[str], negatives: list[str]) -> Any:
    conds = build_conditioning(p.sd_model.encoder, prompts, negatives, first_pass_total(p), opts=encode_options(p),
                               use_old_scheduling=bool(p.opt("use_old_scheduling")))
    for e in conds.embeddings_used:
        p.embeddings_used.setdefault(e.name, e)
    return conds


def eta(p: "Processing") -> float | None:
    # A1111: "Eta for k-diffusion samplers" applies to them; DDIM-family samplers keep their own default (0)
    if p.eta is not None:
        return p.eta
    return None if is_timesteps_sampler(p.sampler) else float(p.opt("eta_ancestral"))


def noise_source(p: "Processing", shape: tuple[int, ...], seeds: list[int], subseeds: list[int]) -> NoiseSource:
    """The job's noise from A1111's `randn_source` option (CPU, GPU or NV; "RNG" in the infotext)."""
    noise = NoiseSource(shape, seeds, subseeds, p.subseed_strength, max(p.seed_resize_from_h, 0),
                        max(p.seed_resize_from_w, 0), eta_noise_seed_delta=int(p.opt("eta_noise_seed_delta") or 0),
                        rng=str(p.opt("randn_source") or "CPU"), device=p.sd_model.policy.device)
    if noise.note:
        p.warn(noise.note)
    p.rng_infotext = noise.infotext_rng
    return noise


def sigma_params(p: "Processing") -> dict[str, float]:
    """s_churn / s_tmin / s_tmax / s_noise: the request's value, else the option (A1111's names)."""
    def pick(name: str, default: float) -> float:
        v = getattr(p, name, None)
        if v is None:
            v = p.opt(name, default)
        return float(v if v is not None else default)
    return {"s_churn": pick("s_churn", 0.0), "s_tmin": pick("s_tmin", 0.0), "s_tmax": pick("s_tmax", 0.0),
            "s_noise": pick("s_noise", 1.0)}


def first_pass_config(p: "Processing") -> PassConfig:
    sp = sigma_params(p)
    return with_schedule_options(p, PassConfig(
        p.sampler, p.schedule, p.steps, p.cfg_scale, p.width, p.height,
        eta=eta(p), s_churn=sp["s_churn"], s_tmin=sp["s_tmin"],
        s_tmax=sp["s_tmax"] if sp["s_tmax"] else float("inf"), s_noise=sp["s_noise"],
        discard_next_to_last_sigma=True if p.opt("always_discard_next_to_last_sigma") else None))


def with_schedule_options(p: "Processing", cfg: PassConfig) -> PassConfig:
    """A1111's sigma_min / sigma_max / rho / beta_dist_* options for a pass whose schedule type has a
    function (not Automatic, not the DDIM/PLMS/UniPC samplers): like A1111, each is used and written into
    the infotext only when it is set and differs from the model's (or the schedule's) own value."""
    from webui.engine.samplers import effective_schedule
    st = effective_schedule(cfg.sampler, cfg.schedule)
    if st.name == "automatic" or is_timesteps_sampler(cfg.sampler):
        return cfg
    sigmas = p.sd_model.schedule.sigmas
    m_min, m_max = float(sigmas[0]), float(sigmas[-1])
    smin, smax, rho = (float(p.opt(k) or 0.0) for k in ("sigma_min", "sigma_max", "rho"))
    if smin and smin != m_min:
        cfg.sigma_min = smin
        p.extra_generation_params["Schedule min sigma"] = smin
    if smax and smax != m_max:
        cfg.sigma_max = smax
        p.extra_generation_params["Schedule max sigma"] = smax
    if st.default_rho != -1 and rho and rho != st.default_rho:
        cfg.rho = rho
        p.extra_generation_params["Schedule rho"] = rho
    if st.name == "beta":
        cfg.beta_alpha, cfg.beta_beta = float(p.opt("beta_dist_alpha")), float(p.opt("beta_dist_beta"))
        p.extra_generation_params["Beta schedule alpha"] = cfg.beta_alpha
        p.extra_generation_params["Beta schedule beta"] = cfg.beta_beta
    return cfg


def with_extra_noise(p: "Processing", cfg: PassConfig) -> PassConfig:
    """A1111's img2img_extra_noise for an img2img or hires pass: recorded in the infotext, and the
    extra_noise callbacks may replace the noise that is added."""
    amount = float(p.opt("img2img_extra_noise") or 0.0)
    if amount <= 0:
        return cfg
    p.extra_generation_params["Extra noise"] = amount
    cfg.extra_noise = amount
    callbacks = p.pipeline.callbacks if p.pipeline is not None else None
    if callbacks is not None and callbacks.has("extra_noise"):
        def hook(noise: Any, x: Any, xi: Any) -> Any:
            params = ExtraNoiseParams(noise, x, xi)
            callbacks.run("extra_noise", params, p)
            return params.noise
        cfg.extra_noise_hook = hook
    return cfg


# ---- the denoiser's per-step hooks for this job ----
def denoiser_setup(p: "Processing", controls: Any,
                   extra: Callable[[CFGDenoiser], None] | None = None) -> Callable[[CFGDenoiser], None]:
    scripts = p.scripts
    callbacks = p.pipeline.callbacks if p.pipeline is not None else None
    before = scripts.step_hooks(p, "on_cfg_denoiser") if scripts else []
    after_model = scripts.step_hooks(p, "on_cfg_denoised") if scripts else []
    after_cfg = scripts.step_hooks(p, "on_cfg_after_cfg") if scripts else []

    def setup(d: CFGDenoiser) -> None:
        if controls:
            d.controls = controls
        d.s_min_uncond = float(p.s_min_uncond or 0.0)
        d.crop_top, d.crop_left = int(p.opt("sdxl_crop_top") or 0), int(p.opt("sdxl_crop_left") or 0)
        if extra is not None:
            extra(d)
        if before or (callbacks and callbacks.has("cfg_denoiser")):
            def on_before(call: DenoiserCall) -> None:
                params = CFGDenoiserParams(call.x, d.image_conditioning, call.sigma, call.step, call.total_steps,
                                           call.cond.cross_attn, call.uncond.cross_attn, d)
                for hook in before:
                    hook(params)
                if callbacks:
                    callbacks.run("cfg_denoiser", params, p)
                call.x, call.sigma = params.x, params.sigma
                if params.text_cond is not call.cond.cross_attn:
                    call.cond = replace(call.cond, cross_attn=params.text_cond)
                if params.text_uncond is not call.uncond.cross_attn:
                    call.uncond = replace(call.uncond, cross_attn=params.text_uncond)
            d.before_hooks.append(on_before)
        if after_model or (callbacks and callbacks.has("cfg_denoised")):
            d.after_model_hooks.append(_tensor_hook(
                p, after_model, "cfg_denoised", lambda x, step: CFGDenoisedParams(x, step, d.total_steps, d.unet)))
        if after_cfg or (callbacks and callbacks.has("cfg_after_cfg")):
            d.after_cfg_hooks.append(_tensor_hook(
                p, after_cfg, "cfg_after_cfg", lambda x, step: AfterCFGCallbackParams(x, step, d.total_steps)))
    return setup


def _tensor_hook(p: "Processing", hooks: list[Callable[[Any], None]], kind: str,
                 make: Callable[[torch.Tensor, int], Any]) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A denoiser hook that hands (tensor, step) to the scripts' hooks and the app's callbacks of
    ``kind`` as A1111's params object, and returns the tensor they leave in `params.x`."""
    callbacks = p.pipeline.callbacks if p.pipeline is not None else None

    def run(x: torch.Tensor, step: int) -> torch.Tensor:
        params = make(x, step)
        for hook in hooks:
            hook(params)
        if callbacks:
            callbacks.run(kind, params, p)
        return params.x
    return run


def before_every_sampling(p: "Processing", conds: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A1111's process_before_every_sampling(p, x, noise, c, uc): scripts see (and may replace) x."""
    def hook(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if p.scripts is not None:  # scripts change x in place, as in A1111
            p.scripts.process_before_every_sampling(p, x=x, noise=noise, c=conds, uc=conds)
        return x
    return hook


def inpaint_conditioning(p: "Processing", batch: int, width: int, height: int) -> torch.Tensor | None:
    """txt2img on a 9-channel inpainting model: mask of ones + the latent of a neutral grey image (A1111)."""
    model = p.sd_model
    if not getattr(model.sd, "inpainting", False):
        return None
    grey = torch.full((1, 3, height, width), 0.5)
    lat = stages.encode(model, grey)
    mask = torch.ones_like(lat[:, :1])
    return torch.cat([mask, lat], dim=1).repeat(batch, 1, 1, 1)


def refiner(p: "Processing", hires: bool) -> Callable[[CFGDenoiser], None] | None:
    """The refiner's switch: without hires fix for the one pass; with it for the pass(es) that A1111's
    hires_fix_refiner_pass option names (default: the second). The hires pass runs on the model the
    first pass ended on, so after a switch in the first pass it continues on the refiner."""
    if p.hr_size is None:
        if hires:
            return None
    else:
        which = str(p.opt("hires_fix_refiner_pass") or "second pass")
        if (which == "first pass" and hires) or (which == "second pass" and not hires):
            return None
        if which != "second pass" and p.refiner_checkpoint not in checkpoints_stage.NONE_NAMES:
            p.extra_generation_params["Hires refiner"] = which
    prompts = p.cond_hr_prompts if hires else p.cond_prompts
    negatives = p.hr_negative_prompts if hires else p.negative_prompts

    def conds_for(m: Any) -> Any:
        hr_total = (schedule_steps(p.hr_second_pass_steps or p.steps, bool(p.hr_sampler.options.get("second_order")))
                    if hires else None)
        return build_conditioning(m.encoder, prompts, negatives, first_pass_total(p), hires_steps=hr_total,
                                  opts=encode_options(p), use_old_scheduling=bool(p.opt("use_old_scheduling")))
    return checkpoints_stage.refiner_setup(p, conds_for)


def sample_txt2img(p: "Processing", conds: Any, noise: NoiseSource, on_step: OnStep) -> torch.Tensor:
    model, sd = p.sd_model, p.sd_model.sd
    cfg = first_pass_config(p)
    controls = p.control_stack
    ic = inpaint_conditioning(p, len(noise.seeds), cfg.width, cfg.height)
    return stages.sample(
        model, lambda: run_pass(sd.unet, sd.family, sd.prediction_type, model.schedule, cfg, conds, noise, on_step,
                                image_conditioning=ic,
                                denoiser_setup=denoiser_setup(p, controls, refiner(p, hires=False)),
                                before_sampling=before_every_sampling(p, conds)).latents,
        rows=2 * len(noise.seeds), width=cfg.width, height=cfg.height, controls=controls, noise=noise)


def hires_upscale(p: "Processing", latents: torch.Tensor, model: Any) -> torch.Tensor | list[Image.Image]:
    """The first pass's result brought to the hires size: a latent (latent upscalers), or pictures
    (image upscalers; decoded by ``model``, the one the first pass ended on) for the hires model to encode."""
    sd = model.sd
    assert p.hr_size is not None
    tw, th = p.hr_size
    vsf = getattr(sd, "vae_scale_factor", 8)
    up = p.hr_upscaler or "Latent"
    cw, ch = p.hr_crop
    full_w, full_h = tw + cw * vsf, th + ch * vsf
    if up in LATENT_UPSCALE_MODES:
        mode, aa = LATENT_UPSCALE_MODES[up]
        size = (full_h // vsf, full_w // vsf)
        kw: dict[str, Any] = {"antialias": aa} if mode in ("bilinear", "bicubic") else {}
        if mode in ("bilinear", "bicubic"):
            kw["align_corners"] = False
        init = F.interpolate(latents.float(), size=size, mode=mode, **kw)
        if cw or ch:
            init = init[:, :, ch // 2: ch // 2 + th // vsf, cw // 2: cw // 2 + tw // vsf]
        return init
    from webui.processing.output_stage import decode_with
    imgs = vae_ops.to_pil(decode_with(p, model, latents))
    resample = Image.Resampling.NEAREST if up == "Nearest" else Image.Resampling.LANCZOS
    big = []
    upscale = p.pipeline.upscale if p.pipeline is not None else None
    for im in imgs:
        if up not in IMAGE_UPSCALERS and upscale is not None:
            try:  # a model upscaler, then the exact size
                im = upscale(im, up, max(full_w / im.width, full_h / im.height))
            except ValueError as e:
                raise GenerationError(f"hires upscaler: {e}") from None
        im = im.resize((full_w, full_h), resample) if im.size != (full_w, full_h) else im
        left, top = (cw * vsf) // 2, (ch * vsf) // 2
        big.append(im.crop((left, top, left + tw, top + th)))
    return big


def sample_hires(p: "Processing", latents: torch.Tensor, hr_prompts: list[str], hr_negatives: list[str],
                 on_step: OnStep) -> torch.Tensor:
    first = p.pipeline.models.current or p.sd_model  # the model the first pass ended on
    up = hires_upscale(p, latents, first)
    model = checkpoints_stage.hires_model(p)
    sd = model.sd
    tw, th = p.hr_size
    init = up if isinstance(up, torch.Tensor) else stages.encode(model, vae_ops.from_pil(up)).to(latents.device)
    strength = 0.75 if p.denoising_strength is None else p.denoising_strength
    if strength == 0:
        # A1111 at denoising 0 runs a zero-step schedule (setup_img2img_steps gives 0 steps, so the
        # sampler adds noise * 0 and returns its input): the result is the upscaled first pass, unchanged.
        # The sampler is skipped; the latent (or the upscaled pictures, encoded) is returned as it is.
        return init
    # The hires pass numbers its steps after the first pass's (A1111): `[a:b:15]` with 10+20 steps
    # switches 5 steps into the hires pass.
    hr_steps = p.hr_second_pass_steps or p.steps
    hr_total = schedule_steps(hr_steps, bool(p.hr_sampler.options.get("second_order")))
    conds = build_conditioning(model.encoder, hr_prompts, hr_negatives, first_pass_total(p), hires_steps=hr_total,
                               opts=encode_options(p), use_old_scheduling=bool(p.opt("use_old_scheduling")))
    noise = noise_source(p, tuple(init.shape[1:]), p.seeds, p.subseeds)
    cfg = with_extra_noise(p, PassConfig(p.hr_sampler, p.hr_schedule, hr_steps, p.cfg_scale, tw, th, eta=eta(p),
                                         init_latent=init, denoising_strength=strength, fixed_steps=True))
    cfg = with_schedule_options(p, cfg)
    ic = inpaint_conditioning(p, len(p.seeds), tw, th)
    hr_controls = p.control_stack.for_hires() if p.control_stack is not None else None
    return stages.sample(
        model, lambda: run_pass(sd.unet, sd.family, sd.prediction_type, model.schedule, cfg, conds, noise, on_step,
                                image_conditioning=ic,
                                denoiser_setup=denoiser_setup(p, hr_controls, refiner(p, hires=True)),
                                before_sampling=before_every_sampling(p, conds)).latents,
        rows=2 * len(p.seeds), width=tw, height=th, controls=hr_controls, noise=noise)
