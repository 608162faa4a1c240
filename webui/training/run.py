"""The seam between a trainer and the app: what a training run gets (`TrainRun`) and gives back
(`TrainOutcome`). The service (webui/services/training.py) builds a TrainRun inside a queue job; the
trainers (embedding_train, hypernetwork_train, lora_train) only see this object, so they are
testable without the server and never reach for shared services."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

from PIL import Image


@dataclass
class TrainPaths:
    data_dir: Path          # relative log directories are resolved against it (A1111: the webui folder)
    embeddings_dir: Path
    hypernetwork_dir: Path
    lora_dir: Path


@dataclass
class TrainRun:
    """Everything a trainer may use.

    - `model`: the LoadedModel being trained on (its weights are never changed by TI/hypernetwork
      training; LoRA adds removable adapters).
    - `options`: a read-only mapping of the settings (save_optimizer_state, training_write_csv_every, ...).
    - `progress`: the job's JobState — the trainer sets `sampling_step`/`sampling_steps` (step of max),
      `textinfo` ("[name] step N, loss L, lr R"), `current_image` (latest preview); `progress.check()`
      raises Interrupted when the user pressed Interrupt: catch it, save, and return `interrupted=True`.
    - `pause_point(hidden)`: call after every optimizer step. When generation jobs are waiting, the
      service runs them there, inside `hidden()` — a context manager from the trainer that takes the
      weights being trained out of the model for that time (LoRA: adapters disabled; hypernetwork:
      its hooks removed) and restores train mode/requires_grad afterwards.
    - `preview(prompt, negative_prompt, steps, sampler_name, cfg_scale, seed, width, height)`: one
      txt2img image with the model as it is now (the trainer activates what it trains around it).
    """
    model: Any
    options: Any
    paths: TrainPaths
    progress: Any
    pause_point: Callable[[Callable[[], ContextManager[Any]]], None] = \
        field(default=lambda hidden: None)
    preview: Callable[..., tuple[Image.Image, str]] | None = None  # -> (image, infotext)

    def hidden_nothing(self) -> ContextManager[Any]:
        return contextlib.nullcontext()


@dataclass
class TrainOutcome:
    path: Path                    # the final file (embedding, hypernetwork, LoRA)
    step: int                     # the step it was saved at
    interrupted: bool = False
    log_dir: Path | None = None
    loss_csv: Path | None = None
    previews: list[Path] = field(default_factory=list)
    message: str = ""

    @property
    def info(self) -> str:
        """A1111's Train-tab / API text."""
        what = "interrupted" if self.interrupted else "finished"
        text = f"Training {what} at {self.step} steps.\nSaved: {self.path}"
        return text + (f"\n{self.message}" if self.message else "")
