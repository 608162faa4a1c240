"""The loop the embedding and hypernetwork trainers share, as A1111's Train tab runs it.

Per optimizer step: the learning rate from the schedule, ``gradient_step`` micro-batches (each loss
divided by it, gradients summed), gradient clipping by value or norm with its own schedule, one
AdamW step; then the loss CSV row, a snapshot every N steps, a preview every N steps and the
service's pause point.  "Max steps" counts optimizer steps; the trained file stores its step.

Reproducible and resumable: every random draw of step ``s`` (the batch, its prompts and latent
samples via the dataset's BatchIterator; the timesteps and noise; hypernetwork dropout) comes from
a seed derived from (run seed, s), and the run seed defaults to a function of the trained file's
name.  So a run resumed from a file saved at step N (with its ``.optim`` optimizer state) makes
exactly the updates an uninterrupted run makes from N on.

The model's own weights never change: everything is frozen (``requires_grad`` off, eval mode) for
the run and restored afterwards, also on errors.  The trainer-specific parts (what is trained, how
the text conditioning is made, how files are written) come from a ``Trainee``.
"""
from __future__ import annotations

import contextlib
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch
from PIL import Image, PngImagePlugin

from webui.memory.estimates import unet_activation_bytes
from webui.services.jobs import Interrupted, Skipped
from webui.training.dataset import BatchIterator, DatasetLoadInterrupted, TrainingDataset, derive_seed
from webui.training.diffusion_loss import diffusion_loss
from webui.training.logdir import TrainingLogDir
from webui.training.params import CommonTrainParams
from webui.training.run import TrainOutcome, TrainRun
from webui.training.schedule import LearnRateSchedule
from webui.training.templates import load_template

log = logging.getLogger(__name__)

_NOISE, _DROPOUT = 101, 102  # random streams of a step (the dataset uses 1-4)
BACKWARD_FACTOR = 3  # activations kept for backward, over an inference pass (the memory reserve)


