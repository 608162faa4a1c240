"""The Train tab's training sub-tabs: "Train" (A1111's embedding / hypernetwork form and elem_ids)
and "Train LoRA" (ours), plus the live output: a progress bar (step, loss, learning rate, s/it,
ETA), the latest previews in `ti_gallery` and the loss plot.

A Train button queues the run and returns at once; a gr.Timer, active only while a run started
here is going, polls the job's state, the log folder's preview images and loss CSV, and switches
itself off when the run ends (an idle page makes no requests).
"""
from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import gradio as gr
from PIL import Image

from webui.services.training_jobs import (CLIP_GRAD_MODES, LATENT_SAMPLING, LORA_OPTIMIZERS, LORA_TARGETS,
                                          MIXED_PRECISION)
from webui.training.logdir import TrainingLogDir, read_loss_csv
from webui.training.params import EmbeddingTrainParams, HypernetworkTrainParams, LoraTrainParams
from webui.training.templates import list_templates

if TYPE_CHECKING:
    from webui.services.container import Services
    from webui.services.jobs import Job

_E, _H, _L = EmbeddingTrainParams(), HypernetworkTrainParams(), LoraTrainParams()
_LOSS = re.compile(r"step (\d+)\S*, loss ([-+0-9.eEinfa]+)")
_LR = re.compile(r"\blr ([-+0-9.eE]+)")
MAX_GALLERY = 8
PREVIEW_KEYS = ("preview_prompt", "preview_negative_prompt", "preview_steps", "preview_sampler_name",
                "preview_cfg_scale", "preview_seed", "preview_width", "preview_height")


@dataclass
class Watch:
    """A run started from this page: the job and what the poller has seen of it."""
    job: "Job"
    kind: str                       # embedding | hypernetwork | lora (the log folder's kind)
    name: str
    log_root: Path
    losses: dict[int, float] = field(default_factory=dict)  # from the progress text, between CSV writes
    first: tuple[float, int] | None = None                   # (time, step) of the first poll with a step
    done_at: float | None = None                             # when a poll first saw the run ended

    logdir: TrainingLogDir | None = None                     # fixed at the start: a run may cross midnight

    def __post_init__(self) -> None:
        if self.logdir is None:
            self.logdir = TrainingLogDir.for_run(self.log_root, self.name, self.kind)


_watches: dict[str, Watch] = {}
_lock = threading.Lock()


@dataclass
class TrainRunTab:
    embedding: Any
    hypernetwork: Any
    train_embedding: Any
    train_hypernetwork: Any
    interrupt: Any
    lora_name: Any
    train_lora: Any
    loss_plot: Any
    timer: Any
    fields: dict[str, Any]


def _refresh_button(elem_id: str) -> Any:
    return gr.Button("🔄", elem_id=elem_id, size="sm", scale=0, min_width=44)


def data_dir(svc: "Services") -> Path | None:
    paths = getattr(svc, "paths", None)
    return getattr(paths, "data_dir", None)


def template_names(svc: "Services") -> list[str]:
    return list(list_templates(data_dir(svc)))


