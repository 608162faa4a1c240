"""Recognising an out-of-memory error, whatever part of the stack raised it.

torch raises `torch.OutOfMemoryError` for the caching allocator, but cuDNN and cuBLAS report a
failed workspace allocation as a plain RuntimeError, the CPU allocator says "can't allocate
memory", and MPS has its own wording; all of them mean the same thing to the recovery code.
"""
from __future__ import annotations

import torch

_OOM_TEXTS = (
    "out of memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
    "cudnn_status_not_enough_workspace",
    "can't allocate memory",
    "not enough memory",
)


def is_oom(exc: BaseException) -> bool:
    """True for every flavour of "the device (or the host) ran out of memory"."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        text = str(exc).lower()
        return isinstance(exc, MemoryError) or any(t in text for t in _OOM_TEXTS)
    return False


class InjectedOutOfMemory(torch.OutOfMemoryError):
    """Raised by MemoryManager.inject_oom (tests); handled exactly like a real one."""
