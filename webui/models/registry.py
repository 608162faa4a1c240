"""Checkpoint list: scan, name, look up and hash model files (A1111 `sd_models` semantics).

No torch here: listing must stay fast even with hundreds of files. Hashing is
lazy (first load) and cached on disk; a cheap header check flags broken files
without hiding them from the list.
"""
from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from webui.hashes import HashCache, file_stamp, legacy_model_hash

CHECKPOINT_EXTS = (".safetensors", ".ckpt")
EXCLUDED_SUFFIXES = (".vae.safetensors", ".vae.ckpt", ".vae.pt")
re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")
re_hex = re.compile(r"^[0-9a-fA-F]+$")


class CheckpointNotFound(KeyError):
    """No checkpoint matches the requested name, title or hash."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "checkpoint not found"


@dataclass
class CheckpointInfo:
    path: Path
    name: str                    # relative to the checkpoint dir, forward slashes
    stem: str                    # A1111 `name_for_extra`; used as infotext `Model`
    model_name: str              # name with / -> _ and no extension
    is_folder: bool = False      # diffusers layout (model_index.json)
    sha256: str | None = None
    error: str | None = None     # why the file is unusable
    metadata_title: str | None = None  # safetensors `modelspec.title`, if any
    config: Path | None = None   # `<stem>.yaml` beside the file overrides detection
    legacy_hash: str | None = field(default=None, repr=False)

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def name_for_extra(self) -> str:
        return self.stem

    @property
    def filename(self) -> str:
        """A1111's name for the file's path (extensions read `p.sd_model.sd_checkpoint_info.filename`)."""
        return str(self.path)

    @property
    def title(self) -> str:
        return f"{self.name} [{self.shorthash}]" if self.shorthash else self.name

    @property
    def short_title(self) -> str:
        return f"{self.model_name} [{self.shorthash}]" if self.shorthash else self.model_name

    def aliases(self) -> list[str]:
        """Exact strings that select this checkpoint (A1111 `CheckpointInfo.ids`)."""
        ids = [self.model_name, self.title, self.name, self.stem]
        if self.legacy_hash:
            ids += [self.legacy_hash, f"{self.name} [{self.legacy_hash}]"]
        if self.sha256:
            ids += [self.shorthash or "", self.sha256, f"{self.name} [{self.shorthash}]",
                    f"{self.stem} [{self.shorthash}]"]
        return ids


def _natural_key(s: str) -> list[object]:
    """Case-insensitive, digits compared as numbers ("v2" < "v10")."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", s)]


def _safetensors_metadata(header: object) -> dict:
    """`__metadata__` from file_io's `(tensors, metadata)` or a raw header dict."""
    if isinstance(header, tuple) and len(header) == 2 and isinstance(header[1], dict):
        return header[1]
    if isinstance(header, dict) and isinstance(header.get("__metadata__"), dict):
        return header["__metadata__"]
    return {}