class Trainee(Protocol):
    """What a trainer contributes to the shared loop."""
    kind: str                 # "embedding" | "hypernetwork": the log dir layout
    name: str
    step: int                 # steps already trained (read from the file)
    final_path: Path
    snapshot_suffix: str
    grad_through_text: bool   # True: gradients flow through the text encoders (textual inversion)

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def make_optimizer(self) -> torch.optim.Optimizer: ...

    def conditioning(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def step_parts(self) -> list[Any]: ...

    def train_mode(self, on: bool) -> None: ...

    def hidden(self) -> ContextManager[Any]: ...

    def previewing(self) -> ContextManager[Any]: ...

    def save(self, path: Path, step: int, name: str, with_optimizer: torch.optim.Optimizer | None) -> Path: ...

    def after_preview(self, image: Image.Image, infotext: str, step: int, log_dir: TrainingLogDir) -> None: ...

    def settings(self) -> dict[str, Any]: ...


def option(run: TrainRun, key: str, default: Any) -> Any:
    """A setting from ``run.options`` (a Settings object or a plain mapping)."""
    opts = run.options
    if opts is None:
        return default
    try:
        value = opts.get(key)
    except (AttributeError, TypeError):
        value = getattr(opts, key, None)
    return default if value is None else value


def default_seed(name: str) -> int:
    """The run seed when none is given: stable per trained file, so a resume continues the run."""
    return zlib.crc32(name.encode("utf-8"))


def validate(params: CommonTrainParams, save_every: int, name: str, what: str) -> None:
    """A1111's input checks, before anything slow happens."""
    if not name:
        raise ValueError(f"{what} not selected")
    if not isinstance(params.batch_size, int) or params.batch_size < 1:
        raise ValueError(f"batch size must be a positive whole number, not {params.batch_size!r}")
    if not isinstance(params.gradient_step, int) or params.gradient_step < 1:
        raise ValueError(f"gradient accumulation steps must be a positive whole number, not {params.gradient_step!r}")
    if not isinstance(params.steps, int) or params.steps < 1:
        raise ValueError(f"max steps must be a positive whole number, not {params.steps!r}")
    for label, value in (("save a copy every", save_every), ("create an image every", params.create_image_every)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"'{label} N steps' must be a whole number >= 0, not {value!r}")
    if params.clip_grad_mode not in ("disabled", "value", "norm"):
        raise ValueError(f"gradient clipping must be disabled, value or norm, not {params.clip_grad_mode!r}")
    if (save_every or params.create_image_every) and not str(params.log_directory or "").strip():
        raise ValueError("log directory is empty")
    if not str(params.data_root or "").strip():
        raise ValueError("dataset directory is not set")
    if not Path(params.data_root).is_dir():
        raise ValueError(f"dataset directory {params.data_root} does not exist")


@contextlib.contextmanager
def frozen_model(model: Any) -> Iterator[None]:
    """The model's modules in eval mode with ``requires_grad`` off for the block; both restored."""
    sd = model.sd
    modules = [m for m in (sd.unet, sd.vae, *sd.text_encoders) if m is not None]
    modes = [(m, m.training) for m in modules]
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    try:
        refreeze(model)
        yield
    finally:
        for m, training in modes:
            m.train(training)
        for p, flag in flags:
            p.requires_grad_(flag)


def refreeze(model: Any) -> None:
    """Frozen again (after a generation ran in between, for instance)."""
    sd = model.sd
    for m in (sd.unet, sd.vae, *sd.text_encoders):
        if m is not None:
            m.eval().requires_grad_(False)


def _vae_encoder(model: Any) -> Callable[[torch.Tensor], Any]:
    vae = model.sd.vae
    memory = model.memory
    part = memory.part_of(vae) if memory is not None else None

    def encode(pixels: torch.Tensor) -> Any:
        dtype = next(vae.parameters()).dtype
        with memory.use(part) if memory is not None else contextlib.nullcontext():
            dev = next(vae.parameters()).device
            return vae.encode(pixels.to(dev, dtype)).latent_dist
    return encode


def unet_prediction(model: Any, noisy: torch.Tensor, t: torch.Tensor, cross: torch.Tensor,
                    pooled: torch.Tensor | None, width: int, height: int) -> torch.Tensor:
    """The UNet's output for training, conditioned as the sampler conditions it (SDXL: pooled text
    embedding and the size/crop ids, original = target = the training size, crop 0,0)."""
    unet = model.sd.unet
    dtype = next(unet.parameters()).dtype
    kwargs: dict[str, Any] = {}
    if model.sd.family == "sdxl":
        if pooled is None:
            raise ValueError("SDXL conditioning needs the pooled text embedding")
        ids = torch.tensor([height, width, 0, 0, height, width], device=noisy.device, dtype=dtype)
        kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(noisy.device, dtype),
                                       "time_ids": ids.repeat(noisy.shape[0], 1)}
    out = unet(noisy.to(dtype), t, encoder_hidden_states=cross.to(noisy.device, dtype), return_dict=False, **kwargs)
    return out[0].float()


@dataclass
class _Clip:
    fn: Callable[..., Any]
    schedule: LearnRateSchedule


@dataclass
class _State:
    step: int
    loss: float = float("nan")
    lr: float = 0.0
    last_prompt: str = ""
    previews: list[Path] = field(default_factory=list)
    last_snapshot: Path | None = None


