"""txt2img: request → validated plan → batches through the loop → images, infotext, files.

Used by the UI and the API alike (both submit `Txt2ImgRequest` to the job queue).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from PIL import Image

from webui import infotext as infotext_mod
from webui import outputs
from webui.engine import vae as vae_ops
from webui.engine.loop import PassConfig, StepReport, StopSampling, run_pass
from webui.engine.noise import NoiseSource
from webui.engine.samplers import (SamplerInfo, ScheduleType, UnknownSamplerError, effective_schedule,
                                   is_timesteps_sampler, resolve_sampler)
from webui.engine.controlnet import ControlStack
from webui.memory.attention import attention_context
from webui.networks.controlnet_units import ControlNetError, build_units
from webui.prompts.conditioning import build_conditioning, schedule_steps
from webui.prompts.encoder import EncodeOptions
from webui.prompts.extra_networks import parse_prompt
from webui.prompts.styles import StyleDatabase
from webui.services import stages
from webui.services.jobs import Interrupted, JobState, Skipped
from webui.services.model_service import LoadedModel, ModelLoadError, ModelService
from webui.services.requests import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES, Txt2ImgRequest
from webui.settings import Settings, SettingsError

from webui.version import VERSION  # noqa: E402  (re-exported)
MAX_STEPS = 500
MAX_SIDE = 4096


class GenerationError(ValueError):
    """Bad request: the message tells the user what to change (API answers 4xx)."""


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    info: dict[str, Any]
    paths: list[Path] = field(default_factory=list)
    grid_path: Path | None = None
    grid: Image.Image | None = None  # made when there are several images (the API returns it first)
    memory: str = ""                 # peak memory of the job (the line under the gallery)


@dataclass
class PromptPlan:
    """The batch's prompts with extra-network tags (`<lora:name:0.8>`) taken out, and the tags found.
    Infotext and API keep the prompts as the user wrote them; the text encoder sees the cleaned ones."""
    prompt: str
    negative: str
    hr_prompt: str
    hr_negative: str
    networks: dict[str, list[Any]]
    count: int

    @classmethod
    def build(cls, req: Txt2ImgRequest, count: int) -> "PromptPlan":
        """``req`` already carries the styled prompts (`Txt2ImgService.apply_styles`)."""
        prompt, nets = parse_prompt(req.prompt)
        hr_prompt, hr_nets = parse_prompt(req.hr_prompt or req.prompt)
        for k, v in hr_nets.items():
            if k not in nets:
                nets[k] = v
        return cls(prompt, req.negative_prompt, hr_prompt, req.hr_negative_prompt or req.negative_prompt,
                   dict(nets), count)

    def prompts(self, idx: slice) -> list[str]:
        return [self.prompt] * len(range(*idx.indices(self.count)))

    def negatives(self, idx: slice) -> list[str]:
        return [self.negative] * len(range(*idx.indices(self.count)))

    def hr_prompts(self, idx: slice) -> list[str]:
        return [self.hr_prompt] * len(range(*idx.indices(self.count)))

    def hr_negatives(self, idx: slice) -> list[str]:
        return [self.hr_negative] * len(range(*idx.indices(self.count)))


def random_seed() -> int:
    return int(random.randrange(4294967294))


@dataclass
class _Plan:
    sampler: SamplerInfo
    schedule: ScheduleType
    hr_sampler: SamplerInfo
    hr_schedule: ScheduleType
    hr_size: tuple[int, int] | None
    hr_crop: tuple[int, int]


class Txt2ImgService:
    def __init__(self, models: ModelService, settings: Settings, outputs_dir: Path,
                 styles: StyleDatabase | None = None,
                 upscale: Callable[[Image.Image, str, float], Image.Image] | None = None,
                 upscaler_names: Callable[[], list[str]] | None = None) -> None:
        self.models = models
        self.styles = styles
        # image upscalers for hires fix beyond Lanczos/Nearest: the extras registry (model files)
        self._upscale = upscale
        self._upscaler_names = upscaler_names
        self.settings = settings
        self.outputs_dir = outputs_dir

    # ---- validation (runs before queueing so bad input fails fast) ----
    def validate(self, req: Txt2ImgRequest) -> _Plan:
        for name, v in (("width", req.width), ("height", req.height)):
            if v is None:
                continue  # filled in from the loaded model when the job runs
            if v < 64 or v > MAX_SIDE:
                raise GenerationError(f"{name} must be between 64 and {MAX_SIDE}, got {v}")
            if v % 8:
                raise GenerationError(f"{name} must be a multiple of 8, got {v}")
        if not 1 <= req.steps <= MAX_STEPS:
            raise GenerationError(f"steps must be between 1 and {MAX_STEPS}, got {req.steps}")
        if not 1 <= req.batch_size <= 64 or not 1 <= req.n_iter <= 1000:
            raise GenerationError("batch_size must be 1..64 and n_iter 1..1000")
        if not 0 <= req.cfg_scale <= 100:
            raise GenerationError(f"cfg_scale must be between 0 and 100, got {req.cfg_scale}")
        if not 0.0 <= req.subseed_strength <= 1.0:
            raise GenerationError("subseed_strength must be between 0 and 1")
        try:
            sampler, schedule = resolve_sampler(req.effective_sampler, req.scheduler)
            hr_sampler, hr_schedule = sampler, schedule
            if req.hr_sampler_name and req.hr_sampler_name != "Use same sampler":
                hr_sampler, hr_schedule = resolve_sampler(
                    req.hr_sampler_name, req.hr_scheduler if req.hr_scheduler != "Use same scheduler" else None)
            elif req.hr_scheduler and req.hr_scheduler != "Use same scheduler":
                _, hr_schedule = resolve_sampler(sampler.name, req.hr_scheduler)
        except (UnknownSamplerError, ValueError, KeyError) as e:
            raise GenerationError(str(e.args[0] if e.args else e)) from None
        hr_size = None
        crop = (0, 0)
        if req.enable_hr and req.width is not None and req.height is not None:
            up = req.hr_upscaler or "Latent"
            image_ups = self.image_upscalers()
            if up not in LATENT_UPSCALE_MODES and up not in image_ups:
                raise GenerationError(f"unknown hires upscaler {up!r}; choose one of "
                                      f"{list(LATENT_UPSCALE_MODES) + image_ups}")
            if req.denoising_strength is not None and not 0.0 <= req.denoising_strength <= 1.0:
                raise GenerationError("denoising_strength must be between 0 and 1")
            if not 0 <= req.hr_second_pass_steps <= MAX_STEPS:
                raise GenerationError(f"hr_second_pass_steps must be between 0 and {MAX_STEPS}")
            hr_size, crop = hires_target(req.width, req.height, req.hr_scale, req.hr_resize_x, req.hr_resize_y)
            if max(hr_size) > MAX_SIDE:
                raise GenerationError(f"hires size {hr_size[0]}x{hr_size[1]} exceeds {MAX_SIDE}")
        return _Plan(sampler, schedule, hr_sampler, hr_schedule, hr_size, crop)

    def image_upscalers(self) -> list[str]:
        names = list(IMAGE_UPSCALERS)
        if self._upscaler_names is not None:
            names += [n for n in self._upscaler_names() if n not in names]
        return names

    def apply_styles(self, req: Txt2ImgRequest) -> Txt2ImgRequest:
        """Selected styles folded into the prompts, as A1111 does before generating (the infotext
        then holds the styled prompt, so pasting it back reproduces the image without the style)."""
        if not req.styles or self.styles is None:
            return req
        s = self.styles
        s.reload()  # styles.csv edited by hand since the last job counts (it is a small file)
        upd: dict[str, Any] = {"prompt": s.apply_styles_to_prompt(req.prompt, req.styles),
                               "negative_prompt": s.apply_negative_styles_to_prompt(req.negative_prompt, req.styles)}
        if req.hr_prompt:
            upd["hr_prompt"] = s.apply_styles_to_prompt(req.hr_prompt, req.styles)
        if req.hr_negative_prompt:
            upd["hr_negative_prompt"] = s.apply_negative_styles_to_prompt(req.hr_negative_prompt, req.styles)
        return req.model_copy(update=upd)

    # ---- the job ----
    def run(self, req: Txt2ImgRequest, state: JobState, *, save: bool) -> GenerationResult:
        self.validate(req)
        overrides = dict(req.override_settings or {})
        restore: dict[str, Any] = {}
        try:
            for k, v in overrides.items():
                restore[k] = self.settings.get(k)
                if k == "sd_model_checkpoint":
                    self.models.load(str(v))
                    continue
                try:
                    self.settings.set(k, v, save=False, notify=False)
                except SettingsError as e:
                    raise GenerationError(str(e)) from None
            model = self.models.require()
            self.models.ensure_vae(model, str(self.settings.get("sd_vae") or "Automatic"))
            req = self.apply_styles(req)
            if req.width is None or req.height is None:
                req = req.model_copy(update={"width": req.width or model.sd.default_size,
                                             "height": req.height or model.sd.default_size})
            plan = self.validate(req)
            model.memory.take_notes()  # notes of earlier work are not this job's
            req, prep = self._prepare(req, plan, model)
            return self._generate(req, plan, model, state, save, prep)
        except (ModelLoadError, ControlNetError, stages.OutOfDeviceMemory) as e:
            raise GenerationError(str(e)) from None
        finally:
            if req.override_settings_restore_afterwards:
                for k, v in restore.items():
                    if k == "sd_model_checkpoint":
                        if v:
                            try:
                                self.models.load(str(v))
                            except ModelLoadError:
                                pass
                        continue
                    self.settings.set(k, v, save=False, notify=False)
            elif restore:
                self.settings.update({k: overrides[k] for k in restore if k != "sd_model_checkpoint"})
                if "sd_model_checkpoint" in overrides:
                    self.settings.set("sd_model_checkpoint", self.models.current.info.title if self.models.current
                                      else overrides["sd_model_checkpoint"], notify=False)

    # ---- what img2img (a subclass) changes; txt2img starts from noise and keeps the image as decoded ----
    def _prepare(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel) -> tuple[Txt2ImgRequest, Any]:
        """Per-job preparation before sampling; returns the request as it will run and a context."""
        return req, None

    def _first_pass(self, prep: Any, model: LoadedModel, cfg: PassConfig, conds: Any, noise: NoiseSource,
                    on_step: Any, controls: ControlStack | None, idx: slice) -> torch.Tensor:
        sd = model.sd
        ic = self._inpaint_conditioning(model, len(noise.seeds), cfg.width, cfg.height)
        return stages.sample(
            model, lambda: run_pass(sd.unet, sd.family, sd.prediction_type, model.schedule, cfg, conds, noise,
                                    on_step, image_conditioning=ic,
                                    denoiser_setup=(lambda d: setattr(d, "controls", controls)) if controls else None
                                    ).latents,
            rows=2 * len(noise.seeds), width=cfg.width, height=cfg.height, controls=controls, noise=noise)

    def _finish_image(self, prep: Any, img: Image.Image, k: int) -> Image.Image:
        return img

    def _extra_params(self, prep: Any, req: Txt2ImgRequest) -> dict[str, Any]:
        """Infotext fields of this mode, placed after "Denoising strength" as A1111 does."""
        return {}

    def _warnings(self, prep: Any) -> list[str]:
        return []

    def _denoising(self, req: Txt2ImgRequest, plan: _Plan) -> float | None:
        return (0.75 if req.denoising_strength is None else req.denoising_strength) if plan.hr_size else None

    mode = "txt2img"

    def _generate(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel, state: JobState,
                  save: bool, prep: Any = None) -> GenerationResult:
        sd = model.sd
        opts = self.settings
        n_images = req.batch_size * req.n_iter
        seed = random_seed() if req.seed in (-1, None) else int(req.seed)
        subseed = random_seed() if req.subseed in (-1, None) else int(req.subseed)
        all_seeds = [seed + (i if req.subseed_strength == 0 else 0) for i in range(n_images)]
        all_subseeds = [subseed + i for i in range(n_images)]
        clip_skip = int(opts.get("CLIP_stop_at_last_layers"))
        hires = plan.hr_size is not None
        steps_hr = req.hr_second_pass_steps or req.steps
        state.job_count = req.n_iter * (2 if hires else 1)
        state.textinfo = "Sampling"
        images: list[Image.Image] = []
        infotexts: list[str] = []
        paths: list[Path] = []
        stop_all = False
        interrupt_after_current = bool(opts.get("interrupt_after_current")) and n_images > 1
        preview_every = int(opts.get("show_progress_every_n_steps"))
        previews = bool(opts.get("live_previews_enable")) and preview_every > 0
        ensd = int(opts.get("eta_noise_seed_delta") or 0)
        # A1111: "Eta for k-diffusion samplers" applies to them; DDIM-family samplers keep their own default (0)
        eta = req.eta if req.eta is not None else (
            None if is_timesteps_sampler(plan.sampler) else float(opts.get("eta_ancestral")))
        latent_ch = getattr(sd, "latent_channels", 4)
        vsf = getattr(sd, "vae_scale_factor", 8)
        dev = model.policy.device
        enc_opts = EncodeOptions(clip_skip, str(opts.get("emphasis")), int(opts.get("comma_padding_backtrack")))
        old_sched = bool(opts.get("use_old_scheduling"))
        first_total = schedule_steps(req.steps, bool(plan.sampler.options.get("second_order")))
        prompt_plan = PromptPlan.build(req, n_images)

        def on_step(r: StepReport) -> None:
            state.sampling_step = r.step + 1
            state.sampling_steps = r.total
            if previews and (r.step + 1) % preview_every == 0:
                state.current_image = vae_ops.cheap_preview(r.denoised, sd.family)
                state.current_image_step = r.step + 1
            if state.interrupted and not interrupt_after_current:
                raise StopSampling()
            if state.skipped:
                state.skipped = False
                raise StopSampling()

        out_dir = Path(opts.get(f"outdir_{self.mode}_samples") or self.outputs_dir / f"{self.mode}-images")
        grid_dir = Path(opts.get(f"outdir_{self.mode}_grids") or self.outputs_dir / f"{self.mode}-grids")
        date = time.strftime("%Y-%m-%d")
        missing_styles = [n for n in req.styles or [] if self.styles is None or n not in self.styles.styles]
        # A1111's disable_extra_networks: the tags are still taken out of the prompt, but not loaded
        nets = {} if req.disable_extra_networks else prompt_plan.networks
        net_report = self.models.activate_networks(model, nets)
        extra: dict[str, Any] = {"warnings": net_report.warnings + (
            [f"Styles not found: {', '.join(missing_styles)}"] if missing_styles else []) + self._warnings(prep),
            "embeddings": {},
            "networks": net_report.infotext, "mode": self._extra_params(prep, req)}
        scripts = {str(k).lower(): v for k, v in (req.alwayson_scripts or {}).items()}  # A1111 matches titles
        cn_args = (scripts.get("controlnet") or {}).get("args") or []                   # case-insensitively
        controls = None
        if cn_args:
            units, extra["controlnet"], _maps = build_units(
                cn_args, self.models.controlnets, req.width, req.height, dev, next(sd.unet.parameters()).dtype,
                int(opts.get("control_net_unit_count")), sd.unet.config, plan.hr_size)
            controls = ControlStack(units) if units else None
        if model.encoder.embeddings is not None:
            model.encoder.embeddings.refresh_if_changed()  # files dropped in since the last job
        with torch.inference_mode(), model.policy.autocast_context(), attention_context(model.attention):
            for it in range(req.n_iter):
                if stop_all or state.interrupted:
                    break
                state.job_no = it * (2 if hires else 1)
                idx = slice(it * req.batch_size, (it + 1) * req.batch_size)
                seeds, subseeds = all_seeds[idx], all_subseeds[idx]
                prompts, negs = prompt_plan.prompts(idx), prompt_plan.negatives(idx)
                conds = build_conditioning(model.encoder, prompts, negs, first_total, opts=enc_opts,
                                           use_old_scheduling=old_sched)
                for e in conds.embeddings_used:
                    extra["embeddings"].setdefault(e.name, e)
                shape = (latent_ch, req.height // vsf, req.width // vsf)
                noise = NoiseSource(shape, seeds, subseeds, req.subseed_strength,
                                    max(req.seed_resize_from_h, 0), max(req.seed_resize_from_w, 0),
                                    eta_noise_seed_delta=ensd)
                cfg = PassConfig(plan.sampler, plan.schedule, req.steps, req.cfg_scale, req.width, req.height,
                                 eta=eta, s_churn=req.s_churn or 0.0, s_tmin=req.s_tmin or 0.0,
                                 s_tmax=req.s_tmax if req.s_tmax else float("inf"), s_noise=req.s_noise or 1.0,
                                 discard_next_to_last_sigma=True if opts.get("always_discard_next_to_last_sigma") else None)
                latents = self._first_pass(prep, model, cfg, conds, noise, on_step, controls, idx)
                if state.interrupted:
                    stop_all = True
                if hires and not stop_all:
                    state.job_no += 1
                    state.textinfo = "Hires fix"
                    latents = self._hires(req, plan, model, latents, seeds, subseeds, on_step, eta, prompt_plan, idx,
                                          first_total, enc_opts, old_sched, ensd, controls)
                    if state.interrupted:
                        stop_all = True
                decoded = vae_ops.to_pil(stages.decode(model, latents))
                for j, img in enumerate(decoded):
                    k = it * req.batch_size + j
                    img = self._finish_image(prep, img, k)
                    text = self._infotext(req, plan, model, all_seeds, all_subseeds, k, clip_skip, extra)
                    images.append(img)
                    infotexts.append(text)
                    if save and opts.get("samples_save") and not req.do_not_save_samples:
                        paths.append(outputs.save_image(
                            img, out_dir / date, seed=all_seeds[k],
                            infotext=text if opts.get("enable_pnginfo") else None,
                            fmt=str(opts.get("samples_format"))))
                state.sampling_step = 0
        state.job_no = state.job_count
        grid_path = grid = None
        if len(images) > 1:
            grid = outputs.make_grid(images)
            if save and opts.get("grid_save") and not req.do_not_save_grid:
                grid_path = outputs.save_image(grid, grid_dir / date, seed=all_seeds[0],
                                               infotext=infotexts[0] if opts.get("enable_pnginfo") else None,
                                               grid=True, fmt=str(opts.get("samples_format")))
        extra["warnings"] += model.memory.take_notes()  # fallbacks the memory manager took (OOM, NaN VAE)
        info = self._info_json(req, plan, model, all_seeds, all_subseeds, infotexts, clip_skip, extra, state)
        return GenerationResult(images, infotexts, info, paths, grid_path, grid)

    def _inpaint_conditioning(self, model: LoadedModel, batch: int, width: int, height: int) -> torch.Tensor | None:
        """txt2img on a 9-channel inpainting model: mask of ones + the latent of a neutral grey image (A1111)."""
        sd = model.sd
        if not getattr(sd, "inpainting", False):
            return None
        grey = torch.full((1, 3, height, width), 0.5)
        lat = stages.encode(model, grey)
        mask = torch.ones_like(lat[:, :1])
        return torch.cat([mask, lat], dim=1).repeat(batch, 1, 1, 1)

    def _hires(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel, latents: torch.Tensor,
               seeds: list[int], subseeds: list[int], on_step: Any, eta: float, prompt_plan: "PromptPlan",
               idx: slice, first_total: int, enc_opts: EncodeOptions, old_sched: bool, ensd: int,
               controls: ControlStack | None = None) -> torch.Tensor:
        sd = model.sd
        assert plan.hr_size is not None
        tw, th = plan.hr_size
        vsf = getattr(sd, "vae_scale_factor", 8)
        up = req.hr_upscaler or "Latent"
        cw, ch = plan.hr_crop
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
        else:
            imgs = vae_ops.to_pil(stages.decode(model, latents))
            resample = Image.Resampling.NEAREST if up == "Nearest" else Image.Resampling.LANCZOS
            big = []
            for im in imgs:
                if up not in IMAGE_UPSCALERS and self._upscale is not None:
                    try:  # a model upscaler, then the exact size
                        im = self._upscale(im, up, max(full_w / im.width, full_h / im.height))
                    except ValueError as e:
                        raise GenerationError(f"hires upscaler: {e}") from None
                im = im.resize((full_w, full_h), resample) if im.size != (full_w, full_h) else im
                left, top = (cw * vsf) // 2, (ch * vsf) // 2
                big.append(im.crop((left, top, left + tw, top + th)))
            init = stages.encode(model, vae_ops.from_pil(big)).to(latents.device)
        # The hires pass numbers its steps after the first pass's (A1111): `[a:b:15]` with 10+20 steps
        # switches 5 steps into the hires pass.
        hr_steps = req.hr_second_pass_steps or req.steps
        hr_total = schedule_steps(hr_steps, bool(plan.hr_sampler.options.get("second_order")))
        conds = build_conditioning(model.encoder, prompt_plan.hr_prompts(idx), prompt_plan.hr_negatives(idx),
                                   first_total, hires_steps=hr_total, opts=enc_opts, use_old_scheduling=old_sched)
        strength = 0.75 if req.denoising_strength is None else req.denoising_strength
        noise = NoiseSource(tuple(init.shape[1:]), seeds, subseeds, req.subseed_strength,
                            max(req.seed_resize_from_h, 0), max(req.seed_resize_from_w, 0),
                            eta_noise_seed_delta=ensd)
        cfg = PassConfig(plan.hr_sampler, plan.hr_schedule, req.hr_second_pass_steps or req.steps, req.cfg_scale,
                         tw, th, eta=eta, init_latent=init, denoising_strength=strength,
                         fixed_steps=True)
        ic = self._inpaint_conditioning(model, len(seeds), tw, th)
        hr_controls = controls.for_hires() if controls is not None else None
        return stages.sample(
            model, lambda: run_pass(sd.unet, sd.family, sd.prediction_type, model.schedule, cfg, conds, noise,
                                    on_step, image_conditioning=ic,
                                    denoiser_setup=(lambda d: setattr(d, "controls", hr_controls)) if hr_controls
                                    else None).latents,
            rows=2 * len(seeds), width=tw, height=th, controls=hr_controls, noise=noise)

    # ---- infotext ----
    def _params(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel, seed: int, subseed: int,
                clip_skip: int, extra: dict[str, Any]) -> dict[str, Any]:
        sched = effective_schedule(plan.sampler, plan.schedule)
        p: dict[str, Any] = {
            "Steps": req.steps,
            "Sampler": plan.sampler.name,
            "Schedule type": sched.label,
            "CFG scale": req.cfg_scale,
            "Seed": seed,
            "Size": f"{req.width}x{req.height}",
            "Model hash": model.info.shorthash,
            "Model": model.info.stem,
            "Variation seed": subseed if req.subseed_strength > 0 else None,
            "Variation seed strength": req.subseed_strength if req.subseed_strength > 0 else None,
            "Seed resize from": (f"{req.seed_resize_from_w}x{req.seed_resize_from_h}"
                                 if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0 else None),
            "Denoising strength": self._denoising(req, plan),
            **extra.get("mode", {}),
            "Clip skip": clip_skip if clip_skip > 1 else None,
            "Emphasis": self.settings.get("emphasis") if self.settings.get("emphasis") != "Original" else None,
            "Old prompt editing timelines": True if self.settings.get("use_old_scheduling") else None,
            "TI hashes": ", ".join(f"{e.name}: {e.shorthash}" for e in extra.get("embeddings", {}).values()) or None,
            **extra.get("networks", {}),
            **{f"ControlNet {i}": v for i, v in enumerate(extra.get("controlnet", []))},
            "VAE hash": model.vae_hash if model.vae_file else None,
            "VAE": model.vae_file.name if model.vae_file else None,
            "ENSD": self.settings.get("eta_noise_seed_delta") or None,
            "RNG": "CPU",
        }
        if plan.hr_size:
            if req.hr_resize_x or req.hr_resize_y:
                p["Hires resize"] = f"{req.hr_resize_x}x{req.hr_resize_y}"
            else:
                p["Hires upscale"] = req.hr_scale
            if req.hr_second_pass_steps:
                p["Hires steps"] = req.hr_second_pass_steps
            p["Hires upscaler"] = req.hr_upscaler or "Latent"
            if plan.hr_sampler.name != plan.sampler.name:
                p["Hires sampler"] = plan.hr_sampler.name
            if plan.hr_schedule.name != plan.schedule.name:
                p["Hires schedule type"] = plan.hr_schedule.label
            if req.hr_prompt and req.hr_prompt != req.prompt:
                p["Hires prompt"] = req.hr_prompt
            if req.hr_negative_prompt and req.hr_negative_prompt != req.negative_prompt:
                p["Hires negative prompt"] = req.hr_negative_prompt
        p["Version"] = VERSION
        return p

    def _infotext(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel, seeds: list[int],
                  subseeds: list[int], k: int, clip_skip: int, extra: dict[str, Any]) -> str:
        params = self._params(req, plan, model, seeds[k], subseeds[k], clip_skip, extra)
        return infotext_mod.create_infotext(req.prompt, req.negative_prompt, params)

    def _info_json(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel, seeds: list[int],
                   subseeds: list[int], infotexts: list[str], clip_skip: int, extra: dict[str, Any],
                   state: JobState) -> dict[str, Any]:
        n = len(seeds)
        params = self._params(req, plan, model, seeds[0], subseeds[0], clip_skip, extra)
        base = ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Variation seed",
                "Variation seed strength", "Seed resize from", "Denoising strength", "Clip skip", "Version")
        return {
            "prompt": req.prompt, "all_prompts": [req.prompt] * n,
            "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * n,
            "seed": seeds[0], "all_seeds": seeds, "subseed": subseeds[0], "all_subseeds": subseeds,
            "subseed_strength": req.subseed_strength, "width": req.width, "height": req.height,
            "sampler_name": plan.sampler.name, "cfg_scale": req.cfg_scale, "steps": req.steps,
            "batch_size": req.batch_size, "restore_faces": False, "face_restoration_model": None,
            "sd_model_name": model.info.stem, "sd_model_hash": model.info.shorthash,
            "sd_vae_name": model.vae_file.name if model.vae_file else None,
            "sd_vae_hash": model.vae_hash if model.vae_file else None,
            "seed_resize_from_w": req.seed_resize_from_w, "seed_resize_from_h": req.seed_resize_from_h,
            "denoising_strength": self._denoising(req, plan),
            "extra_generation_params": {k: v for k, v in params.items() if k not in base and v is not None},
            "index_of_first_image": 1 if len(infotexts) > 1 else 0, "infotexts": infotexts,
            "styles": req.styles or [], "job_timestamp": state.job_timestamp, "clip_skip": clip_skip,
            "warnings": list(extra.get("warnings", [])),
            "is_using_inpainting_conditioning": bool(getattr(model.sd, "inpainting", False)),
            "version": VERSION,
        }


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
