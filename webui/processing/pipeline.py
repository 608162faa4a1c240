"""The generation pipeline: `process_images(p)` runs a `Processing` through its stages, calling the
scripts' hooks in A1111's order (see `scripts.py`). txt2img and img2img are the same path; img2img
adds its preparation, its noised start and the overlay (`img2img_stage`).

`Pipeline` is the app's one object that knows the models, the settings and the output folders;
everything a job changes lives on its `Processing`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from PIL import Image

from webui.engine import vae as vae_ops
from webui.engine.loop import StepReport, StopSampling
from webui.engine.seamless import seamless
from webui.memory.attention import attention_context
from webui.processing import checkpoints_stage, checks, img2img_stage, infotext_stage, output_stage, prompts_stage, sampling_stage
from webui.processing.callbacks import Callbacks
from webui.processing.context import Processed, Processing, ProcessingImg2Img
from webui.processing.errors import GenerationError, shape_mismatch_error
from webui.processing.options import OptionsSnapshot
from webui.processing.requests import IMAGE_UPSCALERS, Img2ImgRequest, Txt2ImgRequest
from webui.processing.scripts import PostSampleArgs, ScriptCatalog, ScriptRunner

if TYPE_CHECKING:
    from webui.prompts.styles import StyleDatabase
    from webui.services.jobs import JobState
    from webui.services.model_service import ModelService
    from webui.settings import Settings

log = logging.getLogger(__name__)
Upscale = Callable[[Image.Image, str, float], Image.Image]


@dataclass
class Pipeline:
    models: "ModelService"
    settings: "Settings"
    outputs_dir: Path
    styles: "StyleDatabase | None" = None
    upscale: Upscale | None = None            # model upscalers for hires fix (the Extras registry)
    upscaler_names: Callable[[], list[str]] | None = None
    scripts: ScriptCatalog = field(default_factory=lambda: ScriptCatalog(ScriptRunner(False), ScriptRunner(True)))
    callbacks: Callbacks = field(default_factory=Callbacks)
    faces: Any = None                          # face restoration (`restore(img, name, weight)`)

    def image_upscalers(self) -> list[str]:
        names = list(IMAGE_UPSCALERS)
        if self.upscaler_names is not None:
            names += [n for n in self.upscaler_names() if n not in names]
        return names

    # ---- building and checking a job ----
    def new_processing(self, req: Txt2ImgRequest, *, save: bool = True) -> Processing:
        p: Processing = ProcessingImg2Img(req, save=save) if isinstance(req, Img2ImgRequest) else Processing(req, save=save)
        p.pipeline = self
        return p

    def validate(self, req: Txt2ImgRequest) -> None:
        """Fail before queueing: numbers, sampler names, hires, img2img inputs, script names."""
        p = self.new_processing(req, save=False)
        self._check(p)
        self.scripts.runner(p.is_img2img).check_request(p.script_name, p.alwayson_scripts)

    def _check(self, p: Processing) -> None:
        if p.is_img2img:
            img2img_stage.check(p)  # type: ignore[arg-type]
            p.enable_hr = False  # hires fix is txt2img's; A1111 ignores it for img2img
        checks.check(p, self.image_upscalers())
        checkpoints_stage.check(p)
        if p.is_img2img and p.image_cfg_scale is not None and float(p.image_cfg_scale) != 1.5:
            # A1111's UI and webuiapi send 1.5 whatever the model; it only means something to
            # instruct-pix2pix models, which this app does not load
            raise GenerationError("image_cfg_scale is used only by instruct-pix2pix models, which this app does "
                                  "not load; leave it out (or at 1.5, the value clients send by default)")

    # ---- the job ----
    def run(self, req: Txt2ImgRequest, state: "JobState", *, save: bool) -> Processed:
        """One queued job: scripts bound and set up, then the selected script's run() or the pipeline."""
        p = self.new_processing(req, save=save)
        p.state = state
        self._check(p)
        p.scripts = self.scripts.runner(p.is_img2img).bind(p)
        p.opts = OptionsSnapshot.take(self.settings, p.override_settings)  # scripts read options before running
        p.scripts.setup(p)
        processed = p.scripts.run(p)
        if processed is None:
            processed = process_images(p)
        return processed