def _rng_fork(device: torch.device) -> ContextManager[Any]:
    devices = [device] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def run_training(run: TrainRun, params: CommonTrainParams, trainee: Trainee, *, learn_rate: str, save_every: int,
                 seed: int | None = None) -> TrainOutcome:
    """Train ``trainee`` until ``params.steps`` (or the schedule's end), saving as A1111 does."""
    model, progress = run.model, run.progress
    sd = model.sd
    if getattr(sd, "inpainting", False):
        raise ValueError("training on an inpainting model is not supported: load a regular checkpoint")
    start = trainee.step
    if start >= params.steps:
        raise ValueError(f"Model has already been trained beyond specified max steps: {trainee.name} is at step "
                         f"{start}, max steps is {params.steps}")
    schedule = LearnRateSchedule(learn_rate, params.steps, start)
    clip = None
    if params.clip_grad_mode != "disabled":
        fn = torch.nn.utils.clip_grad_value_ if params.clip_grad_mode == "value" else torch.nn.utils.clip_grad_norm_
        clip = _Clip(fn, LearnRateSchedule(params.clip_grad_value, params.steps, start, what="gradient clip value"))
    template = load_template(params.template_filename, run.paths.data_dir)
    seed = default_seed(trainee.name) if seed is None else int(seed)
    log_root = Path(params.log_directory)
    if not log_root.is_absolute():
        log_root = Path(run.paths.data_dir) / log_root
    logdir = TrainingLogDir.for_run(log_root, trainee.name, trainee.kind)

    progress.textinfo = f"Preparing dataset from {params.data_root}..."
    try:
        dataset = TrainingDataset(
            params.data_root, _vae_encoder(model), width=params.training_width, height=params.training_height,
            varsize=params.varsize, use_weight=params.use_weight, latent_sampling_method=params.latent_sampling_method,
            latent_scale=float(sd.scaling_factor), latent_shift=float(getattr(sd, "shift_factor", 0.0) or 0.0),
            seed=seed, word_regex=str(option(run, "dataset_filename_word_regex", "")),
            join_string=str(option(run, "dataset_filename_join_string", " ")),
            should_stop=lambda: bool(getattr(progress, "interrupted", False)))
    except DatasetLoadInterrupted:
        return TrainOutcome(trainee.final_path, start, interrupted=True, log_dir=logdir.root,
                            message="Interrupted while preparing the dataset; nothing was trained.")
    it = BatchIterator(dataset, batch_size=params.batch_size, gradient_step=params.gradient_step, seed=seed,
                       repeats=int(option(run, "training_image_repeats_per_epoch", 1)), template=template,
                       name=trainee.name, shuffle_tags=params.shuffle_tags, tag_drop_out=params.tag_drop_out)
    it.seek_step(start)
    with_image_embeddings = (trainee.kind == "embedding" and params.create_image_every > 0
                             and bool(getattr(params, "save_image_with_stored_embedding", False)))
    logdir.create(snapshots=save_every > 0, images=params.create_image_every > 0,
                  image_embeddings=with_image_embeddings)
    if option(run, "save_training_settings_to_txt", True):
        logdir.save_settings({"model_name": model.info.model_name, "model_hash": model.info.shorthash,
                              "num_of_dataset_images": len(dataset), "seed": seed, **trainee.settings(),
                              **params.as_dict()})
    csv = logdir.loss_writer(int(option(run, "training_write_csv_every", 500)))
    save_optim = bool(option(run, "save_optimizer_state", False))
    log.info("Training %s %s from step %d to %d on %d images (%s)", trainee.kind, trainee.name, start,
             schedule.end_step, len(dataset), schedule.describe())

    state = _State(start)
    interrupted = False
    progress.sampling_steps = params.steps
    progress.sampling_step = start
    t0 = time.perf_counter()
    with frozen_model(model):
        trainee.train_mode(True)
        optimizer = trainee.make_optimizer()
        # half-precision UNets on CUDA: scale the loss so small gradients survive fp16 (A1111 does too)
        half = next(sd.unet.parameters()).dtype == torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=half and torch.device(model.policy.device).type == "cuda")
        try:
            while state.step < schedule.end_step:
                progress.check()
                _one_step(run, trainee, it, optimizer, scaler, schedule, clip, state, seed)
                steps_done = state.step - start
                rate = steps_done / max(1e-9, time.perf_counter() - t0)
                progress.sampling_step = state.step
                progress.textinfo = (f"[{trainee.name}] step {state.step}, loss {state.loss:.7f}, "
                                     f"lr {state.lr:g}, {rate:.2f} it/s")
                csv.write(state.step, it.steps_per_epoch, state.loss, state.lr)
                if save_every and state.step % save_every == 0:
                    snap = logdir.snapshot_path(state.step, trainee.snapshot_suffix)
                    state.last_snapshot = trainee.save(snap, state.step, f"{trainee.name}-{state.step}",
                                                       optimizer if save_optim else None)
                if params.create_image_every and state.step % params.create_image_every == 0:
                    _preview(run, params, trainee, state, logdir)
                run.pause_point(trainee.hidden)
        except (Interrupted, Skipped):
            interrupted = True
            log.info("Training %s interrupted at step %d", trainee.name, state.step)
        finally:
            trainee.train_mode(False)
        path = trainee.save(trainee.final_path, state.step, trainee.name, optimizer if save_optim else None)
    progress.sampling_step = state.step
    return TrainOutcome(path, state.step, interrupted, log_dir=logdir.root,
                        loss_csv=logdir.loss_csv if logdir.loss_csv.exists() else None, previews=state.previews,
                        message=f"Last loss: {state.loss:.7f}" if state.step > start else "")