def _own_safetensors_header(path: Path) -> dict:
    """Minimal header read, used only if webui.models.file_io is not importable."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("file too small to be safetensors")
        n = int.from_bytes(head, "little")
        if n <= 1 or 8 + n > size:
            raise ValueError(f"header length {n} does not fit in a {size}-byte file")
        header = json.loads(f.read(n).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


# a single-file checkpoint holds weights under at least one of these (LDM layout, any family)
_CHECKPOINT_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.")


def _no_model_weights(header: object) -> str | None:
    """Why a readable safetensors file is no checkpoint: none of its tensors belongs to a Stable
    Diffusion model (a LoRA, an embedding or a VAE dropped into the wrong folder), or None."""
    names = list(header[0]) if isinstance(header, tuple) and isinstance(header[0], dict) else []
    if any(n.startswith("model.diffusion_model.") and (".joint_blocks." in n or ".double_blocks." in n
                                                       or ".x_embedder." in n) for n in names[:4000]):
        return "an SD3/Flux-type transformer model, which is not supported"
    if not names or any(n.startswith(_CHECKPOINT_PREFIXES) for n in names):
        return None
    try:
        from webui.models.detect import _what_is_it
        hint = _what_is_it(names)
    except ImportError:
        hint = ""
    return f"no Stable Diffusion weights in this file ({len(names)} tensors like {names[0]!r}){hint}"


def check_file(path: Path, is_folder: bool) -> tuple[str | None, str | None]:
    """Cheap validity check: (error or None, metadata title or None)."""
    err, title, _transient = _check_file(path, is_folder)
    return err, title


def _check_file(path: Path, is_folder: bool) -> tuple[str | None, str | None, bool]:
    """``check_file`` plus whether the error is transient (the file could not be read just now: an
    I/O error or no permission), which is not remembered: the next refresh looks again."""
    try:
        if is_folder:
            json.loads((path / "model_index.json").read_text(encoding="utf-8"))
            return None, None, False
        if path.stat().st_size == 0:
            return "empty file (0 bytes)", None, False
        if path.suffix.lower() == ".safetensors":
            try:
                from webui.models.file_io import ModelFileError, read_safetensors_header
            except ImportError:
                header = _own_safetensors_header(path)
            else:
                try:
                    header = read_safetensors_header(path)
                except ModelFileError as e:
                    return str(e) or type(e).__name__, None, e.transient
            title = _safetensors_metadata(header).get("modelspec.title")
            return _no_model_weights(header), (str(title) if title else None), False
        with open(path, "rb") as f:  # .ckpt: torch zip archive or a legacy raw pickle
            magic = f.read(4)
        if magic[:4] != b"PK\x03\x04" and magic[:1] != b"\x80":
            return "not a PyTorch checkpoint (neither zip archive nor pickle)", None, False
        return None, None, False
    except OSError as e:
        return f"unreadable: {e}", None, True
    except (ValueError, UnicodeDecodeError) as e:
        return f"unreadable: {e}", None, False


class CheckpointRegistry:
    """Scans `ckpt_dir` (+ `extra_files`, + shipped `builtin` models) into CheckpointInfos."""

    def __init__(self, ckpt_dir: Path, cache_dir: Path, extra_files: Iterable[Path] = (),
                 builtin: Iterable[Path] = ()) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.cache_dir = Path(cache_dir)
        self.extra_files = [Path(p) for p in extra_files]
        self.builtin = [Path(p) for p in builtin]
        self.hash_cache = HashCache(self.cache_dir / "hashes.json")
        self._lock = threading.RLock()
        self._items: list[CheckpointInfo] = []
        # abs path -> (stamp, error, metadata title): header checks and
        # mark_unusable reasons survive refresh while the file is unchanged
        self._checks: dict[str, tuple[tuple[int, int], str | None, str | None]] = {}
        self._unusable: dict[str, tuple[tuple[int, int], str]] = {}

    # ------------------------------------------------------------ scanning
    def _walk(self) -> list[tuple[Path, bool]]:
        found: list[tuple[Path, bool]] = []
        if not self.ckpt_dir.is_dir():
            return found
        for root, dirs, files in os.walk(self.ckpt_dir, followlinks=True):
            rootp = Path(root)
            if "model_index.json" in files and rootp != self.ckpt_dir:
                found.append((rootp, True))
                dirs[:] = []  # its unet/vae files are parts, not checkpoints
                continue
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for fn in files:
                low = fn.lower()
                if low.endswith(CHECKPOINT_EXTS) and not low.endswith(EXCLUDED_SUFFIXES):
                    found.append((rootp / fn, False))
        return found

    def _make_info(self, path: Path, is_folder: bool, name: str | None = None) -> CheckpointInfo:
        if name is None:
            try:
                name = path.absolute().relative_to(self.ckpt_dir.absolute()).as_posix()
            except ValueError:
                name = path.name  # outside the folder (--ckpt, shipped model)
        stem = path.name if is_folder else path.stem
        model_name = name.replace("/", "_")
        if not is_folder:
            model_name = os.path.splitext(model_name)[0]
        yaml = None if is_folder else path.with_suffix(".yaml")
        info = CheckpointInfo(path=path, name=name, stem=stem, model_name=model_name, is_folder=is_folder,
                              config=yaml if yaml is not None and yaml.is_file() else None)
        key = str(path.absolute())
        try:
            stamp = file_stamp(path)
        except OSError as e:
            info.error = f"unreadable: {e}"
            return info
        cached = self._checks.get(key)
        if cached is None or cached[0] != stamp:
            err, title, transient = _check_file(path, is_folder)
            cached = (stamp, err, title)
            if not transient:
                self._checks[key] = cached
        info.error, info.metadata_title = cached[1], cached[2]
        bad = self._unusable.get(key)
        if bad is not None:
            if bad[0] == stamp:
                info.error = bad[1]
            else:
                del self._unusable[key]  # file replaced: give it another chance
        info.sha256 = self.hash_cache.lookup(path)  # title shows the hash once known
        return info

    def refresh(self) -> list[CheckpointInfo]:
        with self._lock:
            items = [self._make_info(p, is_folder) for p, is_folder in self._walk()]
            seen = {str(i.path.resolve()) for i in items}
            for p in self.extra_files + self.builtin:
                if p.exists() and str(p.resolve()) not in seen:
                    is_folder = p.is_dir()
                    items.append(self._make_info(p, is_folder))
                    seen.add(str(p.resolve()))
            items.sort(key=lambda i: _natural_key(i.name))
            self._items = items
            return list(items)

    def list(self) -> list[CheckpointInfo]:
        with self._lock:
            return list(self._items)

    # ------------------------------------------------------------ lookup
    def get(self, query: str) -> CheckpointInfo:
        """A1111 `get_closet_checkpoint_match`: alias, then substring of title, then without [hash]."""
        if not query:
            raise CheckpointNotFound("empty checkpoint name")
        with self._lock:
            items = list(self._items)
        for info in items:
            if query in info.aliases():
                return info
        if len(query) == 8 and re_hex.match(query):  # old 8-hex hash: compute lazily
            for info in items:
                if not info.is_folder and info.legacy_hash is None:
                    try:
                        info.legacy_hash = legacy_model_hash(info.path)
                    except OSError:
                        continue
                if info.legacy_hash == query.lower():
                    return info
        for q in (query, re_strip_checksum.sub("", query)):
            found = sorted((i for i in items if q and q in i.title), key=lambda i: len(i.title))
            if found:
                return found[0]
        known = ", ".join(i.title for i in items[:10]) or "none"
        raise CheckpointNotFound(f"checkpoint not found: {query!r} (available: {known})")

    # ------------------------------------------------------------ hashes/errors
    def ensure_hash(self, info: CheckpointInfo) -> str:
        """Full sha256 of the file (or folder), computed once and cached on disk."""
        digest = self.hash_cache.get_or_compute(info.path, "sha256")
        with self._lock:
            for other in self._items:  # the list may hold a different object for the same file
                if other.path == info.path:
                    other.sha256 = digest
        info.sha256 = digest
        return digest

    def mark_unusable(self, info: CheckpointInfo, reason: str) -> None:
        """Remember why a file failed to load until it changes on disk (only for a file that is itself
        broken: a transient failure, see ``file_checks.is_transient_failure``, is not marked)."""
        key = str(info.path.absolute())
        try:
            stamp = file_stamp(info.path)
        except OSError:
            stamp = (-1, -1)
        with self._lock:
            self._unusable[key] = (stamp, reason)
            for other in self._items:
                if other.path == info.path:
                    other.error = reason
        info.error = reason