def build_train(svc: "Services") -> dict[str, Any]:
    """A1111's Train sub-tab form (its labels' meaning, its elem_ids)."""
    t = svc.training
    f: dict[str, Any] = {}
    with gr.Row():
        f["embedding"] = gr.Dropdown(t.embedding_names() if t else [], label="Embedding", elem_id="train_embedding")
        f["refresh_embedding"] = _refresh_button("refresh_train_embedding_name")
        f["hypernetwork"] = gr.Dropdown(t.hypernetwork_names() if t else [], label="Hypernetwork",
                                        elem_id="train_hypernetwork")
        f["refresh_hypernetwork"] = _refresh_button("refresh_train_hypernetwork_name")
    with gr.Row():
        f["embedding_lr"] = gr.Textbox(_E.learn_rate, label="Embedding Learning rate", elem_id="train_embedding_learn_rate",
                                       placeholder="0.005:100, 1e-3:1000, 1e-5")
        f["hypernetwork_lr"] = gr.Textbox(_H.learn_rate, label="Hypernetwork Learning rate",
                                          elem_id="train_hypernetwork_learn_rate", placeholder="1e-5")
    with gr.Row():
        f["clip_grad_mode"] = gr.Dropdown(list(CLIP_GRAD_MODES), value=_E.clip_grad_mode, label="Gradient Clipping",
                                          elem_id="train_clip_grad_mode")
        f["clip_grad_value"] = gr.Textbox(_E.clip_grad_value, show_label=False, placeholder="Gradient clip value",
                                          elem_id="train_clip_grad_value")
    with gr.Row():
        f["batch_size"] = gr.Number(_E.batch_size, label="Batch size", precision=0, minimum=1, elem_id="train_batch_size")
        f["gradient_step"] = gr.Number(_E.gradient_step, label="Gradient accumulation steps", precision=0, minimum=1,
                                       elem_id="train_gradient_step")
    f["data_root"] = gr.Textbox(label="Dataset directory", placeholder="Folder on the server with the training images",
                                elem_id="train_dataset_directory")
    f["log_directory"] = gr.Textbox(_E.log_directory, label="Log directory", elem_id="train_log_directory",
                                    placeholder="Where snapshots, previews and the loss CSV go")
    with gr.Row():
        names = template_names(svc)
        f["template"] = gr.Dropdown(names, value=_E.template_filename if _E.template_filename in names else None,
                                    label="Prompt template", elem_id="train_template_file")
        f["refresh_template"] = _refresh_button("refrsh_train_template_file")  # A1111's spelling
    f["width"] = gr.Slider(64, 2048, value=_E.training_width, step=8, label="Width", elem_id="train_training_width")
    f["height"] = gr.Slider(64, 2048, value=_E.training_height, step=8, label="Height", elem_id="train_training_height")
    f["varsize"] = gr.Checkbox(_E.varsize, label="Do not resize images", elem_id="train_varsize")
    f["steps"] = gr.Number(_E.steps, label="Max steps", precision=0, minimum=1, elem_id="train_steps")
    with gr.Row():
        f["create_image_every"] = gr.Number(_E.create_image_every, precision=0, minimum=0,
                                            label="Save an image to log directory every N steps, 0 to disable",
                                            elem_id="train_create_image_every")
        f["save_every"] = gr.Number(_E.save_embedding_every, precision=0, minimum=0,
                                    label="Save a copy of embedding to log directory every N steps, 0 to disable",
                                    elem_id="train_save_embedding_every")
    f["use_weight"] = gr.Checkbox(_E.use_weight, label="Use PNG alpha channel as loss weight", elem_id="use_weight")
    f["save_image_with_stored_embedding"] = gr.Checkbox(_E.save_image_with_stored_embedding,
                                                        label="Save images with embedding in PNG chunks",
                                                        elem_id="train_save_image_with_stored_embedding")
    f["preview_from_txt2img"] = gr.Checkbox(_E.preview_from_txt2img, elem_id="train_preview_from_txt2img",
                                            label="Read parameters (prompt, etc...) from txt2img tab when making "
                                                  "previews")
    f["shuffle_tags"] = gr.Checkbox(_E.shuffle_tags, label="Shuffle tags by ',' when creating prompts.",
                                    elem_id="train_shuffle_tags")
    f["tag_drop_out"] = gr.Slider(0, 1, value=_E.tag_drop_out, step=0.1, label="Drop out tags when creating prompts.",
                                  elem_id="train_tag_drop_out")
    f["latent_sampling_method"] = gr.Radio(list(LATENT_SAMPLING), value=_E.latent_sampling_method,
                                           label="Choose latent sampling method", elem_id="train_latent_sampling_method")
    with gr.Row():
        f["train_embedding"] = gr.Button("Train Embedding", variant="primary", elem_id="train_train_embedding")
        f["interrupt"] = gr.Button("Interrupt", elem_id="train_interrupt_training")
        f["train_hypernetwork"] = gr.Button("Train Hypernetwork", variant="primary", elem_id="train_train_hypernetwork")
    return f


