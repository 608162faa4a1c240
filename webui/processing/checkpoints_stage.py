"""Checkpoints a job switches to on its way: the hires pass's own checkpoint (`hr_checkpoint_name`)
and the refiner (`refiner_checkpoint` + `refiner_switch_at`), which takes over the same sampling for
its remaining steps (A1111's apply_refiner: the sampler keeps its state, the denoiser gets the second
model's UNet and conditioning).

The main model stays `p.sd_model` (its name and hash are the infotext's "Model"); each batch starts
on it again and the job ends on it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from webui.processing.errors import GenerationError

if TYPE_CHECKING:
    from webui.engine.denoiser import CFGDenoiser, DenoiserCall
    from webui.processing.context import Processing
    from webui.services.model_service import LoadedModel

NONE_NAMES = (None, "", "None", "none", "Use same checkpoint")
DEFAULT_SWITCH_AT = 0.8  # A1111's UI default for "Switch at"


def short_title(model: "LoadedModel") -> str:
    """A1111's CheckpointInfo.short_title: `name [hash]`."""
    return f"{model.info.stem} [{model.info.shorthash}]"


def check(p: "Processing") -> None:
    """Named checkpoints must exist and be usable before the job is queued."""
    models = p.pipeline.models
    for field in ("refiner_checkpoint", "hr_checkpoint_name"):
        name = getattr(p, field, None)
        if name in NONE_NAMES:
            continue
        try:
            info = models.resolve(str(name))
        except Exception:  # noqa: BLE001 - ModelLoadError / KeyError: not found
            raise GenerationError(f"{field}: checkpoint {name!r} not found") from None
        if info.error:
            raise GenerationError(f"{field}: {info.name} is unusable: {info.error}")
    if p.refiner_switch_at is not None and not 0.0 <= float(p.refiner_switch_at) <= 1.0:
        raise GenerationError(f"refiner_switch_at must be between 0 and 1, got {p.refiner_switch_at}")


def use(p: "Processing", name: str) -> "LoadedModel":
    """The named checkpoint loaded (with the job's VAE choice and extra networks)."""
    models = p.pipeline.models
    info = models.resolve(name)
    cur = models.current
    if cur is None or cur.info.path != info.path:
        cur = models.load(name)
        models.ensure_vae(cur, str(p.opt("sd_vae") or "Automatic"))
        if not p.disable_extra_networks:
            models.activate_networks(cur, p.extra_network_data)
    main = p.sd_model
    if getattr(cur.sd, "latent_channels", 4) != getattr(main.sd, "latent_channels", 4) or \
            (cur.sd.family == "sdxl") != (main.sd.family == "sdxl"):
        raise GenerationError(f"{cur.info.name} ({cur.sd.family}) cannot continue the latents of "
                              f"{main.info.name} ({main.sd.family})")
    return cur


def back_to_main(p: "Processing") -> None:
    """Each batch (and the end of the job) is on the main model again."""
    models = p.pipeline.models
    main = p.sd_model
    cur = models.current
    if main is None or (cur is not None and cur.info.path == main.info.path):
        if cur is not None and cur is not main:
            p.sd_model = cur  # reloaded since: the same file, a new object
        return
    p.sd_model = models.load(main.info.title)
    models.ensure_vae(p.sd_model, str(p.opt("sd_vae") or "Automatic"))
    if not p.disable_extra_networks:
        models.activate_networks(p.sd_model, p.extra_network_data)


def hires_model(p: "Processing") -> "LoadedModel":
    if p.hr_checkpoint_name in NONE_NAMES:
        return p.pipeline.models.current or p.sd_model
    m = use(p, str(p.hr_checkpoint_name))
    p.extra_generation_params["Hires checkpoint"] = short_title(m)
    return m


def refiner_setup(p: "Processing", rebuild_conds: Callable[["LoadedModel"], Any]) -> Callable[["CFGDenoiser"], None] | None:
    """A denoiser setup that switches to the refiner once the step's completed ratio reaches
    `refiner_switch_at` (ratio from the sigma's timestep, as A1111: (999 - t) / 1000)."""
    if p.refiner_checkpoint in NONE_NAMES:
        return None
    switch_at = DEFAULT_SWITCH_AT if p.refiner_switch_at is None else float(p.refiner_switch_at)

    def setup(d: "CFGDenoiser") -> None:
        done = {"switched": False}

        def before(call: "DenoiserCall") -> None:
            if done["switched"]:
                return
            t = float(d.schedule.sigma_to_t(call.sigma.max().float().reshape(1)).reshape(-1)[0])
            if (999 - round(t)) / 1000 < switch_at:
                return
            ref = use(p, str(p.refiner_checkpoint))
            d.unet, d.schedule = ref.sd.unet, ref.schedule
            d.prediction_type, d.family = ref.sd.prediction_type, ref.sd.family
            d.conds = rebuild_conds(ref)
            sc = d.conds.at(d.step)
            call.cond, call.uncond, call.parts = sc.cond, sc.uncond, sc.parts
            p.extra_generation_params["Refiner"] = short_title(ref)
            p.extra_generation_params["Refiner switch at"] = switch_at
            done["switched"] = True
        # first, so the scripts' hooks see the refiner's conditioning on the switching step
        d.before_hooks.insert(0, before)
    return setup
