"""What a training run is asked to do: A1111's Train-tab / API fields with A1111's defaults
(embedding, hypernetwork) and ours for LoRA (kohya-like names). The API's request models, the Train
tab and the trainers all use these dataclasses, so a default lives in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class CommonTrainParams:
    """Fields every trainer shares (A1111's names)."""
    data_root: str = ""
    log_directory: str = "textual_inversion"
    batch_size: int = 1
    gradient_step: int = 1
    training_width: int = 512
    training_height: int = 512
    varsize: bool = False                 # "Do not resize images": batches by size bucket
    steps: int = 100000                   # max optimizer steps (after accumulation)
    clip_grad_mode: str = "disabled"      # disabled | value | norm
    clip_grad_value: str = "0.1"          # a schedule in the learning-rate syntax
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"  # once | deterministic | random
    use_weight: bool = False              # PNG alpha as loss weight
    create_image_every: int = 500         # preview every N steps (0 = off)
    template_filename: str = "style_filewords.txt"
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "Euler a"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class EmbeddingTrainParams(CommonTrainParams):
    embedding_name: str = ""
    learn_rate: str = "0.005"
    save_embedding_every: int = 500
    save_image_with_stored_embedding: bool = True


@dataclass
class HypernetworkTrainParams(CommonTrainParams):
    hypernetwork_name: str = ""
    learn_rate: str = "0.00001"
    save_hypernetwork_every: int = 500


@dataclass
class LoraTrainParams(CommonTrainParams):
    """Ours; kohya's names where kohya has the option."""
    name: str = ""
    log_directory: str = "lora_training"
    steps: int = 1600                     # kohya's max_train_steps default
    template_filename: str = "subject_filewords.txt"
    network_dim: int = 4                  # kohya's defaults: dim 4, alpha 1
    network_alpha: float = 1.0
    network_target: str = "transformer"   # transformer (kohya's default) | attention | locon
    conv_dim: int | None = None           # LoCon 3x3 rank (None = network_dim)
    conv_alpha: float | None = None
    learn_rate: str = "1e-4"              # UNet rate, A1111's schedule syntax
    text_encoder_lr: float = 0.0          # 0 = UNet only
    lr_warmup_steps: int = 0
    optimizer_type: str = "AdamW"         # AdamW | AdamW8bit (bitsandbytes on CUDA)
    max_grad_norm: float = 1.0            # kohya's default clipping (clip_grad_mode "norm" overrides)
    mixed_precision: str = "no"           # no | fp16 | bf16 (CUDA)
    gradient_checkpointing: bool = False
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0            # 0 = off
    save_every: int = 500
    preview_every: int = 500
    save_precision: str = "fp16"          # fp16 | float | bf16
    seed: int = -1
    resume: bool = False                  # continue the run's saved state in the log directory