def build_train_lora(svc: "Services") -> dict[str, Any]:
    """Ours: a LoRA on the loaded checkpoint in kohya's format (kohya's option names in the API)."""
    f: dict[str, Any] = {}
    f["lora_name"] = gr.Textbox(label="LoRA name", elem_id="train_lora_name",
                                info="Saved as models/Lora/<name>.safetensors (kohya's format)")
    f["lora_data_root"] = gr.Textbox(label="Dataset directory", elem_id="train_lora_dataset_directory",
                                     placeholder="Folder on the server with the training images")
    f["lora_log_directory"] = gr.Textbox(_L.log_directory, label="Log directory", elem_id="train_lora_log_directory")
    with gr.Row():
        names = template_names(svc)
        f["lora_template"] = gr.Dropdown(names, value=_L.template_filename if _L.template_filename in names else None,
                                         label="Prompt template", elem_id="train_lora_template_file")
        f["lora_refresh_template"] = _refresh_button("refresh_train_lora_template_file")
    with gr.Row():
        f["lora_dim"] = gr.Number(_L.network_dim, label="Network dim (rank)", precision=0, minimum=1,
                                  elem_id="train_lora_network_dim")
        f["lora_alpha"] = gr.Number(_L.network_alpha, label="Network alpha", minimum=0, elem_id="train_lora_network_alpha")
        f["lora_target"] = gr.Dropdown(list(LORA_TARGETS), value=_L.network_target, label="Target",
                                       info="transformer: kohya's default; attention: q/k/v/out; locon: also convs",
                                       elem_id="train_lora_network_target")
    with gr.Row():
        f["lora_lr"] = gr.Textbox(_L.learn_rate, label="Learning rate (UNet)", elem_id="train_lora_learn_rate",
                                  placeholder="1e-4 or a schedule 1e-4:500, 5e-5")
        f["lora_te_lr"] = gr.Number(_L.text_encoder_lr, label="Text encoder learning rate (0: UNet only)", minimum=0,
                                    elem_id="train_lora_text_encoder_lr")
        f["lora_warmup"] = gr.Number(_L.lr_warmup_steps, label="Warm-up steps", precision=0, minimum=0,
                                     elem_id="train_lora_lr_warmup_steps")
    with gr.Row():
        f["lora_optimizer"] = gr.Dropdown(list(LORA_OPTIMIZERS), value=_L.optimizer_type, label="Optimizer",
                                          elem_id="train_lora_optimizer_type")
        f["lora_batch"] = gr.Number(_L.batch_size, label="Batch size", precision=0, minimum=1,
                                    elem_id="train_lora_batch_size")
        f["lora_accum"] = gr.Number(_L.gradient_step, label="Gradient accumulation steps", precision=0, minimum=1,
                                    elem_id="train_lora_gradient_step")
        f["lora_steps"] = gr.Number(_L.steps, label="Max steps", precision=0, minimum=1, elem_id="train_lora_steps")
    with gr.Row():
        f["lora_width"] = gr.Slider(64, 2048, value=_L.training_width, step=8, label="Width",
                                    elem_id="train_lora_training_width")
        f["lora_height"] = gr.Slider(64, 2048, value=_L.training_height, step=8, label="Height",
                                     elem_id="train_lora_training_height")
    with gr.Row():
        f["lora_save_every"] = gr.Number(_L.save_every, label="Save a snapshot every N steps", precision=0, minimum=0,
                                         elem_id="train_lora_save_every")
        f["lora_preview_every"] = gr.Number(_L.preview_every, label="Preview every N steps (0: off)", precision=0,
                                            minimum=0, elem_id="train_lora_preview_every")
    f["lora_preview_prompt"] = gr.Textbox(_L.preview_prompt, label="Preview prompt", elem_id="train_lora_preview_prompt",
                                          placeholder="empty: a line of the prompt template")
    with gr.Row():
        f["lora_precision"] = gr.Dropdown(list(MIXED_PRECISION), value=_L.mixed_precision, label="Mixed precision (CUDA)",
                                          elem_id="train_lora_mixed_precision")
        f["lora_checkpointing"] = gr.Checkbox(_L.gradient_checkpointing, label="Gradient checkpointing",
                                              elem_id="train_lora_gradient_checkpointing")
        f["lora_noise_offset"] = gr.Number(_L.noise_offset, label="Noise offset", minimum=0, maximum=1,
                                           elem_id="train_lora_noise_offset")
        f["lora_min_snr"] = gr.Number(_L.min_snr_gamma, label="Min-SNR gamma (0: off)", minimum=0,
                                      elem_id="train_lora_min_snr_gamma")
        f["lora_seed"] = gr.Number(_L.seed, label="Seed (-1: random)", precision=0, elem_id="train_lora_seed")
    f["lora_resume"] = gr.Checkbox(_L.resume, label="Resume the saved state of this name's run",
                                   elem_id="train_lora_resume")
    with gr.Row():
        f["train_lora"] = gr.Button("Train LoRA", variant="primary", elem_id="train_train_lora")
        f["lora_interrupt"] = gr.Button("Interrupt", elem_id="train_lora_interrupt_training")
    return f


# ------------------------------------------------------------------------------------- the output

