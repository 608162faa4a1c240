"""A loaded model's stages run through the memory manager, with the recoveries a stage needs.

- sampling: the UNet (and the ControlNets) made ready with an activation reserve for the batch
  and size; an out-of-memory error offloads everything else and runs the pass once more from the
  same noise, then fails the job with what was needed, what was free and which flag helps;
- VAE decode / encode: an out-of-memory error re-runs the work in tiles; a decode that gives NaNs
  (fp16 VAEs overflow) is done again with the VAE in fp32, which it then keeps (A1111's
  "automatically revert VAE to 32-bit floats").
The retries run outside the `except` blocks so the failed attempt's tensors can be freed first.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Callable, TypeVar

import torch

from webui.engine import vae as vae_ops
from webui.memory.estimates import (MB, text_encoder_activation_bytes, unet_activation_bytes,
                                    vae_decode_activation_bytes, vae_encode_activation_bytes)
from webui.memory.devices import empty_cache
from webui.memory.manager import MemoryManager
from webui.memory.oom import is_oom

T = TypeVar("T")


class OutOfDeviceMemory(RuntimeError):
    """A stage still ran out of memory after the recovery; the message says what would help."""


class VaeNaNError(RuntimeError):
    """The VAE gave NaNs and A1111's auto_vae_precision options are both off."""


def _dtype_size(module: torch.nn.Module) -> int:
    p = next(module.parameters(), None)
    return p.element_size() if p is not None else 4


def _free_failed_attempt(memory: MemoryManager, keep: tuple) -> None:
    memory.offload_all(keep=keep)
    empty_cache()  # gc first: the failed attempt's tensors must be gone before the CUDA cache is emptied


def text_encoding(memory: MemoryManager, text_encoders: list[Any], rows: int = 2) -> AbstractContextManager:
    """The text encoders made ready (prompts are encoded inside)."""
    width = max(te.get_input_embeddings().weight.shape[1] for te in text_encoders)
    act = text_encoder_activation_bytes(rows, width=width, dtype_size=_dtype_size(text_encoders[0]))
    return memory.use(*(memory.part_of(te) for te in text_encoders), activations=act)


def sample(model: Any, run: Callable[[], T], *, rows: int, width: int, height: int,
           controls: Any = None, noise: Any = None) -> T:
    """``run()`` (one sampling pass) with the UNet and ControlNets on the device; one retry after
    an out-of-memory error, with everything else offloaded and the noise rewound."""
    memory: MemoryManager = model.memory
    unet = model.sd.unet
    parts = [memory.part_of(unet)] + [memory.part_of(u.model) for u in (controls.units if controls else [])]
    act = unet_activation_bytes(rows, width, height, _dtype_size(unet), model.sd.family)
    rewind = noise.checkpoint() if noise is not None else None
    try:
        with memory.use(*parts, activations=act):
            return run()
    except BaseException as e:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raised
        if not is_oom(e):
            raise
        first_error = str(e).splitlines()[0][:300]
    memory.note_oom("sampling", retried=True)
    _free_failed_attempt(memory, tuple(p for p in parts if p is not None))
    if rewind is not None:
        rewind()
    try:
        with memory.use(*parts, activations=act):
            out = run()
        memory.note(f"Sampling ran out of device memory ({first_error}); it was run again after "
                    "moving the other model parts to CPU RAM")
        return out
    except BaseException as e:  # noqa: BLE001
        if not is_oom(e):
            raise
        memory.note_oom("sampling", retried=False)
        need = (sum(p.nbytes for p in parts if p is not None) + act) / MB
        free = memory.free_bytes() / MB
        raise OutOfDeviceMemory(
            f"Out of device memory while sampling {rows // 2 or 1} image(s) at {width}x{height}: about "
            f"{need:.0f} MB needed (weights and activations), {free:.0f} MB free. Lower the batch size or "
            f"the resolution, or start with --medvram (or --lowvram, which streams the UNet block by "
            f"block); 'GPU weights (MB)' in Settings caps what stays resident.") from None


