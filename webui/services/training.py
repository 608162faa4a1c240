"""The Train tab's service: Create embedding and Create hypernetwork (A1111's first two sub-tabs).

Both run as jobs in the one queue, so they never touch a model that a generation is using, and
the new file is listed right away (`GET /sdapi/v1/embeddings`, `/hypernetworks`, the extra-network
cards) without a restart.  Bad input raises ValueError (NameTakenError when the name is taken)
before anything is queued; a model that cannot be loaded raises ModelLoadError.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from webui.networks.embeddings import EMBEDDING_SUFFIXES
from webui.networks.hypernetworks import HYPERNET_SUFFIXES
from webui.services import training_jobs as tj
from webui.services.jobs import SERVER_OWNER, JobQueue, JobState
from webui.services.model_service import ModelService
from webui.services.training_owners import TrainOwners
from webui.serving.caller import Caller
from webui.training import embedding_files as ef
from webui.training import hypernetwork_files as hf
from webui.training.params import EmbeddingTrainParams, HypernetworkTrainParams, LoraTrainParams
from webui.training.run import TrainOutcome, TrainPaths

log = logging.getLogger(__name__)


@dataclass
class Created:
    path: Path
    note: str = ""  # e.g. why the new file will not act on the loaded model

    @property
    def info(self) -> str:
        """A1111's Train-tab message."""
        return f"Created: {self.path}" + (f"\n{self.note}" if self.note else "")


@dataclass
class ActiveRun:
    job: Any            # the queue Job
    kind: str           # embedding | hypernetwork | lora
    name: str           # as written (the LoRA name sanitised)
    log_directory: str


