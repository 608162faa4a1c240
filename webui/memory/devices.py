"""Which device and dtypes the model parts use, decided once from the flags.

The automatic VRAM-based placement comes later (memory manager); this is the fixed policy the
flags describe: `--use-cpu all`, `--device-id`, `--precision`, `--no-half`, `--no-half-vae`.
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

    @classmethod
    def from_flags(cls, use_cpu: list[str], device_id: str | None, precision: str, no_half: bool,
                   no_half_vae: bool) -> "DevicePolicy":
        on_cpu = "all" in use_cpu or "sd" in use_cpu or not torch.cuda.is_available()
        if on_cpu:
            # fp16 matmuls on CPU are slow and lossy; A1111 also runs fp32 there.
            f32 = torch.float32
            return cls(torch.device("cpu"), f32, f32, f32, False)
        dev = torch.device(f"cuda:{device_id}" if device_id not in (None, "") else "cuda")
        full = no_half or precision == "full"
        half = torch.float16
        unet = torch.float32 if full else half
        vae = torch.float32 if (full or no_half_vae) else half
        return cls(dev, unet, vae, unet, autocast=(precision == "autocast" and not full))

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.autocast and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        return f"{self.device} unet={self.unet_dtype} vae={self.vae_dtype} autocast={self.autocast}"


def empty_cache() -> None:
    import gc
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def inference() -> Iterator[None]:
    with torch.inference_mode():
        yield
