"""Training runs as queue jobs: checking a request before it is queued, building the `TrainRun` a
trainer gets (model, options, paths, progress, previews, pause points) and refreshing the network
lists afterwards.

A training job holds the queue for minutes or hours, so it yields: at every pause point the
generation jobs waiting behind it run in its worker thread (`JobQueue.run_waiting_inline`) while
the trainer's `hidden()` keeps the weights being trained out of the model. A job that is not a
generation (a checkpoint load, a merge) waits for the run to end, and so does everything queued
after it: the queue's order never changes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, ContextManager

from PIL import Image

from webui.memory.estimates import MB, training_activation_bytes
from webui.networks.embeddings import EMBEDDING_SUFFIXES
from webui.services.jobs import SERVER_OWNER, Job, JobQueue, JobState
from webui.services.limits import TRAINING_AT_ONCE, LimitError, limit_value
from webui.training.params import (CommonTrainParams, EmbeddingTrainParams, HypernetworkTrainParams,
                                   LoraTrainParams)
from webui.training.run import TrainOutcome, TrainPaths, TrainRun
from webui.training.schedule import parse_schedule
from webui.training.templates import find_template

log = logging.getLogger(__name__)

# Jobs a training run lets through at its pause points: the ones that only generate with the
# loaded model (labels "txt2img", "txt2img (api)", "img2img batch", "extras", ...).
GENERATION_LABELS = ("txt2img", "img2img", "extras")
CLIP_GRAD_MODES = ("disabled", "value", "norm")
LATENT_SAMPLING = ("once", "deterministic", "random")
LORA_TARGETS = ("transformer", "attention", "locon")
LORA_OPTIMIZERS = ("AdamW", "AdamW8bit")
MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_PRECISION = ("fp16", "float", "bf16")
MAX_SIDE = 2048


class TrainInputNotFound(ValueError):
    """A named thing the run needs does not exist (dataset folder, embedding, hypernetwork): 404."""


class TrainDoesNotFit(ValueError):
    """The run's estimated memory exceeds what the device can give (413 in the API)."""


def is_generation(state: JobState) -> bool:
    return state.label.split(" ", 1)[0] in GENERATION_LABELS


@dataclass
class TrainContext:
    """What the plumbing needs from the app (the service passes its own objects)."""
    models: Any        # ModelService
    queue: JobQueue
    settings: Any      # Settings
    memory: Any        # MemoryManager (None: no check)
    pipeline: Any      # Pipeline, for previews (None: no previews)
    paths: TrainPaths
    # where a request may name dataset and log folders (serving.path_guard: confined to the data dir
    # and --allowed-path folders when the server is reachable from the network; None: anywhere)
    path_guard: Any = None


# ------------------------------------------------------------------------------------- checks

