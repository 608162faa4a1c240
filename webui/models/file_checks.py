"""Cheap per-file checks for the model listings: is a file usable, and which architecture is it for.

Each model kind has a checker (``check_vae_file``, ``check_controlnet_file``, ``check_lora_file``,
``check_hypernetwork_file``) that reads a safetensors header or a weights-only pickle (memory-mapped
where the format allows), never runs code and never keeps tensors.  ``CheckCache`` runs a checker
once per file version (mtime + size), so listings stay fast and a replaced file is judged again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from webui.hashes import file_stamp
from webui.memory.oom import is_oom
from webui.models.file_io import ModelFileError

# Cross-attention context width -> family (CLIP-L, OpenCLIP-H, CLIP-L + OpenCLIP-bigG).
CONTEXT_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
FAMILY_NAMES = {"sd1": "SD1", "sd2": "SD2", "sdxl": "SDXL"}


@dataclass(frozen=True)
class FileCheck:
    error: str | None = None   # why the file cannot be used; None when it can
    family: str | None = None  # "sd1" / "sd2" / "sdxl" when the file says; None: any or unknown

    def fits(self, loaded_family: str | None) -> bool | None:
        """Whether it can be used with the loaded model; None when the family is unknown."""
        if self.error:
            return False
        if self.family is None or loaded_family is None:
            return None
        return self.family == loaded_family

    def note(self, loaded_family: str | None) -> str:
        """A short reason for a listing ("" when nothing is wrong)."""
        if self.error:
            return f"unusable: {self.error}"
        if self.fits(loaded_family) is False:
            return (f"made for {FAMILY_NAMES.get(self.family or '', self.family)}, the loaded model is "
                    f"{FAMILY_NAMES.get(loaded_family or '', loaded_family)}")
        return ""


def is_transient_failure(exc: BaseException) -> bool:
    """A failure that says nothing about the file: out of host or device memory, an I/O error or a
    read interrupted (the disk, the network share, permissions).  Such a file is not marked unusable:
    the next try may well succeed.  A file whose bytes are wrong (bad header, truncated, not a model)
    raises ModelFileError without ``transient``."""
    if isinstance(exc, ModelFileError):
        return exc.transient
    return isinstance(exc, (OSError, MemoryError)) or is_oom(exc)


def context_family(width: int | None) -> str | None:
    return CONTEXT_FAMILIES.get(int(width)) if width is not None else None


class CheckCache:
    """Memo of one checker's verdicts keyed by path, valid while the file's stamp is unchanged."""

    def __init__(self, checker: Callable[[Path], FileCheck]) -> None:
        self._checker = checker
        self._seen: dict[Path, tuple[tuple[int, int], FileCheck]] = {}

    def get(self, path: Path) -> FileCheck:
        try:
            stamp = file_stamp(path)
        except OSError as e:
            return FileCheck(f"unreadable: {e.strerror or e}")
        hit = self._seen.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        if stamp[1] == 0:
            result = FileCheck("file is empty (0 bytes); the download or copy probably failed")
        else:
            try:
                result = self._checker(path)
            except (ModelFileError, OSError, MemoryError, ValueError, KeyError, IndexError, TypeError,
                    RuntimeError) as e:
                reason = e.reason if isinstance(e, ModelFileError) else f"{type(e).__name__}: {e}"
                if is_transient_failure(e):  # not remembered: the next look reads the file again
                    return FileCheck(f"unreadable just now: {reason}")
                result = FileCheck(reason)
        self._seen[path] = (stamp, result)
        return result
