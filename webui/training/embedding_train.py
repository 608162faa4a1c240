"""Textual-inversion training (A1111's "Train Embedding"), for SD1/SD2 and SDXL embeddings.

Only the embedding's vectors are trained (AdamW, weight decay 0, as A1111).  Each training prompt
(a template line with ``[name]`` and ``[filewords]`` filled in) is encoded by the model's own
PromptEncoder with the vectors being trained written over the name's placeholder tokens, with
gradients (``PromptEncoder.encode_for_training``); SDXL trains the clip_l and clip_g vectors
together, its pooled embedding coming from the second encoder as in generation.  The file is read
with its stored ``step`` and saved back (to the embeddings folder, with the new step) at the end
or on interrupt; snapshots, previews, ``image_embeddings`` PNGs and the loss CSV go to the log dir
(webui/training/train_loop.py runs the loop).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from PIL import Image

from webui.networks.embeddings import EMBEDDING_SUFFIXES, TextualInversion
from webui.prompts.chunking import EmbeddingLookup
from webui.prompts.encoder import EncodeOptions
from webui.training import embedding_files as ef
from webui.training.image_embedding import save_image_embedding
from webui.training.logdir import TrainingLogDir
from webui.training.params import EmbeddingTrainParams
from webui.training.run import TrainOutcome, TrainRun
from webui.training.train_loop import option, refreeze, run_training, validate

log = logging.getLogger(__name__)


@dataclass
class TrainedEmbedding:
    """The embedding being trained, as the prompt path sees an embedding (chunking.Embedding)."""
    name: str
    per_encoder: list[torch.nn.Parameter]

    @property
    def vectors(self) -> int:
        return int(self.per_encoder[0].shape[0])

    def vectors_for(self, encoder_index: int) -> torch.Tensor:
        return self.per_encoder[encoder_index]


class TrainingLookup:
    """The model's embedding database with the trained embedding put first for its own name (the
    file being trained is usually in the database too, with its old vectors)."""

    def __init__(self, base: EmbeddingLookup | None, trained: TrainedEmbedding, tokenizers: Sequence[Any]) -> None:
        self.base, self.trained = base, trained
        self.ids = [tuple(tok(trained.name, add_special_tokens=False)["input_ids"]) for tok in tokenizers]

    def find_at(self, tokenizer_index: int, tokens: Sequence[int], position: int) -> tuple[Any, int]:
        ids = self.ids[tokenizer_index] if tokenizer_index < len(self.ids) else ()
        mine = bool(ids) and tuple(tokens[position:position + len(ids)]) == ids
        other, n = self.base.find_at(tokenizer_index, tokens, position) if self.base is not None else (None, 0)
        if mine and (other is None or len(ids) >= n):
            return self.trained, len(ids)
        return other, n


def find_embedding_file(run: TrainRun, name: str) -> Path:
    """The file of embedding ``name`` in the run's embeddings folder (subfolders too), else the one
    the model's embedding database loaded under that name."""
    folder = Path(run.paths.embeddings_dir)
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file() and path.stem == name and path.suffix.lower() in EMBEDDING_SUFFIXES:
            return path
    db = getattr(run.model.encoder, "embeddings", None)
    if db is not None and name in db.loaded:
        return Path(db.loaded[name].path)
    raise ValueError(f"embedding {name!r} not found in {folder}")