def process_images(p: Processing) -> Processed:
    """A1111's process_images: before_process, the job's options and model, then the stages."""
    pipeline = p.pipeline
    assert pipeline is not None, "a Processing is made by Pipeline.new_processing"
    if p.scripts is not None:
        p.scripts.before_process(p)
    models = pipeline.models
    p.opts = OptionsSnapshot.take(pipeline.settings, p.override_settings)
    wanted = p.override_settings.get("sd_model_checkpoint") if p.override_settings else None
    previous = models.current.info.title if (wanted and models.current is not None) else None
    from webui.networks.controlnet_units import ControlNetError
    from webui.engine.memory_stages import OutOfDeviceMemory
    from webui.services.model_service import ModelLoadError
    try:
        if wanted and (models.current is None or models.resolve(str(wanted)).title != models.current.info.title):
            models.load(str(wanted))
        p.sd_model = models.require()
        models.ensure_vae(p.sd_model, str(p.opt("sd_vae") or "Automatic"))
        return _process_inner(p)
    except (ModelLoadError, ControlNetError, OutOfDeviceMemory) as e:
        raise GenerationError(str(e)) from None
    except RuntimeError as e:  # a shape mismatch left in the file is the user's to fix: a 4xx naming it
        info = getattr(getattr(p, "sd_model", None), "info", None)
        path = getattr(info, "path", None)
        err = shape_mismatch_error(Path(path).name if path else "the checkpoint", e)
        if err is None:
            raise
        log.warning("generation failed on %s: %s", path, e)
        raise err from None
    finally:
        if previous and p.override_settings_restore_afterwards and (
                models.current is None or models.current.info.title != previous):
            try:
                models.load(previous)
            except ModelLoadError as e:
                log.warning("could not restore checkpoint %s after the job: %s", previous, e)


def _on_step(p: Processing, state: "JobState", cut: dict[str, Any]) -> Callable[[StepReport], None]:
    """``cut`` records where sampling was stopped early (interrupt or skip): "at" = (step, total)."""
    sd = p.sd_model.sd
    interrupt_after_current = bool(p.opt("interrupt_after_current")) and p.n_images > 1
    every = int(p.opt("show_progress_every_n_steps"))
    previews = bool(p.opt("live_previews_enable")) and every > 0

    def on_step(r: StepReport) -> None:
        state.sampling_step = r.step + 1
        state.sampling_steps = r.total
        if previews and (r.step + 1) % every == 0:
            state.current_image = vae_ops.cheap_preview(r.denoised, sd.family)
            state.current_image_step = r.step + 1
        if state.interrupted and (not interrupt_after_current or state.stop_now):
            cut["at"] = (r.step + 1, r.total)
            cut["why"] = "Interrupted"
            raise StopSampling()
        if state.skipped:
            state.skipped = False
            cut["at"] = (r.step + 1, r.total)
            cut["why"] = "Skipped"
            raise StopSampling()
    return on_step


