"""A1111's `modules.devices` on the app's device policy (decided once from the flags).

`device` (where the model runs), `cpu`, `dtype` / `dtype_unet` (the UNet's), `dtype_vae`,
`dtype_inference`, `torch_gc()` (frees the CUDA cache and collected memory), `autocast()` (the
app's autocast context: fp16 autocast on CUDA with `--precision autocast`, nothing otherwise),
`without_autocast()`, `get_optimal_device()`, `get_device_for(task)`, `has_mps()`,
`cond_cast_unet(x)`, `cond_cast_float(x)`.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from webui.extensions.compat import binding
from webui.memory.devices import empty_cache

cpu = torch.device("cpu")


def _policy() -> Any:
    return binding.current().models.policy


def __getattr__(name: str) -> Any:
    if name in ("device", "device_interrogate", "device_gfpgan", "device_esrgan", "device_codeformer"):
        return _policy().device
    if name in ("dtype", "dtype_unet", "dtype_inference"):
        return _policy().unet_dtype
    if name == "dtype_vae":
        return _policy().vae_dtype
    raise AttributeError(f"module 'modules.devices' has no attribute {name!r}")


def get_optimal_device() -> torch.device:
    return _policy().device


def get_optimal_device_name() -> str:
    return str(_policy().device)


def get_device_for(task: str) -> torch.device:
    use_cpu = getattr(binding.current().args, "use_cpu", None) or []
    return cpu if "all" in use_cpu or task in use_cpu else _policy().device


def has_mps() -> bool:
    return False  # the app runs on CUDA or the CPU


def torch_gc() -> None:
    empty_cache()


def autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    if disable:
        return contextlib.nullcontext()
    return _policy().autocast_context()


def without_autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    if disable or not torch.is_autocast_enabled():
        return contextlib.nullcontext()
    return torch.autocast("cuda", enabled=False)


def cond_cast_unet(x: torch.Tensor) -> torch.Tensor:
    return x.to(_policy().unet_dtype)


def cond_cast_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype != torch.float32 else x

__all__ = [
    "autocast", "cond_cast_float", "cond_cast_unet", "cpu", "get_device_for", "get_optimal_device",
    "get_optimal_device_name", "has_mps", "torch_gc", "without_autocast"
]
