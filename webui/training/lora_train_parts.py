"""The parts of LoRA training that are not the loop: parameter checks (before anything loads),
finding a run's saved state, caption conditioning with or without gradients through the text
encoders, SDXL's extra UNet inputs, the memory estimate and the optimizer."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from webui.training.params import LoraTrainParams
from webui.training.schedule import LearnRateSchedule, Schedule

OPTIMIZERS = ("AdamW", "AdamW8bit")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
CLIP_GRAD_MODES = ("disabled", "value", "norm")
STATE_SUFFIX = "-state.safetensors"
NOISE_STREAM = 11  # derive_seed stream of the per-micro-batch noise (the dataset uses 1-4)


def option(options: Any, key: str, default: Any) -> Any:
    try:
        value = options.get(key) if options is not None else None
    except Exception:  # noqa: BLE001 - an unknown option reads as its default
        value = None
    return default if value is None else value


def check_params(params: LoraTrainParams, device: torch.device) -> tuple[str, list[str]]:
    """Refuse what cannot run (ValueError naming the field) before anything is loaded; returns the
    mixed precision that will be used and notes for the user."""
    notes: list[str] = []
    if params.steps < 1:
        raise ValueError(f"steps must be at least 1, not {params.steps}")
    if params.batch_size < 1 or params.gradient_step < 1:
        raise ValueError("batch_size and gradient_step must be at least 1")
    if params.network_dim < 1:
        raise ValueError(f"network_dim must be at least 1, not {params.network_dim}")
    if params.text_encoder_lr < 0 or params.noise_offset < 0 or params.min_snr_gamma < 0:
        raise ValueError("text_encoder_lr, noise_offset and min_snr_gamma must be >= 0")
    if params.clip_grad_mode not in CLIP_GRAD_MODES:
        raise ValueError(f"clip_grad_mode must be one of {', '.join(CLIP_GRAD_MODES)}, not {params.clip_grad_mode!r}")
    if params.optimizer_type not in OPTIMIZERS:
        raise ValueError(f"optimizer_type must be one of {', '.join(OPTIMIZERS)}, not {params.optimizer_type!r}")
    if params.optimizer_type == "AdamW8bit":
        if device.type != "cuda":
            raise ValueError("optimizer_type AdamW8bit needs a CUDA device (bitsandbytes); use AdamW")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError("optimizer_type AdamW8bit needs the bitsandbytes package; use AdamW")
    mp = params.mixed_precision
    if mp not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, not {mp!r}")
    if mp != "no" and device.type != "cuda":
        notes.append(f"mixed precision {mp} needs CUDA; training in full precision on {device.type}")
        mp = "no"
    if mp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("mixed_precision bf16 is not supported by this GPU; use fp16")
    LearnRateSchedule(params.learn_rate, params.steps)  # syntax errors name the entry
    if params.clip_grad_mode != "disabled":
        LearnRateSchedule(params.clip_grad_value, params.steps, what="gradient clip value")
    return mp, notes


def find_resume_state(log_directory: str | Path, name: str) -> Path | None:
    """The newest saved state of run ``name`` under ``log_directory`` (any date folder)."""
    found = list(Path(log_directory).glob(f"*/{name}/{name}{STATE_SUFFIX}"))
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def lora_activation_bytes(params: LoraTrainParams, model: Any) -> int:
    """Device bytes one training step keeps beside the weights (the service's room check)."""
    from webui.memory.estimates import training_activation_bytes
    p = next(model.sd.unet.parameters())
    return training_activation_bytes(params.batch_size, params.training_width, params.training_height,
                                     p.element_size(), model.sd.family, params.gradient_checkpointing)


def encode_captions(model: Any, texts: list[str], clip_skip: int, with_grad: bool) -> Any:
    """Conditioning for plain caption text through the model's own prompt encoder (emphasis,
    chunks, clip skip as generation does); ``with_grad`` keeps the graph through the text
    encoders (text-encoder training) and bypasses the encoder's cache."""
    from webui.prompts.encoder import EncodeOptions, stack_encoded
    enc = model.encoder
    if not with_grad:
        return enc.encode(texts, clip_skip=clip_skip)
    opts = EncodeOptions(clip_skip=clip_skip)
    encode = type(enc)._encode_uncached
    encode = getattr(encode, "__wrapped__", encode)  # the method without its no_grad decorator
    with torch.enable_grad():
        return stack_encoded([encode(enc, t, opts) for t in texts])


def sdxl_added_cond(pooled: torch.Tensor, height: int, width: int) -> dict[str, torch.Tensor]:
    """SDXL's extra UNet inputs for a training image: original = target size, crop (0, 0) (kohya's
    rule for images not cropped; what generation passes too)."""
    ids = torch.tensor([height, width, 0, 0, height, width], device=pooled.device, dtype=pooled.dtype)
    return {"text_embeds": pooled, "time_ids": ids.repeat(pooled.shape[0], 1)}


def sched_value(sched: Schedule, step: int) -> float:
    # a clip schedule shorter than the run keeps its last value (A1111 clamps the same way)
    return sched.rate_at(min(step, sched.end_step - 1)) if sched.end_step > 0 else 0.0


def make_optimizer(kind: str, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if kind == "AdamW8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(groups)
    return torch.optim.AdamW(groups)


def _state_header(path: Path) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        body = json.loads((f.metadata() or {}).get("state", "{}"))
    return body if isinstance(body, dict) else {}


def read_state_seed(path: Path, default: int) -> int:
    """The seed a saved run used (read from its header, nothing else loaded)."""
    return int((_state_header(path).get("settings") or {}).get("seed", default))


def read_state_step(path: Path) -> int:
    """The step a saved run reached (from its header)."""
    return int(_state_header(path).get("step", 0) or 0)