def _vae_run(model: Any, stage: str, whole: Callable[[], torch.Tensor], tiled: Callable[[], torch.Tensor],
             activations: int) -> torch.Tensor:
    """A VAE pass with the VAE on the device; after an out-of-memory error, once more in tiles
    (a quarter of the activation reserve) with everything else moved to RAM."""
    memory: MemoryManager = model.memory
    part = memory.part_of(model.sd.vae)
    out: torch.Tensor | None = None
    try:
        with memory.use(part, activations=activations):
            out = whole()
    except BaseException as e:  # noqa: BLE001 - only out-of-memory is handled; the rest re-raised
        if not is_oom(e):
            raise
    if out is None:
        memory.note_oom(stage, retried=True)
        _free_failed_attempt(memory, (part,) if part else ())
        with memory.use(part, activations=activations // 4):
            out = tiled()
        what = "decoded" if stage == "vae_decode" else "encoded"
        memory.note(f"VAE {what[:-1]} ran out of device memory; the image was {what} in tiles instead")
    return out


def decode(model: Any, latents: torch.Tensor, nan_precision: str = "float32") -> torch.Tensor:
    """Latents → images in [0, 1] on the CPU. A decode with NaNs is done again with the VAE in
    ``nan_precision`` ("float32": A1111's auto_vae_precision; "bfloat16": auto_vae_precision_bfloat16);
    "" fails with VaeNaNError instead, as A1111 does with both options off."""
    vae, sf = model.sd.vae, model.sd.scaling_factor
    b, _, h, w = latents.shape
    scale = getattr(model.sd, "vae_scale_factor", 8)
    images = _vae_run(model, "vae_decode", lambda: vae_ops.decode(vae, latents, sf),
                      lambda: vae_ops.decode_tiled(vae, latents, sf),
                      vae_decode_activation_bytes(b, w * scale, h * scale, _dtype_size(vae)))
    if model.policy.nan_check and torch.isnan(images).any():
        if not nan_precision:
            raise VaeNaNError("A tensor with NaNs was produced in the VAE. This could be because there's not "
                              "enough precision to represent the picture: start with --no-half-vae, or turn on "
                              "\"Automatically revert VAE to 32-bit floats\" in Settings > VAE")
        images = _decode_again(model, latents, getattr(torch, nan_precision))
    return images.clamp(0, 1)


def _decode_again(model: Any, latents: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    memory: MemoryManager = model.memory
    vae = model.sd.vae
    was = next(vae.parameters()).dtype
    part = memory.part_of(vae)
    if part is not None:
        memory.retype(part, dtype)
    else:
        vae.to(dtype)
    name = "32-bit floats" if dtype == torch.float32 else str(dtype).replace("torch.", "")
    with memory.use(part):
        images = vae_ops.decode(vae, latents, model.sd.scaling_factor).float()
    if torch.isnan(images).any():
        memory.note(f"The VAE produced NaNs even in {name}: the latents themselves are broken "
                    "(try another sampler, fewer steps or --no-half)")
        return torch.nan_to_num(images, nan=0.0)
    memory.note(f"A tensor with NaNs was produced by the VAE in {str(was).replace('torch.', '')}; it was "
                f"decoded again in {name}, and the VAE stays in {name} from now on "
                "(start with --no-half-vae to begin in 32-bit)")
    return images


def encode(model: Any, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] → scaled latents on the compute device."""
    vae, sf = model.sd.vae, model.sd.scaling_factor
    b, _, h, w = images.shape
    latents = _vae_run(model, "vae_encode", lambda: vae_ops.encode(vae, images, sf),
                       lambda: vae_ops.encode_tiled(vae, images, sf),
                       vae_encode_activation_bytes(b, w, h, _dtype_size(vae)))
    return latents.to(model.policy.device)
