"""Which device and dtypes the model parts use, decided once from the flags.

Placement (which part sits on the device when) is the memory manager's job (manager.py); this is
the fixed part the flags describe: `--use-cpu all`, `--device-id`, `--precision`, `--no-half`,
`--no-half-vae`, `--upcast-sampling`, `--bf16`, `--disable-nan-check`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device
    unet_dtype: torch.dtype
    vae_dtype: torch.dtype
    text_dtype: torch.dtype
    autocast: bool
    upcast_attention: bool = False   # --upcast-sampling: fp16 weights, attention computed in fp32
    nan_check: bool = True           # re-decode in fp32 when the VAE gives NaNs

    @classmethod
    def from_flags(cls, use_cpu: list[str], device_id: str | None, precision: str, no_half: bool,
                   no_half_vae: bool, *, upcast_sampling: bool = False, bf16: bool = False,
                   nan_check: bool = True) -> "DevicePolicy":
        on_cpu = "all" in use_cpu or "sd" in use_cpu or not torch.cuda.is_available()
        if on_cpu:
            # fp16 matmuls on CPU are slow and lossy; A1111 also runs fp32 there.
            f32 = torch.float32
            return cls(torch.device("cpu"), f32, f32, f32, False, False, nan_check)
        dev = torch.device(f"cuda:{device_id}" if device_id not in (None, "") else "cuda")
        full = no_half or precision == "full"
        half = torch.bfloat16 if bf16 and torch.cuda.is_bf16_supported() else torch.float16
        unet = torch.float32 if full else half
        vae = torch.float32 if (full or no_half_vae) else half
        # --upcast-sampling replaces autocast: weights stay half, attention runs in fp32
        autocast = precision == "autocast" and not full and not upcast_sampling
        return cls(dev, unet, vae, unet, autocast, upcast_sampling and not full, nan_check)

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.autocast and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=self.unet_dtype if self.unet_dtype != torch.float32 else torch.float16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        extra = " upcast-attention" if self.upcast_attention else ""
        return f"{self.device} unet={self.unet_dtype} vae={self.vae_dtype} autocast={self.autocast}{extra}"


def empty_cache() -> None:
    """After a model was dropped: collect it, give the CUDA cache back, and hand glibc's freed heap
    pages back to the system (without the trim, RSS keeps what the last model used and creeps up
    a few percent per checkpoint switch although nothing leaks)."""
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    import ctypes
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass


@contextlib.contextmanager
def inference() -> Iterator[None]:
    with torch.inference_mode():
        yield
