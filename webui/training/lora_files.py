"""LoRA training output in kohya's sd-scripts format, and the resumable training state.

The LoRA file: ``<key>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` tensors (all in the save
precision, as kohya's ``--save_precision`` casts alpha too) with kohya's ``ss_*`` metadata (every value a
string, None written as "None", JSON where kohya writes JSON), the ``sshs_model_hash`` /
``sshs_legacy_hash`` that sd-webui-additional-networks and A1111 read instead of hashing the file, and
the ``modelspec.*`` keys of kohya's ``get_sai_model_spec``.  kohya hashes the tensors serialised with
only the ``ss_*`` metadata: the model hash is sha256 of everything after the header (the tensor bytes,
so it equals A1111's addnet hash of the final file), the legacy hash sha256 of the 64 KiB at 1 MiB of
that serialisation (8 hex digits; the header's length moves it, which is why only ``ss_*`` keys, which
never change after training, go into it).

The training state is one safetensors file: the adapters in float32 and every tensor of the optimizer
state, RNG states and the caller's extras as tensors, everything else as JSON in the header
(no pickle, so loading runs no code).
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from webui.hashes import legacy_model_hash, sha256_file
from webui.training.file_writes import atomic_write
from webui.training.lora_adapters import LoraNetwork

log = logging.getLogger(__name__)

BASE_MODEL_VERSIONS = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}  # kohya's ss_base_model_version
STATE_FORMAT = "webui-lora-training-state/1"
_SAVE_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32,
                "float": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class BaseModel(Protocol):
    family: str
    prediction_type: str
    path: Path


@dataclass
class TrainingRecord:
    """What the trainer knows about a run, in kohya's terms (its argument names)."""
    output_name: str
    learning_rate: float = 1e-4
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    max_train_steps: int = 1600
    num_epochs: int = 1
    optimizer: str = "torch.optim.adamw.AdamW"  # kohya: the optimizer's module + class name
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    clip_skip: int | None = None
    seed: int | None = None
    noise_offset: float | None = None
    min_snr_gamma: float | None = None
    num_train_images: int = 0
    batch_size_per_device: int = 1
    resolution: tuple[int, int] = (512, 512)
    enable_bucket: bool = False
    shuffle_caption: bool = False
    caption_dropout_rate: float = 0.0
    dataset_dir: str = ""  # the folder's name (kohya records base names, never full paths)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)  # {dataset dir name: {tag: count}}
    training_started_at: float = field(default_factory=time.time)
    session_id: int = field(default_factory=lambda: random.randint(0, 2 ** 32))
    training_comment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # further ss_* keys, written as given (str())


def _s(v: Any) -> str:
    return str(v)  # kohya's rule: str() of the value, so None → "None", True → "True", (512, 512) → "(512, 512)"


def base_model_version(family: str, prediction_type: str = "epsilon") -> str:
    """kohya's ``ss_base_model_version``: sd_v1 / sd_v2 (with ``_v`` for v-prediction) / sdxl_base_v1-0."""
    if family == "sdxl":
        return BASE_MODEL_VERSIONS["sdxl"]
    return BASE_MODEL_VERSIONS[family] + ("_v" if prediction_type == "v_prediction" else "")


def modelspec_metadata(family: str, prediction_type: str, *, title: str, resolution: tuple[int, int],
                       timestamp: float, clip_skip: int | None = None) -> dict[str, str]:
    """The ``modelspec.*`` keys kohya writes for a LoRA (Stability AI's model spec 1.0.1)."""
    v = prediction_type == "v_prediction"
    arch = {"sd1": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base",
            "sd2": "stable-diffusion-v2-768-v" if v else "stable-diffusion-v2-512"}[family]
    from webui.version import VERSION
    meta = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": f"{arch}/lora",
        # kohya: SDXL LoRAs name Stability's implementation (sgm), SD1/SD2 ones diffusers
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models" if family == "sdxl"
        else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "modelspec.prediction_type": "v" if v else "epsilon",
        "modelspec.implementation_version": VERSION,
    }
    if clip_skip is not None:
        meta["modelspec.encoder_layer"] = str(clip_skip)
    return meta