class TrainingService:
    def __init__(self, models: ModelService, queue: JobQueue, embeddings_dir: Path, hypernetwork_dir: Path, *,
                 lora_dir: Path | None = None, data_dir: Path | None = None, settings: Any = None,
                 memory: Any = None, pipeline: Any = None, path_guard: Any = None) -> None:
        self.models = models
        self.path_guard = path_guard  # serving.path_guard: dataset/log folders confined when exposed
        self.queue = queue
        self.embeddings_dir = Path(embeddings_dir)
        self.hypernetwork_dir = Path(hypernetwork_dir)
        self.lora_dir = Path(lora_dir) if lora_dir is not None else self.embeddings_dir.parent / "models" / "Lora"
        self.data_dir = Path(data_dir) if data_dir is not None else self.embeddings_dir.parent
        self.owners = TrainOwners(self.data_dir / "training-owners.json")  # with accounts: whose names
        self.settings = settings
        self.memory = memory
        self.pipeline = pipeline
        self._runs: list[Any] = []  # queued/running train jobs (the Train tab's Interrupt stops them)

    # ------------------------------------------------------------------ create embedding
    def create_embedding(self, name: str, num_vectors_per_token: int = 1, overwrite_old: bool = False,
                         init_text: str = "*", caller: Caller | None = None) -> Created:
        """Write `<embeddings>/<name>.pt` (SDXL: `.safetensors`) from the loaded model's token vectors
        (the default checkpoint is loaded when none is). `caller`: who asks (NotOwnerError for a
        name another account owns)."""
        ef.check_vectors_per_token(num_vectors_per_token)
        clean = ef.sanitize_name(name)
        if not overwrite_old:  # any file of that name refuses it: fail before queueing
            ef.check_free(self.embeddings_dir, clean, self.embeddings_dir / f"{clean}.pt", False, EMBEDDING_SUFFIXES)
        self.owners.claim(caller, "embedding", clean, _exists(self.embeddings_dir, clean, EMBEDDING_SUFFIXES))

        def job(state: JobState) -> Created:
            state.textinfo = f"Creating embedding {clean}"
            model = self.models.require()
            path = ef.create_embedding(model, self.embeddings_dir, clean, num_vectors_per_token,
                                       bool(overwrite_old), init_text if init_text is not None else "")
            db = getattr(model.encoder, "embeddings", None)
            note = ""
            if db is not None:
                db.refresh_if_changed()  # listed (and usable in prompts) from now on
                if clean in db.skipped:
                    note = f"Not usable with the loaded model: {db.skipped[clean]}"
            return Created(path, note)

        return self.queue.call(job, label="create embedding")

    # ------------------------------------------------------------------ create hypernetwork
    def create_hypernetwork(self, name: str, enable_sizes: Sequence[Any] = hf.DEFAULT_SIZES,
                            overwrite_old: bool = False, layer_structure: Any = None,
                            activation_func: str | None = "linear", weight_init: str | None = "Normal",
                            add_layer_norm: bool = False, use_dropout: bool = False,
                            dropout_structure: Any = None, caller: Caller | None = None) -> Created:
        """Write `models/hypernetworks/<name>.pt` with A1111's structure and initialisation."""
        clean = ef.sanitize_name(name)
        sizes = hf.parse_sizes(enable_sizes)
        hf.make_spec(layer_structure, activation_func, weight_init, add_layer_norm, use_dropout, dropout_structure)
        if not overwrite_old:
            ef.check_free(self.hypernetwork_dir, clean, self.hypernetwork_dir / f"{clean}.pt", False, HYPERNET_SUFFIXES)
        self.owners.claim(caller, "hypernetwork", clean, _exists(self.hypernetwork_dir, clean, HYPERNET_SUFFIXES))

        def job(state: JobState) -> Created:
            state.textinfo = f"Creating hypernetwork {clean}"
            cur = self.models.current  # only for the checkpoint fields: a hypernetwork needs no model
            path = hf.create_hypernetwork(self.hypernetwork_dir, clean, sizes, bool(overwrite_old), layer_structure,
                                          activation_func, weight_init, add_layer_norm, use_dropout,
                                          dropout_structure, sd_checkpoint=cur.info.shorthash if cur else None,
                                          sd_checkpoint_name=cur.info.model_name if cur else None)
            self.models.hypernetworks.refresh()
            width = self.context_width()
            note = ""
            if width is not None and width not in sizes:
                note = (f"Note: the loaded model's context width is {width}; this hypernetwork has modules for "
                        f"{', '.join(map(str, sizes))} only, so it changes nothing on that model.")
            return Created(path, note)

        return self.queue.call(job, label="create hypernetwork")

    # ------------------------------------------------------------------ train (jobs: webui/services/training_jobs.py)
    def context(self) -> tj.TrainContext:
        paths = TrainPaths(self.data_dir, self.embeddings_dir, self.hypernetwork_dir, self.lora_dir)
        return tj.TrainContext(self.models, self.queue, self.settings if self.settings is not None else _NoSettings(),
                               self.memory, self.pipeline, paths, self.path_guard)

    def submit_train_embedding(self, params: EmbeddingTrainParams, caller: Caller | None = None) -> Any:
        """Check (ValueError; TrainInputNotFound for a missing name or folder; NotOwnerError for a
        name `caller` does not own) and queue the run."""
        ctx = self.context()
        tj.check_embedding(ctx, params)
        self.owners.claim(caller, "embedding", params.embedding_name, True)

        def train(run: Any, p: EmbeddingTrainParams) -> TrainOutcome:
            from webui.training.embedding_train import train_embedding
            return train_embedding(run, p)
        return self._track(tj.submit_training(ctx, "train-embedding", params, train, owner=_owner(caller)), "embedding",
                           params.embedding_name, params.log_directory)

    def submit_train_hypernetwork(self, params: HypernetworkTrainParams, caller: Caller | None = None) -> Any:
        ctx = self.context()
        tj.check_hypernetwork(ctx, params)
        self.owners.claim(caller, "hypernetwork", params.hypernetwork_name, True)

        def train(run: Any, p: HypernetworkTrainParams) -> TrainOutcome:
            from webui.training.hypernetwork_train import train_hypernetwork
            return train_hypernetwork(run, p)
        return self._track(tj.submit_training(ctx, "train-hypernetwork", params, train, owner=_owner(caller)), "hypernetwork",
                           params.hypernetwork_name, params.log_directory)

    def submit_train_lora(self, params: LoraTrainParams, caller: Caller | None = None) -> Any:
        ctx = self.context()
        params = tj.check_lora(ctx, params)
        self.owners.claim(caller, "lora", params.name, (self.lora_dir / f"{params.name}.safetensors").exists())

        def train(run: Any, p: LoraTrainParams) -> TrainOutcome:
            from webui.training.lora_train import train_lora
            return train_lora(run, p)
        return self._track(tj.submit_training(ctx, "train-lora", params, train, bool(params.gradient_checkpointing),
                                              owner=_owner(caller)),
                           "lora", params.name, params.log_directory)

    def _track(self, job: Any, kind: str, name: str, log_directory: str) -> Any:
        job.train_run = ActiveRun(job, kind, name, log_directory)  # what a page needs to follow it
        self._runs = [j for j in self._runs if not j.future.done()] + [job]
        return job

    def active_runs(self) -> list["ActiveRun"]:
        """Queued and running train jobs, oldest first (a page opened later follows them)."""
        return [j.train_run for j in self._runs if not j.future.done()]

    def interrupt_training(self, owner: str | None = None) -> bool:
        """Stop the running training (even while a generation is served between its steps) and drop
        queued ones (only `owner`'s when given); False when none was queued or running."""
        runs = [j for j in self._runs if not j.future.done() and (owner is None or j.owner == owner)]
        for job in runs:
            if not self.queue.cancel(job):
                job.state.interrupt()
        return bool(runs)

    def train_embedding(self, params: EmbeddingTrainParams, caller: Caller | None = None) -> TrainOutcome:
        """A1111's Train Embedding: returns when the run ends (finished or interrupted)."""
        return self.submit_train_embedding(params, caller).result()

    def train_hypernetwork(self, params: HypernetworkTrainParams, caller: Caller | None = None) -> TrainOutcome:
        return self.submit_train_hypernetwork(params, caller).result()

    def train_lora(self, params: LoraTrainParams, caller: Caller | None = None) -> TrainOutcome:
        return self.submit_train_lora(params, caller).result()

    # ------------------------------------------------------------------ lists for the tab
    def context_width(self) -> int | None:
        """The loaded UNet's cross-attention context width (the hypernetwork module size it uses)."""
        cur = self.models.current
        width = getattr(getattr(cur.sd.unet, "config", None), "cross_attention_dim", None) if cur else None
        return width if isinstance(width, int) else None

    def embedding_names(self) -> list[str]:
        cur = self.models.current
        db = getattr(cur.encoder, "embeddings", None) if cur is not None else None
        if db is None:
            return []
        db.refresh_if_changed()
        return sorted(db.loaded, key=str.lower)

    def hypernetwork_names(self) -> list[str]:
        self.models.hypernetworks.refresh()
        return sorted(self.models.hypernetworks.files, key=str.lower)


def _exists(folder: Path, name: str, suffixes: Sequence[str]) -> bool:
    return any((folder / f"{name}{s}").exists() for s in suffixes)


class _NoSettings:
    """Stand-in for a service built without settings (the trainers then use their defaults)."""

    def all(self) -> dict[str, Any]:
        return {}


__all__ = ["ActiveRun", "Created", "TrainingService"]


def _owner(caller: Caller | None) -> str:
    """Whose job a run is: the caller's, or the server's for in-process calls without one."""
    return caller.owner if caller is not None else SERVER_OWNER