class EmbeddingTrainee:
    kind = "embedding"
    grad_through_text = True

    def __init__(self, run: TrainRun, name: str, image_embeddings: bool = False) -> None:
        self.run = run
        self.with_image_embeddings = image_embeddings  # previews also go to image_embeddings/
        model = run.model
        self.model = model
        self.final_path = find_embedding_file(run, name)
        stored = ef.read_embedding(self.final_path)
        self.name, self.step = name, int(stored.step or 0)
        self.sdxl = model.sd.family == "sdxl"
        self.snapshot_suffix = ".safetensors" if self.sdxl else ".pt"
        keys = list(ef.SDXL_KEYS) if self.sdxl else [""]
        if set(stored.vectors) != set(keys):
            kind = "an SDXL" if "clip_l" in stored.vectors else "an SD1/SD2"
            raise ValueError(f"{self.final_path.name} is {kind} embedding; the loaded model is {model.sd.family}")
        device = torch.device(model.policy.device)
        params = []
        for key, te in zip(keys, model.sd.text_encoders):
            vec = stored.vectors[key]
            width = int(te.get_input_embeddings().weight.shape[1])
            if vec.ndim != 2 or vec.shape[1] != width:
                raise ValueError(f"{self.final_path.name}: vectors of width {vec.shape[-1]}, the model's text "
                                 f"encoder needs {width}")
            params.append(torch.nn.Parameter(vec.detach().to(device, torch.float32).clone()))
        self.keys = keys
        self.trained = TrainedEmbedding(name, params)
        self.lookup = TrainingLookup(getattr(model.encoder, "embeddings", None), self.trained, model.sd.tokenizers)
        self.opts = EncodeOptions(clip_skip=int(option(run, "CLIP_stop_at_last_layers", 1)))

    # ---- what the loop asks
    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.trained.per_encoder)

    def vectors(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """The current vectors as `save_embedding` takes them (detached, CPU)."""
        cpu = [p.detach().to("cpu", torch.float32).clone() for p in self.trained.per_encoder]
        return dict(zip(ef.SDXL_KEYS, cpu)) if self.sdxl else cpu[0]

    def make_optimizer(self) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW(self.parameters(), lr=0.0, weight_decay=0.0)  # the schedule sets the rate
        # A1111 reuses the saved state only with the option on and only if it belongs to these vectors
        if option(self.run, "save_optimizer_state", False):
            state = ef.load_optimizer_state(self.final_path, self.vectors())
            if state is not None:
                opt.load_state_dict(state)
                log.info("Loaded the optimizer state of %s", self.final_path.name)
            else:
                log.info("No saved optimizer state for %s", self.final_path.name)
        return opt

    def conditioning(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        cond = self.model.encoder.encode_for_training(prompts, self.lookup, self.opts)
        return cond.cross_attn, cond.pooled

    def step_parts(self) -> list[Any]:
        memory = self.model.memory
        if memory is None:
            return []
        return [memory.part_of(m) for m in (self.model.sd.unet, *self.model.sd.text_encoders)]

    def train_mode(self, on: bool) -> None:
        for p in self.trained.per_encoder:
            p.requires_grad_(on)

    @contextlib.contextmanager
    def hidden(self) -> Iterator[None]:
        """Generation between steps: the vectors being trained live only here (prompts naming the
        embedding get the file's), so nothing to take out; the model is frozen again afterwards."""
        try:
            yield
        finally:
            refreeze(self.model)
            self.train_mode(True)

    @contextlib.contextmanager
    def previewing(self) -> Iterator[None]:
        """The current vectors under the embedding's name in the model's database for the preview."""
        db = getattr(self.model.encoder, "embeddings", None)
        if db is None:
            yield
            return
        old = db.loaded.get(self.name)
        cpu = [p.detach().to("cpu", torch.float32).clone() for p in self.trained.per_encoder]
        db.add(self.name, TextualInversion(self.name, self.final_path, cpu, self.step))
        try:
            yield
        finally:
            if old is not None:
                db.add(self.name, old)
            else:
                db.load()

    def data(self, name: str) -> dict[str, Any]:
        """The file's dict as A1111 writes it (what the image_embeddings PNG carries)."""
        info = self.model.info
        meta = {"name": name, "step": self.step, "sd_checkpoint": info.shorthash,
                "sd_checkpoint_name": info.model_name}
        vec = self.vectors()
        if isinstance(vec, dict):
            return {**vec, **meta}
        return {"string_to_token": {"*": ef.PLACEHOLDER_TOKEN_ID}, "string_to_param": {"*": vec}, **meta}

    def save(self, path: Path, step: int, name: str, with_optimizer: torch.optim.Optimizer | None) -> Path:
        info = self.model.info
        state = with_optimizer.state_dict() if with_optimizer is not None else None
        ef.save_embedding(path, self.vectors(), name=name, step=step, sd_checkpoint=info.shorthash,
                          sd_checkpoint_name=info.model_name, optimizer_state=state)
        if Path(path) == self.final_path:
            db = getattr(self.model.encoder, "embeddings", None)
            if db is not None:
                db.refresh_if_changed()  # generation uses the trained vectors from now on
        return Path(path)

    def after_preview(self, image: Image.Image, infotext: str, step: int, log_dir: TrainingLogDir) -> None:
        if not self.with_image_embeddings:
            return
        info = self.model.info
        save_image_embedding(log_dir.image_embedding_path(step), image, self.data(f"{self.name}-{step}"),
                             model_name=info.model_name, model_hash=info.shorthash, step=step, infotext=infotext)

    def settings(self) -> dict[str, Any]:
        return {"num_vectors_per_token": self.trained.vectors, "embedding_file": str(self.final_path)}


def train_embedding(run: TrainRun, params: EmbeddingTrainParams, *, seed: int | None = None) -> TrainOutcome:
    """A1111's Train Embedding on ``run.model``: trains ``params.embedding_name`` (a file in the
    embeddings folder) from its stored step to ``params.steps``; ``seed`` fixes the run's random
    draws (default: derived from the name, so a resume continues the same run).
    Raises ValueError for bad input (also "already trained beyond max steps")."""
    validate(params, params.save_embedding_every, params.embedding_name, "embedding")
    trainee = EmbeddingTrainee(run, params.embedding_name, bool(params.save_image_with_stored_embedding))
    return run_training(run, params, trainee, learn_rate=params.learn_rate,
                        save_every=params.save_embedding_every, seed=seed)


__all__ = ["EmbeddingTrainee", "TrainedEmbedding", "TrainingLookup", "find_embedding_file", "train_embedding"]