def kohya_metadata(network: LoraNetwork, model: BaseModel, record: TrainingRecord, *, steps: int, epoch: int,
                   sd_model_sha256: str | None = None, finished_at: float | None = None) -> dict[str, str]:
    """Every ``ss_*`` and ``modelspec.*`` value for a file saved after ``steps`` optimizer steps.
    ``sd_model_sha256``: the base checkpoint's full sha256 if already known (hashing a multi-GB file
    takes seconds)."""
    spec, r = network.spec, record
    finished = time.time() if finished_at is None else finished_at
    batches = -(-r.num_train_images // max(1, r.batch_size_per_device)) if r.num_train_images else 0
    freq = r.tag_frequency or ({r.dataset_dir: {}} if r.dataset_dir else {})
    subset = {"img_count": r.num_train_images, "num_repeats": 1, "color_aug": False, "flip_aug": False,
              "random_crop": False, "shuffle_caption": r.shuffle_caption, "keep_tokens": 0,
              "image_dir": r.dataset_dir, "class_tokens": None, "is_reg": False}
    dataset = {"is_dreambooth": True, "batch_size_per_device": r.batch_size_per_device,
               "num_train_images": r.num_train_images, "num_reg_images": 0, "resolution": list(r.resolution),
               "enable_bucket": r.enable_bucket, "tag_frequency": freq, "bucket_info": None, "subsets": [subset]}
    meta: dict[str, Any] = {
        "ss_session_id": r.session_id,
        "ss_training_started_at": r.training_started_at,
        "ss_output_name": r.output_name,
        "ss_learning_rate": r.learning_rate,
        "ss_text_encoder_lr": r.text_encoder_lr,
        "ss_unet_lr": r.unet_lr,
        "ss_num_train_images": r.num_train_images,
        "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": batches,
        "ss_num_epochs": r.num_epochs,
        "ss_gradient_checkpointing": bool(r.gradient_checkpointing),
        "ss_gradient_accumulation_steps": r.gradient_accumulation_steps,
        "ss_max_train_steps": r.max_train_steps,
        "ss_lr_warmup_steps": r.lr_warmup_steps,
        "ss_lr_scheduler": r.lr_scheduler,
        "ss_network_module": "networks.lora",
        "ss_network_dim": spec.rank,
        "ss_network_alpha": float(spec.alpha),
        "ss_network_args": json.dumps(spec.network_args()),
        "ss_mixed_precision": r.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": model.family == "sd2",
        "ss_base_model_version": base_model_version(model.family, model.prediction_type),
        "ss_clip_skip": r.clip_skip,
        "ss_seed": r.seed,
        "ss_noise_offset": r.noise_offset,
        "ss_min_snr_gamma": r.min_snr_gamma,
        "ss_training_comment": r.training_comment,
        "ss_optimizer": r.optimizer,
        "ss_caption_dropout_rate": r.caption_dropout_rate,
        "ss_batch_size_per_device": r.batch_size_per_device,
        "ss_total_batch_size": r.batch_size_per_device * r.gradient_accumulation_steps,
        "ss_resolution": tuple(r.resolution),
        "ss_enable_bucket": bool(r.enable_bucket),
        "ss_shuffle_caption": bool(r.shuffle_caption),
        "ss_dataset_dirs": json.dumps({r.dataset_dir: {"n_repeats": 1, "img_count": r.num_train_images}}
                                      if r.dataset_dir else {}),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_tag_frequency": json.dumps(freq),
        "ss_datasets": json.dumps([dataset]),
        "ss_training_finished_at": finished,
        "ss_steps": steps,
        "ss_epoch": epoch,
    }
    path = Path(model.path)
    meta["ss_sd_model_name"] = path.name
    if path.is_file():
        meta["ss_sd_model_hash"] = legacy_model_hash(path)
        meta["ss_new_sd_model_hash"] = sd_model_sha256 or sha256_file(path)
    meta.update(r.extra)
    out = {k: _s(v) for k, v in meta.items()}
    out.update(modelspec_metadata(model.family, model.prediction_type, title=r.output_name,
                                  resolution=tuple(r.resolution), timestamp=finished, clip_skip=r.clip_skip))
    return out


def sshs_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as kohya precalculates them."""
    raw = st_save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")} or None)
    n = int.from_bytes(raw[:8], "little")
    model_hash = hashlib.sha256(raw[8 + n:]).hexdigest()
    legacy = hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy


def save_dtype(value: str | torch.dtype | None) -> torch.dtype:
    """kohya's ``--save_precision`` names (float / fp16 / bf16) or a dtype; None = float16."""
    if value is None:
        return torch.float16
    if isinstance(value, torch.dtype):
        return value
    try:
        return _SAVE_DTYPES[value.lower()]
    except KeyError:
        raise ValueError(f"save precision must be one of {', '.join(sorted(_SAVE_DTYPES))}, not {value!r}") from None


def save_lora_file(network: LoraNetwork, path: Path | str, metadata: dict[str, str],
                   precision: str | torch.dtype | None = torch.float16) -> Path:
    """Write the network as ``path`` (kohya's layout) with ``metadata`` plus the sshs hashes."""
    path = Path(path)
    tensors = network.kohya_state_dict(save_dtype(precision))
    meta = {str(k): str(v) for k, v in metadata.items()}
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = sshs_hashes(tensors, meta)
    raw = st_save(tensors, meta)
    atomic_write(path, lambda p: p.write_bytes(raw))
    log.info("Saved LoRA %s (%d modules)", path, len(tensors) // 3)
    return path


# ------------------------------------------------------------------ resumable training state

def _encode(obj: Any, tensors: dict[str, torch.Tensor], key: str) -> Any:
    """JSON-able form of ``obj``; tensors (and numpy arrays) go to ``tensors`` under ``key``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": key, "dtype": obj.dtype.str}
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{key}.{i}") for i, (k, v) in enumerate(obj.items())}
        # int keys (optimizer state by parameter index) must come back as ints
        return {"__items__": [[_encode(k, tensors, f"{key}.k{i}"), _encode(v, tensors, f"{key}.{i}")]
                              for i, (k, v) in enumerate(obj.items())]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise TypeError(f"training state: cannot store {type(obj).__name__} at {key}")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy().astype(np.dtype(obj["dtype"]))
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def capture_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Python's, numpy's, torch's (CPU and, if initialised, CUDA) global RNG states and the named
    generators', so a resumed run draws the same noise, timesteps and batches."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["generators"] = {name: g.get_state() for name, g in (generators or {}).items()}
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name])


@dataclass
class TrainingState:
    step: int
    epoch: int
    settings: dict[str, Any]
    rng: dict[str, Any] | None
    extra: dict[str, Any]


def save_training_state(path: Path | str, network: LoraNetwork, optimizer: torch.optim.Optimizer | None, *,
                        step: int, epoch: int, settings: dict[str, Any], rng: dict[str, Any] | None = None,
                        extra: dict[str, Any] | None = None) -> Path:
    """Write adapters (float32), optimizer state, step/epoch, RNG states (``capture_rng_state()``), the
    run's settings (JSON-able) and ``extra`` (e.g. a GradScaler's state) to one safetensors file."""
    path = Path(path)
    tensors = {f"network/{k}": v.float() for k, v in network.kohya_state_dict().items()}
    body = {
        "step": int(step), "epoch": int(epoch), "settings": settings,
        "optimizer": _encode(optimizer.state_dict(), tensors, "optimizer") if optimizer is not None else None,
        "rng": _encode(rng, tensors, "rng") if rng is not None else None,
        "extra": _encode(extra or {}, tensors, "extra"),
    }
    meta = {"format": STATE_FORMAT, "state": json.dumps(body)}
    raw = st_save(tensors, meta)
    atomic_write(path, lambda p: p.write_bytes(raw))
    log.info("Saved LoRA training state at step %d to %s", step, path)
    return path


def load_training_state(path: Path | str, network: LoraNetwork, optimizer: torch.optim.Optimizer | None = None,
                        *, generators: dict[str, torch.Generator] | None = None,
                        restore_rng: bool = True) -> TrainingState:
    """Put the adapters and the optimizer back as saved (and the RNG states unless ``restore_rng`` is
    False); the next optimizer step then equals the one an uninterrupted run would take."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{path.name} is not a LoRA training state")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    body = json.loads(meta["state"])
    network.load_kohya_state_dict({k[len("network/"):]: v for k, v in tensors.items() if k.startswith("network/")})
    if optimizer is not None and body.get("optimizer") is not None:
        optimizer.load_state_dict(_decode(body["optimizer"], tensors))
    rng = _decode(body["rng"], tensors) if body.get("rng") is not None else None
    if rng is not None and restore_rng:
        restore_rng_state(rng, generators)
    return TrainingState(step=int(body["step"]), epoch=int(body["epoch"]), settings=body.get("settings") or {},
                         rng=rng, extra=_decode(body.get("extra") or {}, tensors))