def progress_html(w: Watch) -> str:
    st = w.job.state
    step, total = int(st.sampling_step or 0), int(st.sampling_steps or 0)
    text = st.textinfo or "Waiting in the queue…"
    bits = [f"step {step}/{total}" if total else ""]
    m, lr = _LOSS.search(text), _LR.search(text)
    if m:
        bits.append(f"loss {m.group(2)}")
    if lr:
        bits.append(f"lr {lr.group(1)}")
    now = time.time()
    if step and w.first is None:
        w.first = (now, step)
    if w.first is not None and step > w.first[1]:
        spi = (now - w.first[0]) / (step - w.first[1])
        bits.append(f"{spi:.2f} s/it")
        if total > step:
            left = int(spi * (total - step))
            bits.append(f"ETA {left // 3600:d}:{left % 3600 // 60:02d}:{left % 60:02d}")
    pct = 100.0 * step / total if total else 0.0
    summary = " · ".join(b for b in bits if b)
    return (f"<div class='ti-progress' data-step='{step}' data-total='{total}'>"
            f"<div class='ti-progress-bar' style='height:6px;background:var(--neutral-200,#ddd);border-radius:3px'>"
            f"<div style='width:{pct:.1f}%;height:100%;background:var(--color-accent,#f97316);border-radius:3px'>"
            f"</div></div><p id='ti_progress_text'>{html.escape(summary)}</p>"
            f"<p class='ti-progress-info'>{html.escape(text)}</p></div>")


def loss_points(w: Watch) -> list[tuple[int, float]]:
    """The CSV's rows, plus the losses read from the progress text after its last row (the CSV is
    written every `training_write_csv_every` steps)."""
    m = _LOSS.search(w.job.state.textinfo or "")
    if m:
        try:
            w.losses[int(m.group(1))] = float(m.group(2))
        except ValueError:
            pass
    rows = [(r.step, r.loss) for r in read_loss_csv(w.logdir.loss_csv)]
    last = rows[-1][0] if rows else 0
    return rows + sorted((s, v) for s, v in w.losses.items() if s > last)


def preview_images(w: Watch) -> list[Path]:
    folder = w.logdir.images_dir
    if not folder.is_dir():
        return []
    files = sorted((p for p in folder.glob("*.png") if p.is_file()), key=lambda p: p.stat().st_mtime)
    return files[-MAX_GALLERY:]


def plot_value(points: Sequence[tuple[int, float]]) -> Any:
    import pandas as pd
    return pd.DataFrame({"step": [p[0] for p in points], "loss": [p[1] for p in points]})


def poll(watch_id: str, shown: str) -> tuple[Any, ...]:
    """One timer tick: (progress, info, gallery, plot, shown key, timer)."""
    w = _watches.get(watch_id or "")
    if w is None:
        return "", gr.update(), gr.update(), gr.update(), shown, gr.Timer(active=False)
    points = loss_points(w)
    images = preview_images(w)
    key = f"{len(points)}:{points[-1] if points else ''}|{[p.name for p in images]}"
    changed = key != shown
    gallery = [Image.open(p).copy() for p in images] if changed and images else gr.update()
    if changed and not images and w.job.state.current_image is not None:
        gallery = [w.job.state.current_image]
    plot = plot_value(points) if changed else gr.update()
    if not w.job.future.done():
        return progress_html(w), gr.update(), gallery, plot, key, gr.Timer(active=True)
    if w.done_at is None:
        w.done_at = time.time()
    _prune()
    try:
        info = w.job.result().info
    except Exception as e:  # noqa: BLE001 - the trainer's error is the run's result
        info = f"Training failed: {e or type(e).__name__}"
    points = loss_points(w)
    return progress_html(w), info, gallery, plot_value(points), "", gr.Timer(active=False)


def _prune(keep_s: float = 600.0) -> None:
    """Forget runs that ended a while ago (every page following one has had time to show its end)."""
    now = time.time()
    with _lock:
        for wid in [k for k, w in _watches.items() if w.done_at is not None and now - w.done_at > keep_s]:
            del _watches[wid]


def follow_active(svc: "Services", watch_id: str) -> tuple[Any, Any, Any]:
    """(watch id, shown key, timer) when a train job runs that this page does not follow yet."""
    w = _watches.get(watch_id or "")
    if w is not None and not w.job.future.done():
        return gr.update(), gr.update(), gr.update()
    runs = svc.training.active_runs() if getattr(svc, "training", None) is not None else []
    if not runs:
        return gr.update(), gr.update(), gr.update()
    run = runs[0]
    return watch(run.job, run.kind, run.name, run.log_directory, data_dir(svc)), "", gr.Timer(active=True)


def watch(job: "Job", kind: str, name: str, log_directory: str, base: Path | None) -> str:
    root = Path(log_directory)
    root = root if root.is_absolute() or base is None else Path(base) / root
    with _lock:
        _watches[job.state.job_id] = Watch(job, kind, name, root)
    return job.state.job_id


__all__ = ["TrainRunTab", "Watch", "build_train", "build_train_lora", "loss_points", "poll", "progress_html",
           "watch", "follow_active", "plot_value", "PREVIEW_KEYS", "data_dir", "template_names"]
