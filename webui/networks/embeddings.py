"""Textual-inversion embeddings from `models/embeddings`, used by writing the file name in a prompt.

Reads the files A1111 reads (`create_embedding_from_data`): `.pt`/`.bin` with `string_to_param`
(A1111's own trainer), SDXL dicts with `clip_l` + `clip_g`, and single-tensor files such as
`.safetensors` with `emb_params`.  Only embeddings whose width matches the loaded model's text
encoders are usable; the others are listed as skipped with the reason.  Pickled files are read
with `torch.load(weights_only=True)` (file_io.load_pickle): a file that needs more is refused, never executed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from webui.hashes import sha256_file

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")


class EmbeddingFileError(ValueError):
    pass


@dataclass
class TextualInversion:
    name: str
    path: Path
    per_encoder: list[torch.Tensor]  # [n_vectors, width] for each text encoder of the model
    step: int | None = None
    _sha256: str | None = None

    @property
    def vectors(self) -> int:
        return int(self.per_encoder[0].shape[0])

    def vectors_for(self, encoder_index: int) -> torch.Tensor:
        return self.per_encoder[encoder_index]

    @property
    def shorthash(self) -> str:
        """A1111's `TI hashes` value: sha256 of the whole file, 12 hex digits."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256[:12]


def _read(path: Path) -> dict[str, Any]:
    from webui.models.file_io import ModelFileError, load_pickle, load_state_dict

    try:
        if path.suffix.lower() == ".safetensors":
            return load_state_dict(path)  # header validated before any tensor is read
        data = load_pickle(path)
    except ModelFileError as e:
        raise EmbeddingFileError(str(e)) from None
    if not isinstance(data, dict):
        raise EmbeddingFileError(f"{path.name}: expected a dict, found {type(data).__name__}")
    return data


def vectors_from_data(data: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """{"": tensor} for single-encoder embeddings, {"clip_l": …, "clip_g": …} for SDXL ones."""
    if "string_to_param" in data:
        params = data["string_to_param"]
        if len(params) != 1:
            raise EmbeddingFileError(f"{name}: embedding file has {len(params)} vectors in string_to_param, expected 1")
        return {"": next(iter(params.values())).detach().float()}
    if "clip_l" in data and "clip_g" in data:
        return {"clip_l": data["clip_l"].detach().float(), "clip_g": data["clip_g"].detach().float()}
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(data) == 1 and tensors:
        t = tensors[0].detach().float()
        return {"": t.unsqueeze(0) if t.ndim == 1 else t}
    raise EmbeddingFileError(f"{name}: not a textual-inversion embedding (keys: {sorted(data)[:6]})")


@dataclass
class EmbeddingDatabase:
    """Embeddings usable with one loaded model, looked up by the token ids of their names."""
    folder: Path | None
    tokenizers: Sequence[Any]
    widths: Sequence[int]  # token-embedding width of each text encoder
    loaded: dict[str, TextualInversion] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name → why it is not usable
    version: int = 0
    _ids: list[dict[int, list[tuple[tuple[int, ...], TextualInversion]]]] = field(default_factory=list)
    _signature: tuple = ()

    def _folder_signature(self) -> tuple:
        if self.folder is None or not self.folder.is_dir():
            return ()
        return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in self.folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in EMBEDDING_SUFFIXES))

    def refresh_if_changed(self) -> bool:
        """Rescan when files were added, removed or rewritten (A1111 checks before every job)."""
        if self._folder_signature() == self._signature:
            return False
        self.load()
        return True

    def load(self) -> "EmbeddingDatabase":
        self.loaded.clear()
        self.skipped.clear()
        if self.folder is not None and self.folder.is_dir():
            for path in sorted(self.folder.rglob("*")):
                if path.is_file() and path.suffix.lower() in EMBEDDING_SUFFIXES and not path.name.startswith("."):
                    try:
                        self.add(path.stem, self._from_file(path))
                    except EmbeddingFileError as e:
                        self.skipped[path.stem] = str(e)
                    except Exception as e:  # a broken file never stops the others
                        self.skipped[path.stem] = f"{type(e).__name__}: {e}"
        self._signature = self._folder_signature()
        self._reindex()
        return self

    def _from_file(self, path: Path) -> TextualInversion:
        data = _read(path)
        vecs = vectors_from_data(data, path.stem)
        per_encoder = self._fit(path.stem, vecs)
        step = data.get("step") if isinstance(data.get("step"), int) else None
        return TextualInversion(path.stem, path, per_encoder, step)

    def _fit(self, name: str, vecs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if len(self.widths) == 2:  # SDXL: CLIP-L then OpenCLIP bigG
            if "clip_l" not in vecs:
                raise EmbeddingFileError(f"{name}: an SD1/SD2 embedding, the loaded model is SDXL")
            out = [vecs["clip_l"], vecs["clip_g"]]
        else:
            if "" not in vecs:
                raise EmbeddingFileError(f"{name}: an SDXL embedding, the loaded model is not SDXL")
            out = [vecs[""]]
        for t, w in zip(out, self.widths):
            if t.ndim != 2 or t.shape[1] != w:
                raise EmbeddingFileError(f"{name}: vectors of width {t.shape[-1]}, the model's text encoder "
                                         f"needs {w}")
        return out

    def add(self, name: str, emb: TextualInversion) -> None:
        """Register (or replace) an embedding under ``name``; its name's token ids trigger it."""
        emb.name = name
        self.loaded[name] = emb
        self._reindex()

    def _reindex(self) -> None:
        self._ids = []
        for tok in self.tokenizers:
            index: dict[int, list[tuple[tuple[int, ...], TextualInversion]]] = {}
            for name, emb in self.loaded.items():
                ids = tuple(tok(name, add_special_tokens=False)["input_ids"])
                if ids:
                    index.setdefault(ids[0], []).append((ids, emb))
            for entries in index.values():
                entries.sort(key=lambda e: -len(e[0]))  # longest name wins (A1111)
            self._ids.append(index)
        self.version += 1

    def find_at(self, tokenizer_index: int, tokens: Sequence[int], position: int) -> tuple[TextualInversion | None, int]:
        if tokenizer_index >= len(self._ids):
            return None, 0
        for ids, emb in self._ids[tokenizer_index].get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                return emb, len(ids)
        return None, 0