def _one_step(run: TrainRun, trainee: Trainee, it: BatchIterator, optimizer: torch.optim.Optimizer,
              scaler: torch.amp.GradScaler, schedule: LearnRateSchedule, clip: _Clip | None, state: _State,
              seed: int) -> None:
    model = run.model
    memory = model.memory
    device = torch.device(model.policy.device)
    step = state.step
    state.lr = schedule.apply(optimizer, step)
    total = 0.0
    for micro in range(it.gradient_step):
        batch = it.next_batch()
        state.last_prompt = batch.prompts[0]
        latents = batch.latents.to(device, torch.float32)
        weights = batch.weights.to(device) if batch.weights is not None else None
        b, _, h, w = latents.shape
        scale = int(getattr(model.sd, "vae_scale_factor", 8))
        act = BACKWARD_FACTOR * unet_activation_bytes(b, w * scale, h * scale, 4, model.sd.family)
        with _rng_fork(device):
            torch.manual_seed(derive_seed(seed, _DROPOUT, step, micro))
            if not trainee.grad_through_text:  # frozen text: encoded (and cached) before the UNet is placed
                cross, pooled = trainee.conditioning(batch.prompts)
            parts = [p for p in trainee.step_parts() if p is not None]
            with memory.use(*parts, activations=act) if memory is not None else contextlib.nullcontext():
                if trainee.grad_through_text:  # the text encoders stay resident through backward
                    cross, pooled = trainee.conditioning(batch.prompts)
                gen = torch.Generator(device=device).manual_seed(derive_seed(seed, _NOISE, step, micro))
                loss = diffusion_loss(
                    lambda noisy, t: unet_prediction(model, noisy, t, cross, pooled, w * scale, h * scale),
                    latents, model.sd.alphas_cumprod.to(device, torch.float32), gen,
                    prediction=model.sd.prediction_type, weight=weights) / it.gradient_step
                scaler.scale(loss).backward()
        total += float(loss.detach())
    if not torch.isfinite(torch.tensor(total)):
        raise FloatingPointError(f"the loss became {total} at step {step + 1}: lower the learning rate")
    scaler.unscale_(optimizer)  # clipping sees the true gradients
    if clip is not None:
        clip.fn(trainee.parameters(), clip.schedule.rate_at(step))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    state.step = step + 1
    trainee.step = state.step
    state.loss = total


def _preview(run: TrainRun, params: CommonTrainParams, trainee: Trainee, state: _State,
             logdir: TrainingLogDir) -> None:
    """A txt2img image with the trained thing active: the txt2img tab's parameters when asked,
    else the last training prompt at the training size (A1111's choice)."""
    if run.preview is None:
        log.info("no preview function: skipping the preview at step %d", state.step)
        return
    if params.preview_from_txt2img:
        args = dict(prompt=params.preview_prompt, negative_prompt=params.preview_negative_prompt,
                    steps=params.preview_steps, sampler_name=params.preview_sampler_name,
                    cfg_scale=params.preview_cfg_scale, seed=params.preview_seed, width=params.preview_width,
                    height=params.preview_height)
    else:
        args = dict(prompt=state.last_prompt, negative_prompt="", steps=20, sampler_name=params.preview_sampler_name,
                    cfg_scale=7.0, seed=-1, width=params.training_width, height=params.training_height)
    trainee.train_mode(False)
    try:
        with torch.no_grad(), trainee.previewing():
            image, infotext = run.preview(**args)
    finally:
        refreeze(run.model)
        trainee.train_mode(True)
    path = logdir.image_path(state.step)
    info = PngImagePlugin.PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", pnginfo=info)
    state.previews.append(path)
    run.progress.current_image = image
    if hasattr(run.progress, "current_image_step"):
        run.progress.current_image_step = state.step
    trainee.after_preview(image, infotext, state.step, logdir)