def _int_at_least(value: Any, low: int, what: str, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{what} must be {span}, not {int(value)}")
    return int(value)


def _number_in(value: Any, low: float, high: float | None, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{what} must be a number, not {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{what} must be from {low} to {high}" if high is not None else
                         f"{what} must be at least {low}, not {value}")
    return float(value)


def _one_of(value: Any, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}")
    return str(value)


def check_dataset(data_root: str) -> Path:
    """The folder exists (else TrainInputNotFound) and holds at least one file that opens as an image."""
    if not str(data_root or "").strip():
        raise ValueError("dataset directory is not set")
    root = Path(str(data_root)).expanduser()
    if not root.is_dir():
        raise TrainInputNotFound(f"dataset directory {root} does not exist on the server")
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix.lower() != ".txt":
            try:
                with Image.open(path):
                    return root  # the header is enough here; the trainer decodes every file
            except Exception:  # noqa: BLE001 - not an image: the trainer skips it too
                continue
    raise ValueError(f"dataset directory {root} has no images")


def check_confined(p: CommonTrainParams, data_dir: Path, guard: Any) -> None:
    """A server reachable from the network reads and writes only inside its data dir (and the
    --allowed-path folders): a request must not train on (read) or log to (write) any folder of the
    machine. The dataset is opened relative to the working dir, the log folder to the data dir."""
    if guard is None:
        return
    guard.check(str(p.data_root or ""), "dataset directory")
    guard.check(str(p.log_directory or ""), "log directory", base=data_dir)


def check_common(p: CommonTrainParams, data_dir: Path, lr: str, guard: Any = None) -> None:
    """The fields every trainer shares, in the order the tab shows them."""
    check_confined(p, data_dir, guard)
    parse_schedule(lr, "learning rate")
    _one_of(p.clip_grad_mode, CLIP_GRAD_MODES, "gradient clipping")
    if p.clip_grad_mode != "disabled":
        parse_schedule(p.clip_grad_value, "gradient clipping value")
    _int_at_least(p.batch_size, 1, "batch size")
    _int_at_least(p.gradient_step, 1, "gradient accumulation steps")
    _int_at_least(p.steps, 1, "max steps")
    for side, what in ((p.training_width, "width"), (p.training_height, "height")):
        if _int_at_least(side, 64, what, MAX_SIDE) % 8:
            raise ValueError(f"{what} must be a multiple of 8, not {side}")
    _number_in(p.tag_drop_out, 0.0, 1.0, "tag dropout")
    _one_of(p.latent_sampling_method, LATENT_SAMPLING, "latent sampling method")
    _int_at_least(p.create_image_every, 0, "save an image every N steps")
    if not str(p.log_directory or "").strip():
        raise ValueError("log directory is not set")
    find_template(p.template_filename, data_dir)
    _int_at_least(p.preview_steps, 1, "preview steps", 150)
    _number_in(p.preview_cfg_scale, 1.0, 30.0, "preview CFG scale")
    for side, what in ((p.preview_width, "preview width"), (p.preview_height, "preview height")):
        _int_at_least(side, 64, what, MAX_SIDE)
    check_dataset(p.data_root)


def embedding_file(folder: Path, name: str) -> Path:
    """The embedding file named `name` in `folder` (subfolders too, as the loader scans them)."""
    if not str(name or "").strip():
        raise ValueError("choose an embedding to train")
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.stem == name and path.suffix.lower() in EMBEDDING_SUFFIXES and path.is_file():
                return path
    raise TrainInputNotFound(f"embedding '{name}' not found in {folder} (create it first)")


def check_embedding(ctx: TrainContext, p: EmbeddingTrainParams) -> None:
    embedding_file(ctx.paths.embeddings_dir, p.embedding_name)
    check_common(p, ctx.paths.data_dir, p.learn_rate, ctx.path_guard)
    _int_at_least(p.save_embedding_every, 0, "save a copy of the embedding every N steps")


def check_hypernetwork(ctx: TrainContext, p: HypernetworkTrainParams) -> None:
    if not str(p.hypernetwork_name or "").strip():
        raise ValueError("choose a hypernetwork to train")
    ctx.models.hypernetworks.refresh()
    if p.hypernetwork_name not in ctx.models.hypernetworks.files:
        raise TrainInputNotFound(f"hypernetwork '{p.hypernetwork_name}' not found in {ctx.paths.hypernetwork_dir} "
                                 "(create it first)")
    check_common(p, ctx.paths.data_dir, p.learn_rate, ctx.path_guard)
    _int_at_least(p.save_hypernetwork_every, 0, "save a copy of the hypernetwork every N steps")


def check_lora(ctx: TrainContext, p: LoraTrainParams) -> LoraTrainParams:
    """Checks, and returns the params with the name as it will be written (A1111's file-name rule)."""
    from dataclasses import replace

    from webui.training.embedding_files import sanitize_name
    clean = sanitize_name(p.name)
    check_common(p, ctx.paths.data_dir, p.learn_rate, ctx.path_guard)
    _int_at_least(p.network_dim, 1, "network dim", 1024)
    _number_in(p.network_alpha, 0.0, None, "network alpha")
    if p.conv_dim is not None:
        _int_at_least(p.conv_dim, 1, "conv dim", 1024)
    if p.conv_alpha is not None:
        _number_in(p.conv_alpha, 0.0, None, "conv alpha")
    _one_of(p.network_target, LORA_TARGETS, "network target")
    _number_in(p.text_encoder_lr, 0.0, None, "text encoder learning rate")
    _int_at_least(p.lr_warmup_steps, 0, "warm-up steps")
    _one_of(p.optimizer_type, LORA_OPTIMIZERS, "optimizer")
    _number_in(p.max_grad_norm, 0.0, None, "max grad norm")
    _one_of(p.mixed_precision, MIXED_PRECISION, "mixed precision")
    _one_of(p.save_precision, SAVE_PRECISION, "save precision")
    _number_in(p.noise_offset, 0.0, 1.0, "noise offset")
    _number_in(p.min_snr_gamma, 0.0, None, "min-SNR gamma")
    _int_at_least(p.save_every, 0, "save every N steps")
    _int_at_least(p.preview_every, 0, "preview every N steps")
    _int_at_least(p.seed, -1, "seed")
    return replace(p, name=clean)


def check_memory(ctx: TrainContext, model: Any, p: CommonTrainParams, gradient_checkpointing: bool = False) -> None:
    """Refuse a run whose activations (plus the weights that must stay on the device) cannot fit.
    Under lowvram the UNet streams, so only the activations count."""
    memory = ctx.memory
    if memory is None or not memory.placing:
        return
    unet = getattr(model.sd, "unet", None)
    dtype_size = next(unet.parameters()).element_size() if unet is not None else 2
    channels = getattr(getattr(unet, "config", None), "block_out_channels", None) or (320,)
    need = training_activation_bytes(p.batch_size, p.training_width, p.training_height, dtype_size,
                                     model.sd.family, gradient_checkpointing, int(channels[0]))
    parts = model.parts() if hasattr(model, "parts") else []
    resident = 0 if memory.mode == "lowvram" else max(
        (part.nbytes for part in parts if part.kind in ("unet", "text_encoder")), default=0)
    fits, room = memory.training_room(need, resident)
    if not fits:
        raise TrainDoesNotFit(
            f"training needs about {(need + resident) / MB:.0f} MB on the device (activations for batch "
            f"{p.batch_size} at {p.training_width}x{p.training_height}: {need / MB:.0f} MB) and "
            f"{max(0, room) / MB:.0f} MB can be freed; lower the batch size or the size"
            + (", turn on gradient checkpointing" if not gradient_checkpointing and isinstance(p, LoraTrainParams)
               else "") + (", or start with --lowvram" if memory.mode != "lowvram" else ""))


# ------------------------------------------------------------------------------------- the job

def make_preview(ctx: TrainContext, state: JobState) -> Callable[..., tuple[Image.Image, str]] | None:
    """One txt2img image through the real pipeline, inside the running job (no queueing, nothing
    saved to the outputs); its own JobState, so the training's step counter stays as it is."""
    if ctx.pipeline is None:
        return None

    def preview(prompt: str, negative_prompt: str = "", steps: int = 20, sampler_name: str = "Euler a",
                cfg_scale: float = 7.0, seed: int = -1, width: int = 512, height: int = 512) -> tuple[Image.Image, str]:
        from webui.processing.requests import Txt2ImgRequest
        req = Txt2ImgRequest(prompt=prompt, negative_prompt=negative_prompt, steps=int(steps),
                             sampler_name=sampler_name, cfg_scale=float(cfg_scale), seed=int(seed), width=int(width),
                             height=int(height), do_not_save_samples=True, do_not_save_grid=True)
        sub = JobState(job_id=f"{state.job_id}-preview", label="training preview")
        try:
            processed = ctx.pipeline.run(req, sub, save=False)
        finally:
            clear_networks(ctx)  # a <lora:...> in the preview prompt must not stay in the trained model
        image = processed.images[0]
        state.current_image = image
        return image, processed.infotexts[0] if processed.infotexts else ""

    return preview


def make_pause_point(ctx: TrainContext, state: JobState) -> Callable[[Callable[[], ContextManager[Any]]], None]:
    def pause_point(hidden: Callable[[], ContextManager[Any]]) -> None:
        head = ctx.queue.head()
        if head is None or not is_generation(head):
            return  # the usual case: nothing waits, so the trained weights stay where they are
        saved = (state.textinfo, state.current_image)
        with hidden():
            try:
                ran = ctx.queue.run_waiting_inline(state, accept=is_generation)
            finally:
                clear_networks(ctx)  # the generations' LoRAs/hypernetworks stay applied until removed
        state.textinfo, state.current_image = saved
        log.info("training %s: served %d waiting job(s) between steps", state.job_id, ran)
    return pause_point


def clear_networks(ctx: TrainContext) -> None:
    """Take off the LoRAs / hypernetworks a generation applied: they stay on the model until the next
    generation changes them, and training must never see them."""
    model = ctx.models.current
    if model is not None and hasattr(ctx.models, "activate_networks"):
        ctx.models.activate_networks(model, {})


def refresh_lists(ctx: TrainContext, model: Any) -> None:
    """The new files show in the dropdowns, the cards and the API lists without a restart."""
    db = getattr(getattr(model, "encoder", None), "embeddings", None)
    if db is not None:
        db.refresh_if_changed()
    ctx.models.hypernetworks.refresh()
    ctx.models.loras.refresh()


def submit_training(ctx: TrainContext, label: str, params: CommonTrainParams,
                    trainer: Callable[[TrainRun, Any], TrainOutcome], gradient_checkpointing: bool = False,
                    owner: str = SERVER_OWNER) -> Job:
    """Queue one run for `owner`; the job's result is the trainer's TrainOutcome. LimitError (429)
    when the server's limit of training jobs at once is reached."""
    limit = int(limit_value(ctx.settings, TRAINING_AT_ONCE))
    if limit and ctx.queue.count_unfinished("train-") >= limit:
        raise LimitError(f"{limit} training job{'s are' if limit > 1 else ' is'} already queued or running: the "
                         f"server's limit of training jobs at once is {limit} ({TRAINING_AT_ONCE})", 429)
    cur = ctx.models.current
    if cur is not None:  # fail before queueing when the model is there to measure
        check_memory(ctx, cur, params, gradient_checkpointing)

    def job(state: JobState) -> TrainOutcome:
        # Skip means "drop this image, go on with the next": a training run has none, and the trainers
        # only expect Interrupted from check(), so Skip leaves it alone
        state.skip = lambda: None  # type: ignore[method-assign]
        state.textinfo = f"Preparing to {label}"
        model = ctx.models.require()
        check_memory(ctx, model, params, gradient_checkpointing)
        clear_networks(ctx)  # the last generation's networks are still applied
        run = TrainRun(model=model, options=MappingProxyType(dict(ctx.settings.all())), paths=ctx.paths,
                       progress=state, pause_point=make_pause_point(ctx, state), preview=make_preview(ctx, state))
        started = time.time()
        try:
            outcome = trainer(run, params)
        finally:
            refresh_lists(ctx, model)
        log.info("%s: %s (%.1f s)", label, outcome.info.replace("\n", "; "), time.time() - started)
        return outcome

    return ctx.queue.submit(job, label=label, owner=owner)


__all__ = ["GENERATION_LABELS", "TrainContext", "TrainDoesNotFit", "TrainInputNotFound", "check_dataset",
           "check_embedding", "check_hypernetwork", "clear_networks", "check_lora", "check_memory", "embedding_file", "is_generation",
           "make_pause_point", "make_preview", "refresh_lists", "submit_training"]
