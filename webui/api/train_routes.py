"""A1111's training API: POST /sdapi/v1/create/embedding, /create/hypernetwork, /train/embedding,
/train/hypernetwork, and ours: /train/lora.

Same request keys and `{"info": ...}` answer as A1111, with two differences: every key but the
name (and, to train, `data_root`) has A1111's UI default (A1111 requires them all), and an error
is an HTTP error with the message (A1111 answers 200 with the error inside `info`): 422 for a bad
value, 404 for an embedding, hypernetwork or dataset folder that does not exist, 409 when the name
is taken and overwriting was not asked for, 413 when the run cannot fit in the device's memory,
400 when no model can be loaded. The train routes return when the run ends (finished or
interrupted through POST /sdapi/v1/interrupt); /sdapi/v1/progress follows it meanwhile.
"""
from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from webui.api.train_requests import (TrainEmbeddingRequest, TrainHypernetworkRequest, TrainLoraRequest,
                                      TrainResponse, train_answer)
from webui.serving.caller import caller_from_scope
from webui.services.model_service import ModelLoadError
from webui.training.embedding_files import MAX_VECTORS_PER_TOKEN, NameTakenError
from webui.training.hypernetwork_files import DEFAULT_LAYER_STRUCTURE, DEFAULT_SIZES, WEIGHT_INITS

Number = Annotated[float, Field(allow_inf_nan=False)]


class CreateEmbeddingRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(..., min_length=1, description="File name; keeps letters, digits and `._- `")
    num_vectors_per_token: int = Field(1, ge=1, le=MAX_VECTORS_PER_TOKEN, description="Vectors per token (1-75)")
    overwrite_old: bool = Field(False, description="Replace an existing embedding of that name")
    init_text: str = Field("*", description="Initialization text: the vectors start as its token embeddings "
                           "(first N tokens spread over the N vectors); empty = zeros")


class CreateHypernetworkRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    name: str = Field(..., min_length=1, description="File name; keeps letters, digits and `._- `")
    enable_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: list(DEFAULT_SIZES), min_length=1,
        description="Context widths to build modules for (768 SD1, 1024 SD2, 320/640/1280 as A1111 offers)")
    overwrite_old: bool = Field(False, description="Replace an existing hypernetwork of that name")
    layer_structure: str | list[Number] | None = Field(
        None, description=f"Layer multipliers, a string such as \"{DEFAULT_LAYER_STRUCTURE}\" or a list; first and "
        f"last must be 1 (null: {DEFAULT_LAYER_STRUCTURE})")
    activation_func: str = Field("linear", description="linear, relu, leakyrelu, elu, swish, tanh, sigmoid or "
                                 "another torch.nn activation, lower-cased")
    weight_init: str = Field("Normal", description=f"One of {', '.join(WEIGHT_INITS)}")
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: str | list[Number] | None = Field(
        None, description="Dropout per layer (\"0, 0.05, 0\"), read only with use_dropout; first and last 0")


class CreateResponse(BaseModel):
    info: str = Field(description="What was created (A1111's text)")


def _answer(run: Callable[[], Any], what: str) -> CreateResponse:
    try:
        created = run()
    except NameTakenError as e:
        raise HTTPException(409, f"create {what} error: {e}") from None
    except ModelLoadError as e:
        raise HTTPException(400, f"create {what} error: no model to take the token vectors from: {e}") from None
    except ValueError as e:
        raise HTTPException(422, f"create {what} error: {e}") from None
    info = f"create {what} filename: {created.path}"
    return CreateResponse(info=info + (f"\n{created.note}" if created.note else ""))


def build_train_router(svc: Any) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["training"])

    def owner_of(request: Request) -> str:
        return caller_from_scope(request.scope, svc.accounts).owner

    def training() -> Any:
        if getattr(svc, "training", None) is None:
            raise HTTPException(503, "training is not available in this server")
        return svc.training

    @r.post("/create/embedding", response_model=CreateResponse)
    def create_embedding(req: CreateEmbeddingRequest) -> CreateResponse:
        """Create an empty textual-inversion embedding (`<embeddings>/<name>.pt`, `.safetensors` with
        clip_l + clip_g for SDXL) from the loaded model's token vectors; usable in prompts at once."""
        t = training()
        return _answer(lambda: t.create_embedding(req.name, req.num_vectors_per_token, req.overwrite_old,
                                                  req.init_text), "embedding")

    @r.post("/create/hypernetwork", response_model=CreateResponse)
    def create_hypernetwork(req: CreateHypernetworkRequest) -> CreateResponse:
        """Create a hypernetwork (`models/hypernetworks/<name>.pt`) in A1111's format, initialised as A1111
        does; `<hypernet:name:1>` in a prompt applies it."""
        t = training()
        return _answer(lambda: t.create_hypernetwork(req.name, req.enable_sizes, req.overwrite_old,
                                                     req.layer_structure, req.activation_func, req.weight_init,
                                                     req.add_layer_norm, req.use_dropout, req.dropout_structure),
                       "hypernetwork")

    @r.post("/train/embedding", response_model=TrainResponse)
    def train_embedding(req: TrainEmbeddingRequest, request: Request) -> TrainResponse:
        """Train a textual-inversion embedding (A1111's Train Embedding) on the loaded model. Returns
        when the run ends: `info` says "Training finished at N steps" (or "interrupted") and the
        saved file. Snapshots, previews and the loss CSV go to `<log_directory>/<date>/<name>/`."""
        t = training()
        return train_answer(lambda: t.train_embedding(req.to_params(), owner_of(request)), "embedding")

    @r.post("/train/hypernetwork", response_model=TrainResponse)
    def train_hypernetwork(req: TrainHypernetworkRequest, request: Request) -> TrainResponse:
        """Train a hypernetwork (A1111's Train Hypernetwork); answers as /train/embedding."""
        t = training()
        return train_answer(lambda: t.train_hypernetwork(req.to_params(), owner_of(request)), "hypernetwork")

    @r.post("/train/lora", response_model=TrainResponse)
    def train_lora(req: TrainLoraRequest, request: Request) -> TrainResponse:
        """Train a LoRA on the loaded checkpoint, saved as `models/Lora/<name>.safetensors` in kohya's
        format (loads here, in A1111 and in ComfyUI); listed by GET /sdapi/v1/loras at once."""
        t = training()
        return train_answer(lambda: t.train_lora(req.to_params(), owner_of(request)), "lora")

    return r


__all__ = ["CreateEmbeddingRequest", "CreateHypernetworkRequest", "CreateResponse", "TrainEmbeddingRequest",
           "TrainHypernetworkRequest", "TrainLoraRequest", "TrainResponse", "build_train_router"]
