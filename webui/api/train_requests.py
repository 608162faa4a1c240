"""Request models of the train routes (A1111's keys; ours for LoRA) and their error mapping.

Defaults come from `webui.training.params`, so the API, the Train tab and the trainers share one
set. Ranges are checked here (422 naming the field) and again by the service for the UI's sake.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Literal

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from webui.services.limits import LimitError
from webui.services.model_service import ModelLoadError
from webui.services.training_jobs import TrainDoesNotFit, TrainInputNotFound
from webui.services.training_owners import NotOwnerError
from webui.training.params import EmbeddingTrainParams, HypernetworkTrainParams, LoraTrainParams

log = logging.getLogger(__name__)

_E, _H, _L = EmbeddingTrainParams(), HypernetworkTrainParams(), LoraTrainParams()


def _schedule_text(v: Any) -> Any:
    """A1111's clients send rates as numbers or as schedule text: both become the text."""
    if isinstance(v, bool):
        raise ValueError("a rate or schedule text, not a boolean")
    return str(v) if isinstance(v, (int, float)) else v


class _Common(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="ignore")

    id_task: str | None = Field(None, description="A1111's task id (accepted, not needed: /progress follows "
                                "the running job)")
    data_root: str = Field(..., min_length=1, description="Dataset folder on the server: images, each with an "
                           "optional same-named .txt caption (else the file name is the caption)")
    log_directory: str = Field(_E.log_directory, min_length=1, description="Where snapshots, previews and the "
                               "loss CSV go: `<log_directory>/<date>/<name>/`; relative to the data dir")
    batch_size: int = Field(_E.batch_size, ge=1, le=64)
    gradient_step: int = Field(_E.gradient_step, ge=1, le=1024, description="Gradient accumulation steps")
    training_width: int = Field(_E.training_width, ge=64, le=2048, multiple_of=8)
    training_height: int = Field(_E.training_height, ge=64, le=2048, multiple_of=8)
    varsize: bool = Field(_E.varsize, description="Do not resize images: batch them by size bucket")
    steps: int = Field(_E.steps, ge=1, description="Max steps (optimizer steps, after accumulation); a file "
                       "that already has this many steps is not trained further")
    clip_grad_mode: Literal["disabled", "value", "norm"] = _E.clip_grad_mode
    clip_grad_value: str = Field(_E.clip_grad_value, description="Clip value, in the learning-rate schedule syntax")
    shuffle_tags: bool = Field(_E.shuffle_tags, description="Shuffle the caption's ','-separated tags")
    tag_drop_out: float = Field(_E.tag_drop_out, ge=0.0, le=1.0, description="Chance to drop each tag")
    latent_sampling_method: Literal["once", "deterministic", "random"] = _E.latent_sampling_method
    use_weight: bool = Field(_E.use_weight, description="Use the PNG alpha channel as loss weight")
    create_image_every: int = Field(_E.create_image_every, ge=0, description="Save a preview every N steps (0: off)")
    template_filename: str = Field(_E.template_filename, description="Prompt template file from "
                                   "textual_inversion_templates/ ([name], [filewords])")
    preview_from_txt2img: bool = Field(_E.preview_from_txt2img, description="Previews use the preview_* keys "
                                       "below instead of a template line")
    preview_prompt: str = _E.preview_prompt
    preview_negative_prompt: str = _E.preview_negative_prompt
    preview_steps: int = Field(_E.preview_steps, ge=1, le=150)
    preview_sampler_name: str = _E.preview_sampler_name
    preview_cfg_scale: float = Field(_E.preview_cfg_scale, ge=1.0, le=30.0)
    preview_seed: int = Field(_E.preview_seed, ge=-1)
    preview_width: int = Field(_E.preview_width, ge=64, le=2048)
    preview_height: int = Field(_E.preview_height, ge=64, le=2048)

    _rates = field_validator("clip_grad_value", mode="before")(_schedule_text)

    def _fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"id_task"})


class TrainEmbeddingRequest(_Common):
    embedding_name: str = Field(..., min_length=1, description="An embedding in the embeddings folder "
                                "(POST /sdapi/v1/create/embedding makes one)")
    learn_rate: str = Field(_E.learn_rate, description="Rate or schedule `0.005:100, 1e-3:1000, 1e-5`")
    save_embedding_every: int = Field(_E.save_embedding_every, ge=0, description="Save a copy every N steps (0: off)")
    save_image_with_stored_embedding: bool = Field(_E.save_image_with_stored_embedding, description="Also save "
                                                   "previews with the embedding in a PNG chunk (image_embeddings/)")

    _lr = field_validator("learn_rate", mode="before")(_schedule_text)

    def to_params(self) -> EmbeddingTrainParams:
        return EmbeddingTrainParams(**self._fields())


