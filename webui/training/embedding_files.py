"""Textual-inversion embedding files as A1111 writes them, for Create embedding and the trainer.

SD1/SD2: `<name>.pt`, a torch pickle of `{string_to_token: {"*": 265}, string_to_param: {"*": [n, dim]},
name, step, sd_checkpoint, sd_checkpoint_name}` (A1111's `Embedding.save`).  SDXL: `<name>.safetensors`
with `clip_l: [n, 768]` and `clip_g: [n, 1280]` (the layout A1111 loads; it cannot train them, we can),
its name/step/checkpoint kept as safetensors metadata strings.  Tensors are float32 on the CPU, so both
A1111's loader and ours (`webui/networks/embeddings.py`) read the files back.  The optimizer state goes
beside the file as `<file>.optim` = `{hash, optimizer_state_dict}`, `hash` being A1111's checksum of the
vectors, so a resumed run only reuses a state that belongs to those vectors.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from webui.networks.embeddings import EMBEDDING_SUFFIXES, EmbeddingFileError, vectors_from_data
from webui.training.file_writes import atomic_write  # noqa: F401  (re-exported for the other writers)

log = logging.getLogger(__name__)

MAX_VECTORS_PER_TOKEN = 75  # A1111's slider range (one 75-token chunk)
PLACEHOLDER_TOKEN_ID = 265  # the CLIP id of "*", which A1111 stores as string_to_token
SDXL_KEYS = ("clip_l", "clip_g")  # SDXL embedding tensors, in text-encoder order


class NameTakenError(ValueError):
    """The target file (or another file with the same name) exists and overwriting was not asked for."""


def sanitize_name(name: str) -> str:
    """A1111's rule: keep alphanumerics and `._- `; a name our loaders would skip is refused."""
    clean = "".join(ch for ch in str(name or "") if ch.isalnum() or ch in "._- ").strip()
    if not clean:
        raise ValueError("the name is empty (it keeps only letters, digits and . _ - and spaces)")
    if clean.startswith("."):
        raise ValueError(f"the name {clean!r} starts with a dot: such files are hidden and never loaded")
    return clean


def check_free(folder: Path, name: str, target: Path, overwrite: bool, suffixes: Sequence[str]) -> None:
    """Refuse to clobber: `target` only with `overwrite`; a same-named file elsewhere in the folder
    (another suffix or a subfolder) never, since the loaders would then see two files for one name."""
    if target.exists() and not overwrite:
        raise NameTakenError(f"file {target} already exists (tick overwrite to replace it)")
    if folder.is_dir():
        for p in folder.rglob(f"{name}.*"):
            if p.stem == name and p.suffix.lower() in suffixes and p.resolve() != target.resolve():
                raise NameTakenError(f"{p} already has the name {name!r}; remove it or choose another name")


