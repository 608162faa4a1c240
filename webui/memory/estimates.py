"""How much device memory a stage needs beyond its weights (the activation reserve).

The manager keeps this much free when it decides what stays resident, so that the stage's
intermediate tensors fit.  The figures are upper estimates for torch's scaled-dot-product
attention (memory grows linearly with the number of pixels, not quadratically), per row of the
batch; classifier-free guidance runs two rows per image.  They were set from the tensor sizes of
the SD1.5 / SDXL blocks (channels x latent pixels x the number of live temporaries in a
transformer block) and rounded up; `--vram-budget-mb` runs on a real card check them.
"""
from __future__ import annotations

MB = 1024 * 1024

# Fixed margin on CUDA: cuBLAS/cuDNN workspaces and allocator fragmentation.
CUDA_BASE_RESERVE = 256 * MB


def unet_activation_bytes(rows: int, width: int, height: int, dtype_size: int = 2, family: str = "sd1") -> int:
    """UNet (and ControlNet) step: the first block at full latent resolution dominates
    (320 channels for SD1/SD2/SDXL; ~40 live tensors of that size with SDP attention)."""
    latent_px = max(1, width // 8) * max(1, height // 8)
    factor = 40 if family != "sdxl" else 48  # SDXL's transformer depth keeps a few more alive
    return rows * latent_px * 320 * dtype_size * factor


def vae_decode_activation_bytes(images: int, width: int, height: int, dtype_size: int = 2) -> int:
    """VAE decode: the last up block runs at full image resolution with 128 channels; about six
    such tensors are alive at once (input, two convs, norm, residual, output)."""
    return images * width * height * 128 * dtype_size * 6


def vae_encode_activation_bytes(images: int, width: int, height: int, dtype_size: int = 2) -> int:
    """VAE encode: the first down block at full resolution, 128 channels, ~five live tensors."""
    return images * width * height * 128 * dtype_size * 5


def text_encoder_activation_bytes(rows: int, tokens: int = 77, width: int = 1280, dtype_size: int = 2) -> int:
    """A CLIP text encoder pass: small (tokens x width x the MLP's 4x expansion)."""
    return rows * tokens * width * 4 * dtype_size * 8


def upscaler_activation_bytes(tile: int, scale: int, channels: int = 64, dtype_size: int = 2) -> int:
    """An ESRGAN-type model on one tile: features at tile size plus the upscaled output."""
    return tile * tile * channels * dtype_size * 12 + (tile * scale) ** 2 * channels * dtype_size * 2


def training_activation_bytes(batch: int, width: int, height: int, dtype_size: int = 4, family: str = "sd1",
                              gradient_checkpointing: bool = False, channels: int = 320) -> int:
    """A training step's UNet forward + backward: unlike sampling, every block's intermediate tensors
    are kept for the backward pass (about 30x the live set of an inference step at the first
    block's size); gradient checkpointing keeps only block inputs and recomputes one block at a
    time (about a fifth of that). One row per image: training runs no classifier-free guidance.
    `channels`: the UNet's first block width (320 for SD1/SD2/SDXL; smaller test models scale down)."""
    step = unet_activation_bytes(max(1, batch), width, height, dtype_size, family) * max(1, channels) // 320
    kept = step * 30
    return kept // 5 if gradient_checkpointing else kept