def _process_inner(p: Processing) -> Processed:
    pipeline = p.pipeline
    model = p.sd_model
    state = p.state
    if state is None:
        from webui.services.jobs import JobState
        state = p.state = JobState(job_id="inline", label=p.mode)
    if p.width is None or p.height is None:
        p.width, p.height = p.width or model.sd.default_size, p.height or model.sd.default_size
    pipeline._check(p)
    p.clip_skip = int(p.opt("CLIP_stop_at_last_layers"))
    if p.restore_faces is None:
        p.restore_faces = bool(p.opt("face_restoration"))
    p.tiling = bool(p.opt("tiling")) if p.tiling is None else bool(p.tiling)  # A1111: None = the option
    if p.s_min_uncond is None:
        p.s_min_uncond = float(p.opt("s_min_uncond") or 0.0)
    model.memory.take_notes()  # notes of earlier work are not this job's

    if p.is_img2img and len(p.init_images) > 1:
        p.batch_size = len(p.init_images)  # several input pictures are one batch (A1111)
    # stage 1: the per-image lists, then the scripts' process (they may change the lists)
    prompts_stage.setup_prompts(p, pipeline.styles)
    prompts_stage.setup_seeds(p)
    if model.encoder.embeddings is not None:
        model.encoder.embeddings.refresh_if_changed()  # files dropped in since the last job
    if p.scripts is not None:
        p.scripts.process(p)

    hires = p.hr_size is not None
    state.job_count = p.n_iter * (2 if hires else 1)
    state.textinfo = "Sampling"
    images: list[Image.Image] = []
    infotexts: list[str] = []
    paths: list[Path] = []
    stop_all = False
    cut: dict[str, Any] = {}
    on_step = _on_step(p, state, cut)
    latent_ch = getattr(model.sd, "latent_channels", 4)
    vsf = getattr(model.sd, "vae_scale_factor", 8)
    with torch.inference_mode(), model.policy.autocast_context(), attention_context(model.attention), \
            seamless(model.sd.unet, model.sd.vae, enabled=p.tiling):
        if p.is_img2img:
            p.prep = img2img_stage.prepare(p)  # type: ignore[arg-type]
        for n in range(p.n_iter):
            if stop_all or state.interrupted:
                break
            state.job_no = n * (2 if hires else 1)
            prompts_stage.set_batch(p, n)
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds,
                                               subseeds=p.subseeds)
            if not p.prompts:
                break
            checkpoints_stage.back_to_main(p)  # a refiner or hires checkpoint of the last batch
            prompts, hr_prompts = prompts_stage.parse_extra_networks(p)
            p.cond_prompts, p.cond_hr_prompts = prompts, hr_prompts
            # A1111's disable_extra_networks: the tags are still taken out of the prompt, but not loaded
            report = pipeline.models.activate_networks(model, {} if p.disable_extra_networks else p.extra_network_data)
            for w in report.warnings:
                p.warn(w)
            p.network_infotext = dict(report.infotext)
            if p.scripts is not None:
                kw = dict(batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
                p.scripts.after_extra_networks_activate(p, extra_network_data=p.extra_network_data, **kw)
                p.scripts.process_batch(p, **kw)

            # stages 2-4: conditioning, sampling, hires
            cut.pop("at", None)
            cut.pop("why", None)
            conds = sampling_stage.conditioning(p, prompts, p.negative_prompts)
            shape = (latent_ch, p.height // vsf, p.width // vsf)
            noise = sampling_stage.noise_source(p, shape, p.seeds, p.subseeds)
            if p.is_img2img:
                latents = img2img_stage.sample(p, conds, noise, on_step)  # type: ignore[arg-type]
            else:
                latents = sampling_stage.sample_txt2img(p, conds, noise, on_step)
            if state.interrupted:
                stop_all = True
            if hires and not stop_all:
                state.job_no += 1
                state.textinfo = "Hires fix"
                if p.scripts is not None:
                    p.scripts.before_hr(p)
                latents = sampling_stage.sample_hires(p, latents, hr_prompts, p.hr_negative_prompts, on_step)
                if state.interrupted:
                    stop_all = True
            if p.scripts is not None:
                ps = PostSampleArgs(latents)
                p.scripts.post_sample(p, ps)
                latents = ps.samples

            # stages 5-7: decode, per-image post-processing, save
            decoded = output_stage.decode(p, latents)
            batch = output_stage.batch_images(p, decoded, n)
            for j, item in enumerate(batch):
                p.batch_index = j
                k = min(n * p.batch_size + j, len(p.all_seeds) - 1)
                img = output_stage.postprocess_image(p, output_stage.to_pil(item))
                if p.is_img2img and j < p.batch_size:
                    img = img2img_stage.finish_image(p, img, k)  # type: ignore[arg-type]
                if "at" in cut:  # stopped in mid-sampling: the picture is labelled so (and not saved)
                    p.incomplete[k] = (cut.get("why", "Interrupted"), "at step {} of {}".format(*cut["at"]))
                text = infotext_stage.create_infotext(p, k)
                images.append(img)
                infotexts.append(text)
                if p.opt("samples_log_stdout"):
                    log.info("%s", text)
                if p.opt("samples_save") and not p.do_not_save_samples and (
                        k not in p.incomplete or p.opt("save_incomplete_images")):
                    paths.append(output_stage.save(p, img, text, p.all_seeds[k]))
            state.sampling_step = 0
    state.job_no = state.job_count
    checkpoints_stage.back_to_main(p)

    # stage 8: the grid (shown and returned first when there are several images)
    grids: list[Image.Image] = []
    grid_texts: list[str] = []
    grid_path = None
    if len(images) > 1 or (images and not p.opt("grid_only_if_multiple")):
        grid = output_stage.make_grid(p, images)
        text = infotext_stage.create_infotext(p, 0)
        grids, grid_texts = [grid], [text]
        if p.opt("grid_save") and not p.do_not_save_grid:
            grid_path = output_stage.save(p, grid, text, p.all_seeds[0], grid=True)
    for w in model.memory.take_notes():  # fallbacks the memory manager took (OOM, NaN VAE)
        p.warn(w)
    info = infotext_stage.info_json(p, infotexts)
    info["index_of_first_image"] = len(grids)
    processed = Processed(images, infotexts, info, paths, grids, grid_texts, grid_path)
    if p.scripts is not None:
        p.scripts.postprocess(p, processed)
        processed.info["warnings"] = list(p.warnings)
    return processed