def check_vectors_per_token(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_VECTORS_PER_TOKEN:
        raise ValueError(f"vectors per token must be a whole number from 1 to {MAX_VECTORS_PER_TOKEN}, not {n!r}")
    return n


def init_vectors(token_embedding: torch.Tensor, tokenizer: Any, init_text: str, n: int) -> torch.Tensor:
    """[n, width] start vectors: the init text's first n token rows (no BOS/EOS), spread over the n
    slots as A1111 does (slot i takes token i * tokens // n); zeros when the text has no tokens."""
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"][:n] if init_text else []
    width = int(token_embedding.shape[1])
    vec = torch.zeros(n, width, dtype=torch.float32)
    if ids:
        rows = token_embedding.detach()[torch.tensor(ids, device=token_embedding.device)].to("cpu", torch.float32)
        for i in range(n):
            vec[i] = rows[i * len(ids) // n]
    return vec


def embedding_checksum(vectors: torch.Tensor | Mapping[str, torch.Tensor]) -> str:
    """A1111's `Embedding.checksum` (4 hex digits over the vectors × 100), the `.optim` file's hash.
    SDXL pairs hash clip_l then clip_g."""
    parts = [vectors[k] for k in SDXL_KEYS] if isinstance(vectors, Mapping) else [vectors]
    r = 0
    for t in parts:
        for v in (t.detach().reshape(-1).to("cpu", torch.float32) * 100).tolist():
            r = (r * 281 ^ int(v) * 997) & 0xFFFFFFFF
    return f"{r & 0xffff:04x}"


def embedding_path(folder: Path, name: str, sdxl: bool) -> Path:
    return folder / f"{name}{'.safetensors' if sdxl else '.pt'}"


def save_embedding(path: Path, vectors: torch.Tensor | Mapping[str, torch.Tensor], *, name: str, step: int,
                   sd_checkpoint: str | None, sd_checkpoint_name: str | None,
                   optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write an embedding in A1111's layout (`.pt` for one tensor, `.safetensors` for SDXL's pair) and,
    with `optimizer_state`, `<path>.optim`.  Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(vectors, Mapping):
        from safetensors.torch import save_file

        if set(vectors) != set(SDXL_KEYS):
            raise ValueError(f"SDXL embeddings need exactly {SDXL_KEYS}, got {sorted(vectors)}")
        tensors = {k: vectors[k].detach().to("cpu", torch.float32).contiguous() for k in SDXL_KEYS}
        meta = {"name": name, "step": str(int(step)), "sd_checkpoint": sd_checkpoint or "",
                "sd_checkpoint_name": sd_checkpoint_name or ""}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
    else:
        data = {"string_to_token": {"*": PLACEHOLDER_TOKEN_ID},
                "string_to_param": {"*": vectors.detach().to("cpu", torch.float32).contiguous()},
                "name": name, "step": int(step), "sd_checkpoint": sd_checkpoint,
                "sd_checkpoint_name": sd_checkpoint_name}
        atomic_write(path, lambda p: torch.save(data, p))
    if optimizer_state is not None:
        optim = {"hash": embedding_checksum(vectors), "optimizer_state_dict": optimizer_state}
        atomic_write(Path(f"{path}.optim"), lambda p: torch.save(optim, p))
    return path


@dataclass
class StoredEmbedding:
    """An embedding file read back for training: vectors ({"": t} or clip_l/clip_g) and what A1111 stores."""
    path: Path
    vectors: dict[str, torch.Tensor]
    name: str
    step: int
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def tensors(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """What `save_embedding` takes: the tensor, or the SDXL pair."""
        return self.vectors[""] if "" in self.vectors else dict(self.vectors)


def read_embedding(path: Path) -> StoredEmbedding:
    """Read an embedding back as the loader does (weights-only unpickling; safetensors header checked)."""
    from webui.models.file_io import ModelFileError, load_pickle, load_state_dict, read_safetensors_header

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            data: Any = load_state_dict(path)
            meta: Mapping[str, Any] = read_safetensors_header(path)[1] or {}
        else:
            data = meta = load_pickle(path)
    except ModelFileError as e:
        raise EmbeddingFileError(str(e)) from None
    if not isinstance(data, dict):
        raise EmbeddingFileError(f"{path.name}: expected a dict, found {type(data).__name__}")
    vectors = vectors_from_data(data, path.stem)
    try:
        step = int(meta.get("step") or 0)
    except (TypeError, ValueError):
        step = 0
    return StoredEmbedding(path, vectors, str(meta.get("name") or path.stem), step,
                           meta.get("sd_checkpoint") or None, meta.get("sd_checkpoint_name") or None)


def read_optim_file(path: Path) -> dict[str, Any] | None:
    """`<path>.optim` (A1111's optimizer-state file beside an embedding or hypernetwork) as a dict,
    or None when it is missing or unreadable (training then starts a fresh optimizer)."""
    from webui.models.file_io import ModelFileError, load_pickle

    optim = Path(f"{path}.optim")
    if not optim.is_file():
        return None
    try:
        saved = load_pickle(optim)
    except ModelFileError as e:
        log.warning("ignoring %s: %s", optim.name, e)
        return None
    return saved if isinstance(saved, dict) else None


def load_optimizer_state(path: Path, vectors: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """`<path>.optim`'s optimizer state when its hash matches these vectors (A1111's rule), else None."""
    saved = read_optim_file(path)
    if saved is None or saved.get("hash") != embedding_checksum(vectors):
        return None
    return saved.get("optimizer_state_dict")


def create_embedding(model: Any, folder: Path, name: str, num_vectors_per_token: int = 1,
                     overwrite_old: bool = False, init_text: str = "*") -> Path:
    """A1111's Create embedding for a loaded model (`webui.services.model_service.LoadedModel`):
    `<folder>/<name>.pt`, or `.safetensors` with clip_l + clip_g for SDXL, at step 0."""
    n = check_vectors_per_token(num_vectors_per_token)
    name = sanitize_name(name)
    sdxl = model.sd.family == "sdxl"
    folder = Path(folder)
    path = embedding_path(folder, name, sdxl)
    check_free(folder, name, path, bool(overwrite_old), EMBEDDING_SUFFIXES)
    per_encoder = [init_vectors(te.get_input_embeddings().weight, tok, init_text, n)
                   for te, tok in zip(model.sd.text_encoders, model.sd.tokenizers)]
    vectors: torch.Tensor | dict[str, torch.Tensor] = dict(zip(SDXL_KEYS, per_encoder)) if sdxl else per_encoder[0]
    save_embedding(path, vectors, name=name, step=0, sd_checkpoint=model.info.shorthash,
                   sd_checkpoint_name=model.info.model_name)
    log.info("Created embedding %s (%d vector%s per token)", path, n, "" if n == 1 else "s")
    return path


__all__ = ["MAX_VECTORS_PER_TOKEN", "NameTakenError", "StoredEmbedding", "check_free", "create_embedding",
           "embedding_checksum", "embedding_path", "init_vectors", "load_optimizer_state", "read_embedding",
           "sanitize_name", "save_embedding"]
