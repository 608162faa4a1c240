"""Train LoRA (ours; none of the A1111 family has it): kohya-style adapters on the loaded checkpoint.

The base is ``run.model`` as loaded; adapters are forward hooks (``lora_adapters``), so the base weights
are never written and ``network.remove()`` (always, also on error) leaves the model as it was.  The
dataset, captions, templates, learning-rate syntax, log directory and loss CSV are the embedding and
hypernetwork trainers' (A1111's); the file and its ``ss_*`` metadata are kohya's (``lora_files``).

Reproducibility: batches are a pure function of (seed, position) (``BatchIterator``) and so is each
micro-batch's noise and timesteps (a generator seeded from (seed, position)); the state file holds
the adapters, the optimizer and the iterator position, so a resumed run takes exactly the steps an
uninterrupted one would have taken.

Choices: mixed precision (fp16/bf16 autocast) is for CUDA only; asked for elsewhere it falls back to
full precision with a warning in the log and in the outcome's message (a CPU server should still
train what it was sent).  AdamW8bit needs bitsandbytes and CUDA; otherwise it is a ValueError before
anything runs.  Gradient clipping: ``clip_grad_mode`` "value"/"norm" uses ``clip_grad_value`` (a
schedule, A1111's); "disabled" falls back to kohya's ``max_grad_norm`` (0 = none).
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import PngImagePlugin

from webui.services.jobs import Interrupted, Skipped
from webui.training.dataset import BatchIterator, DatasetLoadInterrupted, TrainingDataset, derive_seed
from webui.training.diffusion_loss import diffusion_loss
from webui.training.embedding_files import sanitize_name
from webui.training.logdir import TrainingLogDir
from webui.training.lora_adapters import LoraNetwork, LoraSpec, build_lora
from webui.training.lora_files import (TrainingRecord, capture_rng_state, kohya_metadata, load_training_state,
                                       save_lora_file, save_training_state)
from webui.training.lora_train_parts import (NOISE_STREAM, STATE_SUFFIX,
                                             check_params, encode_captions, find_resume_state, read_state_step,
                                             lora_activation_bytes, make_optimizer, option, read_state_seed,
                                             sched_value, sdxl_added_cond)
from webui.training.params import LoraTrainParams
from webui.training.run import TrainOutcome, TrainRun
from webui.training.schedule import LearnRateSchedule, Schedule, WarmupSchedule
from webui.training.templates import load_template

log = logging.getLogger(__name__)

class _Trainer:
    """One run's moving parts; ``train_lora`` is the public entry."""

    def __init__(self, run: TrainRun, params: LoraTrainParams) -> None:
        self.run, self.params = run, params
        self.model = run.model
        self.sd = run.model.sd
        self.device = torch.device(run.model.policy.device)
        self.memory = getattr(run.model, "memory", None)
        self.precision, self.notes = check_params(params, self.device)
        self.name = sanitize_name(params.name)
        self.train_te = params.text_encoder_lr > 0
        log_root = Path(params.log_directory)
        if not log_root.is_absolute():
            log_root = Path(run.paths.data_dir) / log_root
        self.log_root = log_root
        self.logdir = TrainingLogDir.for_run(log_root, self.name, "lora")
        self.final_path = Path(run.paths.lora_dir) / f"{self.name}.safetensors"
        self.state_path = self.logdir.root / f"{self.name}{STATE_SUFFIX}"
        self.resume_from: Path | None = None
        if params.resume:
            self.resume_from = find_resume_state(log_root, self.name)
            if self.resume_from is None:
                raise ValueError(f"resume: no saved training state of '{self.name}' in {log_root}")
            reached = read_state_step(self.resume_from)
            if reached >= params.steps:  # A1111's refusal: nothing would be trained
                raise ValueError(f"Model has already been trained beyond specified max steps: {self.name} is at "
                                 f"step {reached}, max steps is {params.steps}")
        self.seed = params.seed if params.seed >= 0 else random.randint(0, 2 ** 31 - 1)
        self.previews: list[Path] = []
        self.loss = float("nan")

    # ------------------------------------------------------------------ setup
    def _part(self, module: Any) -> Any:
        return self.memory.part_of(module) if self.memory is not None else None

    def _use(self, *modules: Any, activations: int = 0) -> contextlib.AbstractContextManager:
        if self.memory is None:
            return contextlib.nullcontext()
        return self.memory.use(*(self._part(m) for m in modules), activations=activations)

    def _encode_image(self, pixels: torch.Tensor) -> Any:
        vae = self.sd.vae
        p = next(vae.parameters())
        with self._use(vae):
            return vae.encode(pixels.to(p.device, p.dtype)).latent_dist

    def _should_stop(self) -> bool:
        return bool(getattr(self.run.progress, "interrupted", False))

    def load_data(self) -> None:
        p, opts = self.params, self.run.options
        self.run.progress.textinfo = f"[{self.name}] preparing dataset"
        self.dataset = TrainingDataset(
            p.data_root, self._encode_image, width=p.training_width, height=p.training_height, varsize=p.varsize,
            use_weight=p.use_weight, latent_sampling_method=p.latent_sampling_method,
            latent_scale=self.sd.scaling_factor, latent_shift=float(getattr(self.sd, "shift_factor", 0.0) or 0.0),
            seed=self.seed, word_regex=option(opts, "dataset_filename_word_regex", ""),
            join_string=option(opts, "dataset_filename_join_string", " "), should_stop=self._should_stop)
        template = load_template(p.template_filename, Path(self.run.paths.data_dir))
        self.batches = BatchIterator(self.dataset, batch_size=p.batch_size, gradient_step=p.gradient_step,
                                     seed=self.seed, repeats=int(option(opts, "training_image_repeats_per_epoch", 1)),
                                     template=template, name=self.name, shuffle_tags=p.shuffle_tags,
                                     tag_drop_out=p.tag_drop_out)

    def record(self) -> TrainingRecord:
        p, first = self.params, LearnRateSchedule(self.params.learn_rate, self.params.steps)
        piecewise = len(first.segments) > 1
        scheduler = "piecewise_constant" if piecewise else ("constant_with_warmup" if p.lr_warmup_steps else "constant")
        opt_cls = type(self.optimizer)
        return TrainingRecord(
            output_name=self.name, learning_rate=first.segments[0][0], unet_lr=first.segments[0][0],
            text_encoder_lr=p.text_encoder_lr, max_train_steps=p.steps,
            num_epochs=math.ceil(p.steps / max(1, self.batches.steps_per_epoch)),
            optimizer=f"{opt_cls.__module__}.{opt_cls.__name__}", lr_scheduler=scheduler,
            lr_warmup_steps=p.lr_warmup_steps, gradient_accumulation_steps=self.batches.gradient_step,
            gradient_checkpointing=p.gradient_checkpointing, mixed_precision=self.precision,
            clip_skip=self.clip_skip if self.clip_skip > 1 else None, seed=self.seed,
            noise_offset=p.noise_offset or None, min_snr_gamma=p.min_snr_gamma or None,
            num_train_images=len(self.dataset) * self.batches.repeats, batch_size_per_device=self.batches.batch_size,
            resolution=(p.training_width, p.training_height), enable_bucket=p.varsize, shuffle_caption=p.shuffle_tags,
            dataset_dir=Path(p.data_root).name, tag_frequency={Path(p.data_root).name: self.dataset.tag_frequency()},
            extra={"ss_caption_tag_dropout_rate": p.tag_drop_out,
                   **({"ss_learning_rate_schedule": p.learn_rate} if piecewise else {})})

    # ------------------------------------------------------------------ one step
    def _loss(self, batch: Any) -> torch.Tensor:
        sd, p = self.sd, self.params
        unet = sd.unet
        udtype = next(unet.parameters()).dtype
        latents = batch.latents.to(self.device, torch.float32)
        weight = batch.weights.to(self.device) if batch.weights is not None else None
        cond = encode_captions(self.model, batch.prompts, self.clip_skip, self.train_te)
        cross = cond.cross_attn.to(self.device, udtype)
        h, w = latents.shape[2] * sd.vae_scale_factor, latents.shape[3] * sd.vae_scale_factor
        added = sdxl_added_cond(cond.pooled.to(self.device, udtype), h, w) if sd.family == "sdxl" else None

        def predict(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                out = unet(noisy.to(udtype), t, encoder_hidden_states=cross, return_dict=False,
                           **({"added_cond_kwargs": added} if added else {}))[0]
            return out.float()

        gen = torch.Generator(self.device).manual_seed(derive_seed(self.seed, NOISE_STREAM, batch.position))
        return diffusion_loss(predict, latents, self.alphas, gen, offset_noise=p.noise_offset,
                              min_snr=p.min_snr_gamma, prediction=sd.prediction_type, weight=weight)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "no":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.float16 if self.precision == "fp16" else torch.bfloat16)

    def _micro_step(self, batch: Any) -> float:
        act = self.activations
        tes = list(self.sd.text_encoders)
        if self.train_te:  # the text encoders' graph is alive until backward: one stage with the UNet
            with self._use(*tes, self.sd.unet, activations=act):
                loss = self._loss(batch)
                self._backward(loss)
        else:
            with self._use(self.sd.unet, activations=act):
                loss = self._loss(batch)
                self._backward(loss)
        return float(loss.detach())

    def _backward(self, loss: torch.Tensor) -> None:
        scaled = loss / self.batches.gradient_step
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()

    def _clip(self, step: int) -> None:
        p = self.params
        params = [q for g in self.optimizer.param_groups for q in g["params"]]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if p.clip_grad_mode == "value":
            torch.nn.utils.clip_grad_value_(params, sched_value(self.clip_sched, step))
        elif p.clip_grad_mode == "norm":
            torch.nn.utils.clip_grad_norm_(params, sched_value(self.clip_sched, step))
        elif p.max_grad_norm and p.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, p.max_grad_norm)

    # ------------------------------------------------------------------ outputs
    def save_file(self, path: Path, step: int) -> Path:
        meta = kohya_metadata(self.network, self.sd, self.rec, steps=step, epoch=self._epoch(step),
                              sd_model_sha256=getattr(self.model.info, "sha256", None))
        return save_lora_file(self.network, path, meta, self.params.save_precision)

    def save_state(self, step: int) -> Path:
        extra: dict[str, Any] = {"iterator": self.batches.state_dict(), "seed": self.seed,
                                 "training_started_at": self.rec.training_started_at,
                                 "session_id": self.rec.session_id}
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        return save_training_state(self.state_path, self.network, self.optimizer, step=step,
                                   epoch=self._epoch(step), settings={**self.params.as_dict(), "seed": self.seed},
                                   rng=capture_rng_state(), extra=extra)

    def _epoch(self, step: int) -> int:
        return math.ceil(step / max(1, self.batches.steps_per_epoch))

    def _invalidate_prompts(self) -> None:
        # cached encodings are only right for the text encoders as they were; ours change them
        if self.train_te and hasattr(self.model.encoder, "invalidate"):
            self.model.encoder.invalidate()

    def preview(self, step: int, batch_prompt: str) -> None:
        if self.run.preview is None:
            return
        p = self.params
        size = (p.preview_width, p.preview_height) if p.preview_from_txt2img else (p.training_width, p.training_height)
        prompt = p.preview_prompt if (p.preview_from_txt2img or p.preview_prompt) else batch_prompt
        self.sd.unet.eval()
        self._invalidate_prompts()
        try:
            with torch.no_grad():
                image, infotext = self.run.preview(prompt=prompt, negative_prompt=p.preview_negative_prompt,
                                                   steps=p.preview_steps, sampler_name=p.preview_sampler_name,
                                                   cfg_scale=p.preview_cfg_scale, seed=p.preview_seed,
                                                   width=size[0], height=size[1])
        finally:
            self._invalidate_prompts()
            self.sd.unet.train()
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext or "")
        path = self.logdir.image_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, pnginfo=info)
        self.previews.append(path)
        if hasattr(self.run.progress, "current_image"):
            self.run.progress.current_image = image

    @contextlib.contextmanager
    def hidden(self) -> Iterator[None]:
        """For generation served at a pause point: adapters off, the UNet in eval mode."""
        with self.network.disabled():
            self.sd.unet.eval()
            try:
                yield
            finally:
                self.sd.unet.train()

    # ------------------------------------------------------------------ the run
    def _prepare_model(self) -> None:
        p, sd = self.params, self.sd
        self.clip_skip = int(option(self.run.options, "CLIP_stop_at_last_layers", 1))
        spec = LoraSpec(rank=p.network_dim, alpha=p.network_alpha, unet_target=p.network_target,
                        conv_rank=p.conv_dim, conv_alpha=p.conv_alpha, text_encoder=self.train_te)
        # adapters live on the compute device even when base layers are streamed from RAM
        self.network: LoraNetwork = build_lora(sd, spec, seed=self.seed, device=self.device)
        modules = [sd.unet, *sd.text_encoders]
        self._was_training = [m.training for m in modules]
        self._grad_params = [q for m in modules for q in m.parameters() if q.requires_grad]
        for q in self._grad_params:
            q.requires_grad_(False)  # gradients for the adapters only: the base is frozen
        self._had_gc = bool(getattr(sd.unet, "is_gradient_checkpointing", False))
        if p.gradient_checkpointing and not self._had_gc:
            sd.unet.enable_gradient_checkpointing()
        self.network.apply_to()
        sd.unet.train()
        self._invalidate_prompts()
        self.alphas = sd.alphas_cumprod.to(self.device, torch.float32)
        self.activations = lora_activation_bytes(p, self.model)
        groups = self.network.param_groups(1.0, p.text_encoder_lr if self.train_te else None)
        self.optimizer = make_optimizer(p.optimizer_type, groups)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def _restore_model(self) -> None:
        sd = self.sd
        network = getattr(self, "network", None)
        if network is not None:
            network.remove()
        for m, was in zip([sd.unet, *sd.text_encoders], getattr(self, "_was_training", [])):
            m.train(was)
        for q in getattr(self, "_grad_params", []):
            q.requires_grad_(True)
        if self.params.gradient_checkpointing and not getattr(self, "_had_gc", True):
            sd.unet.disable_gradient_checkpointing()
        self._invalidate_prompts()

    def _set_rates(self, step: int) -> float:
        rate = self.lr.rate_at(step)
        ramp = (step + 1) / self.params.lr_warmup_steps if step < self.params.lr_warmup_steps else 1.0
        groups = self.optimizer.param_groups
        groups[0]["lr"] = rate
        if len(groups) > 1:  # the text encoder's own rate, warmed up with the UNet's
            groups[1]["lr"] = self.params.text_encoder_lr * ramp
        return rate

    def _resume(self) -> int:
        assert self.resume_from is not None
        state = load_training_state(self.resume_from, self.network, self.optimizer)
        saved = state.settings
        for key in ("network_dim", "network_alpha", "network_target", "conv_dim", "conv_alpha", "batch_size",
                    "gradient_step", "training_width", "training_height"):
            if key in saved and saved[key] != getattr(self.params, key):
                raise ValueError(f"resume: {key} was {saved[key]!r} in the saved run, {getattr(self.params, key)!r} now")
        self.batches.load_state_dict(state.extra["iterator"])
        if self.scaler is not None and "scaler" in state.extra:
            self.scaler.load_state_dict(state.extra["scaler"])
        self.rec.training_started_at = float(state.extra.get("training_started_at", self.rec.training_started_at))
        self.rec.session_id = int(state.extra.get("session_id", self.rec.session_id))
        log.info("Resuming LoRA %s from step %d (%s)", self.name, state.step, self.resume_from)
        return state.step

    def train(self) -> TrainOutcome:
        p, progress = self.params, self.run.progress
        if self.resume_from is not None:  # the run's own seed: same batches and noise as before
            self.seed = int(read_state_seed(self.resume_from, self.seed))
        try:
            self.load_data()
        except DatasetLoadInterrupted:
            return TrainOutcome(self.final_path, 0, interrupted=True, log_dir=self.logdir.root,
                                message="Interrupted while preparing the dataset; nothing was saved.")
        self.logdir.create(snapshots=bool(p.save_every), images=bool(p.preview_every and self.run.preview))
        step = 0
        try:
            self._prepare_model()
            self.rec = self.record()
            if self.resume_from is not None:
                step = self._resume()
            self.lr: Schedule = WarmupSchedule(LearnRateSchedule(p.learn_rate, p.steps, step), p.lr_warmup_steps)
            if p.clip_grad_mode != "disabled":
                self.clip_sched = LearnRateSchedule(p.clip_grad_value, p.steps, what="gradient clip value")
            if option(self.run.options, "save_training_settings_to_txt", True):
                self.logdir.save_settings({**p.as_dict(), "seed": self.seed, "resumed_at_step": step,
                                           "model_name": self.model.info.model_name,
                                           "model_hash": self.model.info.shorthash})
            csv = self.logdir.loss_writer(int(option(self.run.options, "training_write_csv_every", 500)))
            end = self.lr.end_step
            progress.sampling_steps, progress.sampling_step = end, step
            log.info("Training LoRA %s: steps %d..%d, %s", self.name, step, end, self.lr.base.describe())
            interrupted = False
            while step < end:
                try:
                    progress.check()
                except Skipped:
                    pass
                except Interrupted:
                    interrupted = True
                    break
                rate = self._set_rates(step)
                self.optimizer.zero_grad(set_to_none=True)
                losses, prompt = [], ""
                for _ in range(self.batches.gradient_step):
                    batch = self.batches.next_batch()
                    prompt = prompt or batch.prompts[0]
                    losses.append(self._micro_step(batch))
                self._clip(step)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                step += 1
                self.loss = sum(losses) / len(losses)
                csv.write(step, self.batches.steps_per_epoch, self.loss, rate)
                progress.sampling_step = step
                progress.textinfo = f"[{self.name}] step {step}/{end}, loss {self.loss:.5f}, lr {rate:g}"
                if p.save_every and step % p.save_every == 0 and step < end:
                    self.save_file(self.logdir.snapshot_path(step, ".safetensors"), step)
                    self.save_state(step)
                if p.preview_every and step % p.preview_every == 0:
                    try:
                        self.preview(step, prompt)
                    except Interrupted:  # pressed during the preview: stop here, saving as below
                        interrupted = True
                        break
                self.run.pause_point(self.hidden)
            self.save_state(step)
            if p.save_every:
                self.save_file(self.logdir.snapshot_path(step, ".safetensors"), step)
            path = self.save_file(self.final_path, step)
        finally:
            self._restore_model()
        message = "\n".join(self.notes + ([f"Last loss: {self.loss:.5f}"] if self.loss == self.loss else []))
        return TrainOutcome(path, step, interrupted=interrupted, log_dir=self.logdir.root,
                            loss_csv=self.logdir.loss_csv if self.logdir.loss_csv.exists() else None,
                            previews=list(self.previews), message=message)


def train_lora(run: TrainRun, params: LoraTrainParams) -> TrainOutcome:
    """Train a LoRA on ``run.model`` as ``params`` say; writes ``<lora_dir>/<name>.safetensors``,
    snapshots, previews, the loss CSV, the settings json and the resumable state under
    ``<log>/<date>/<name>/``.  ValueError for parameters that cannot run; interrupt (``run.progress``)
    saves the file and the state and returns ``interrupted=True``."""
    started = time.time()
    outcome = _Trainer(run, params).train()
    log.info("LoRA %s: %s after %.1f s", params.name, "interrupted" if outcome.interrupted else "finished",
             time.time() - started)
    return outcome


__all__ = ["train_lora", "check_params", "find_resume_state", "encode_captions", "sdxl_added_cond",
           "lora_activation_bytes", "read_state_seed", "STATE_SUFFIX"]
