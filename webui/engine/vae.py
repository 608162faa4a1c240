"""Latents ↔ images, and the cheap latent→RGB preview used for live previews."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

# Linear latent→RGB factors ("Approx cheap"): a fixed 4×3 projection fitted for each VAE family.
_CHEAP = {
    "sd": [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]],
    "sdxl": [[0.3448, 0.4168, 0.4395], [-0.1953, -0.0290, 0.0250], [0.1074, 0.0886, -0.0163],
             [-0.3730, -0.2499, -0.2088]],
}


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Latents → images in [0, 1], [B, 3, H, W] float32 on the CPU."""
    dtype = next(vae.parameters()).dtype
    z = (latents / scaling_factor).to(vae.device, dtype)
    img = vae.decode(z, return_dict=False)[0].float()
    return ((img + 1.0) / 2.0).clamp(0, 1).cpu()


@torch.no_grad()
def encode(vae: Any, images: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Images in [0, 1] → scaled latents (the distribution mean, deterministic)."""
    dtype = next(vae.parameters()).dtype
    x = (images * 2.0 - 1.0).to(vae.device, dtype)
    dist = vae.encode(x, return_dict=False)[0]
    return dist.mean.float() * scaling_factor


@contextlib.contextmanager
def _tiling(vae: Any, side_px: int) -> Iterator[None]:
    """diffusers' AutoencoderKL tiling with tiles of about half the picture (at most 512 px),
    restored afterwards: the fallback after an out-of-memory error."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    tile = max(4 * scale, min(512, ((side_px // 2 + scale - 1) // scale) * scale))
    saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor)
    vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = True, tile, tile // scale
    vae.tile_overlap_factor = 0.25
    try:
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = saved


@torch.no_grad()
def decode_tiled(vae: Any, latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """`decode` in overlapping tiles (less memory, seams blended)."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    with _tiling(vae, max(latents.shape[-2:]) * scale):
        return torch.cat([decode(vae, latents[i:i + 1], scaling_factor) for i in range(latents.shape[0])])


@torch.no_grad()
def encode_tiled(vae: Any, images: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """`encode` in overlapping tiles."""
    with _tiling(vae, max(images.shape[-2:])):
        return torch.cat([encode(vae, images[i:i + 1], scaling_factor) for i in range(images.shape[0])])


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


def cheap_preview(latents: torch.Tensor, family: str) -> Image.Image:
    """First image of the batch, latent → RGB by a linear map; costs nothing next to a VAE decode."""
    z = latents[0].float().cpu()
    factors = torch.tensor(_CHEAP["sdxl" if family == "sdxl" else "sd"])
    if z.shape[0] != factors.shape[0]:
        z = z[: factors.shape[0]] if z.shape[0] > 4 else torch.cat([z, z.new_zeros(4 - z.shape[0], *z.shape[1:])])
    rgb = torch.einsum("chw,cr->hwr", z, factors)
    arr = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).byte().numpy()
    img = Image.fromarray(arr)
    return img.resize((img.width * 8, img.height * 8), Image.Resampling.NEAREST)
