"""The parameters text of each image (A1111's create_infotext) and the API's `info` JSON, both read
from the job's `Processing` — so what scripts put in `p.extra_generation_params` is written too."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from webui import infotext as infotext_mod
from webui.engine.samplers import effective_schedule
from webui.processing import sampling_stage
from webui.version import VERSION

if TYPE_CHECKING:
    from webui.processing.context import Processing


def params(p: "Processing", k: int) -> dict[str, Any]:
    """The infotext fields of image ``k`` (index into p.all_*)."""
    model = p.sd_model
    sched = effective_schedule(p.sampler, p.schedule)
    opts = p.opts
    seed, subseed = p.all_seeds[k], p.all_subseeds[k]
    mode = dict(p.prep.params) if p.prep is not None and hasattr(p.prep, "params") else {}
    mode.update(p.extra_generation_params)
    out: dict[str, Any] = {
        "Steps": p.steps,
        "Sampler": p.sampler.name,
        "Schedule type": sched.label,
        "CFG scale": p.cfg_scale,
        "Seed": seed,
        "Size": f"{p.width}x{p.height}",
        "Model hash": model.info.shorthash if opts.get("add_model_hash_to_info", True) else None,
        "Model": model.info.stem if opts.get("add_model_name_to_info", True) else None,
        "Variation seed": subseed if p.subseed_strength > 0 else None,
        "Variation seed strength": p.subseed_strength if p.subseed_strength > 0 else None,
        "Seed resize from": (f"{p.seed_resize_from_w}x{p.seed_resize_from_h}"
                             if p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0 else None),
        "Denoising strength": p.denoising_for_infotext,
        **mode,
        "Clip skip": p.clip_skip if p.clip_skip > 1 else None,
        "Emphasis": opts.get("emphasis") if opts.get("emphasis") != "Original" else None,
        "Old prompt editing timelines": True if opts.get("use_old_scheduling") else None,
        "TI hashes": (", ".join(f"{e.name}: {e.shorthash}" for e in p.embeddings_used.values()) or None
                      if opts.get("textual_inversion_add_hashes_to_infotext", True) else None),
        **p.network_infotext,
        **{f"ControlNet {i}": v for i, v in enumerate(p.controlnet_infotext)},
        "VAE hash": model.vae_hash if model.vae_file and opts.get("add_vae_hash_to_info", True) else None,
        "VAE": model.vae_file.name if model.vae_file and opts.get("add_vae_name_to_info", True) else None,
        "ENSD": opts.get("eta_noise_seed_delta") or None,
        "RNG": p.rng_infotext,
        "Tiling": True if p.tiling else None,
        "Face restoration": (str(opts.get("face_restoration_model") or "CodeFormer") if p.restore_faces else None),
        "NGMS": p.s_min_uncond if p.s_min_uncond else None,
    }
    sp = sampling_stage.sigma_params(p)
    for key, label, default in (("s_churn", "Sigma churn", 0.0), ("s_tmin", "Sigma tmin", 0.0),
                                ("s_tmax", "Sigma tmax", 0.0), ("s_noise", "Sigma noise", 1.0)):
        if sp[key] != default:
            out[label] = sp[key]
    if p.hr_size:
        if p.hr_resize_x or p.hr_resize_y:
            out["Hires resize"] = f"{p.hr_resize_x}x{p.hr_resize_y}"
        else:
            out["Hires upscale"] = p.hr_scale
        if p.hr_second_pass_steps:
            out["Hires steps"] = p.hr_second_pass_steps
        out["Hires upscaler"] = p.hr_upscaler or "Latent"
        if p.hr_sampler.name != p.sampler.name:
            out["Hires sampler"] = p.hr_sampler.name
        if p.hr_schedule.name != p.schedule.name:
            out["Hires schedule type"] = p.hr_schedule.label
        if p.all_hr_prompts and p.all_hr_prompts[k] != p.all_prompts[k]:
            out["Hires prompt"] = p.all_hr_prompts[k]
        if p.all_hr_negative_prompts and p.all_hr_negative_prompts[k] != p.all_negative_prompts[k]:
            out["Hires negative prompt"] = p.all_hr_negative_prompts[k]
    if k in p.incomplete:  # a stopped picture says so: "Interrupted: at step 3 of 20" or "Skipped: ..."
        why, where = p.incomplete[k]
        out[why] = where
    if opts.get("add_version_to_infotext", True):
        out["Version"] = VERSION
    return out


def create_infotext(p: "Processing", k: int) -> str:
    return infotext_mod.create_infotext(p.all_prompts[k], p.all_negative_prompts[k], params(p, k))


BASE_KEYS = ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Model", "Variation seed",
             "Variation seed strength", "Seed resize from", "Denoising strength", "Clip skip", "Version")


def info_json(p: "Processing", infotexts: list[str]) -> dict[str, Any]:
    """A1111's `Processed.js()` fields."""
    model = p.sd_model
    opts = p.opts
    first = params(p, 0) if p.all_seeds else {}
    return {
        "prompt": p.all_prompts[0] if p.all_prompts else p.prompt, "all_prompts": list(p.all_prompts),
        "negative_prompt": p.all_negative_prompts[0] if p.all_negative_prompts else p.negative_prompt,
        "all_negative_prompts": list(p.all_negative_prompts),
        "seed": p.all_seeds[0] if p.all_seeds else None, "all_seeds": list(p.all_seeds),
        "subseed": p.all_subseeds[0] if p.all_subseeds else None, "all_subseeds": list(p.all_subseeds),
        "subseed_strength": p.subseed_strength, "width": p.width, "height": p.height,
        "sampler_name": p.sampler.name, "cfg_scale": p.cfg_scale, "steps": p.steps,
        "batch_size": p.batch_size, "restore_faces": bool(p.restore_faces),
        "face_restoration_model": str(opts.get("face_restoration_model")) if p.restore_faces else None,
        "sd_model_name": model.info.stem, "sd_model_hash": model.info.shorthash,
        "sd_vae_name": model.vae_file.name if model.vae_file else None,
        "sd_vae_hash": model.vae_hash if model.vae_file else None,
        "seed_resize_from_w": p.seed_resize_from_w, "seed_resize_from_h": p.seed_resize_from_h,
        "denoising_strength": p.denoising_for_infotext,
        "extra_generation_params": {k: v for k, v in first.items() if k not in BASE_KEYS and v is not None},
        "index_of_first_image": 0, "infotexts": list(infotexts),
        "styles": list(p.styles or []), "job_timestamp": p.state.job_timestamp if p.state else "",
        "clip_skip": p.clip_skip, "warnings": list(p.warnings),
        "is_using_inpainting_conditioning": bool(getattr(model.sd, "inpainting", False)),
        "version": VERSION,
        # the serving work's progress routes use it; until then it is echoed (A1111's force_task_id)
        "task_id": p.force_task_id or (p.state.job_id if p.state else None),
    }