class TrainHypernetworkRequest(_Common):
    hypernetwork_name: str = Field(..., min_length=1, description="A hypernetwork in models/hypernetworks")
    learn_rate: str = Field(_H.learn_rate, description="Rate or schedule `1e-5:1000, 1e-6`")
    save_hypernetwork_every: int = Field(_H.save_hypernetwork_every, ge=0, description="Save a copy every N steps")

    _lr = field_validator("learn_rate", mode="before")(_schedule_text)

    def to_params(self) -> HypernetworkTrainParams:
        return HypernetworkTrainParams(**self._fields())


class TrainLoraRequest(_Common):
    name: str = Field(..., min_length=1, description="Output name: models/Lora/<name>.safetensors "
                      "(keeps letters, digits and `._- `)")
    log_directory: str = Field(_L.log_directory, min_length=1, description="Snapshots, previews, the loss CSV "
                               "and the resumable state go to `<log_directory>/<date>/<name>/`")
    steps: int = Field(_L.steps, ge=1, description="Max optimizer steps")
    template_filename: str = _L.template_filename
    network_dim: int = Field(_L.network_dim, ge=1, le=1024, description="Rank")
    network_alpha: float = Field(_L.network_alpha, ge=0.0, description="Alpha (scale = alpha / dim)")
    network_target: Literal["transformer", "attention", "locon"] = Field(
        _L.network_target, description="transformer: kohya's default (attention, ff, proj in/out); attention: q/k/v/"
        "out only; locon: also the ResNet convolutions")
    conv_dim: int | None = Field(_L.conv_dim, ge=1, le=1024, description="LoCon conv rank (null: network_dim)")
    conv_alpha: float | None = Field(_L.conv_alpha, ge=0.0)
    learn_rate: str = Field(_L.learn_rate, description="UNet rate or schedule")
    text_encoder_lr: float = Field(_L.text_encoder_lr, ge=0.0, description="Text encoder rate; 0 = UNet only")
    lr_warmup_steps: int = Field(_L.lr_warmup_steps, ge=0)
    optimizer_type: Literal["AdamW", "AdamW8bit"] = Field(_L.optimizer_type, description="AdamW8bit needs "
                                                          "bitsandbytes on CUDA (else AdamW)")
    max_grad_norm: float = Field(_L.max_grad_norm, ge=0.0, description="Gradient norm clip (0: off)")
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(_L.mixed_precision, description="CUDA only")
    gradient_checkpointing: bool = _L.gradient_checkpointing
    noise_offset: float = Field(_L.noise_offset, ge=0.0, le=1.0)
    min_snr_gamma: float = Field(_L.min_snr_gamma, ge=0.0, description="0: off (5 is usual)")
    save_every: int = Field(_L.save_every, ge=0, description="Save a snapshot and the state every N steps")
    preview_every: int = Field(_L.preview_every, ge=0, description="Preview every N steps (0: off)")
    save_precision: Literal["fp16", "float", "bf16"] = _L.save_precision
    seed: int = Field(_L.seed, ge=-1, description="-1: random")
    resume: bool = Field(_L.resume, description="Continue the saved state of this name's run")

    _lr = field_validator("learn_rate", mode="before")(_schedule_text)

    def to_params(self) -> LoraTrainParams:
        return LoraTrainParams(**self._fields())


class TrainResponse(BaseModel):
    info: str = Field(description="\"Training finished at N steps.\" or \"Training interrupted at N steps.\" "
                      "and the saved file (`Saved: <path>`)")


def train_answer(run: Callable[[], Any], what: str) -> TrainResponse:
    """Run (it blocks until the training ends) and map errors to 4xx with the message."""
    from webui.engine.memory_stages import OutOfDeviceMemory
    from webui.training.dataset import DatasetLoadInterrupted
    try:
        outcome = run()
    except TrainInputNotFound as e:
        raise HTTPException(404, f"train {what} error: {e}") from None
    except NotOwnerError as e:  # another account's name (the server has accounts)
        raise HTTPException(403, f"train {what} error: {e}") from None
    except (TrainDoesNotFit, OutOfDeviceMemory) as e:
        raise HTTPException(413, f"train {what} error: {e}") from None
    except ModelLoadError as e:
        raise HTTPException(400, f"train {what} error: no model to train on: {e}") from None
    except DatasetLoadInterrupted:
        return TrainResponse(info="Training interrupted while preparing the dataset (nothing saved)")
    except LimitError:
        raise  # the app's handler answers 429 naming the limit
    except ValueError as e:
        raise HTTPException(422, f"train {what} error: {e}") from None
    except Exception as e:  # noqa: BLE001 - torch's own OOM, a file that cannot be written: the message goes back
        if "out of memory" in str(e).lower():
            raise HTTPException(413, f"train {what} error: out of device memory: {e}") from None
        log.exception("train %s failed", what)
        raise HTTPException(409, f"train {what} error: {type(e).__name__}: {e}") from None
    return TrainResponse(info=outcome.info)


__all__ = ["TrainEmbeddingRequest", "TrainHypernetworkRequest", "TrainLoraRequest", "TrainResponse", "train_answer"]
