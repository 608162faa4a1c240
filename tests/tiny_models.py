"""Tiny, randomly initialised Stable Diffusion checkpoints in the REAL single-file layout.

Importable helper for every test (not a test module).  The models have the real architecture of
each family (cross-attention UNet, 8x-downscaling KL VAE with 4 latent channels, CLIP text encoders
with the full 49408-token vocabulary and 77 positions; SDXL with text_time conditioning and two
encoders), only narrow and shallow, so a build takes well under a second and loads through exactly
the same code path as a full-size checkpoint.

    from tests.tiny_models import make_tiny_checkpoint   # or `from tiny_models import ...`
    path = make_tiny_checkpoint(tmp_path / "tiny.safetensors", "sdxl")
    model = webui.models.load.load_checkpoint(path)       # same path as a full-size file
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.models.ldm_writer import ldm_state_dict, save_ldm_checkpoint

DEFAULT_SIZE = {"sd1": 512, "sd2": 512, "sdxl": 1024}

# SD1: 8 heads per level; SD2/SDXL: 64-channel heads (diffusers' "attention_head_dim" = head count).
TINY_UNET: dict[str, dict] = {
    "sd1": dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                cross_attention_dim=32, attention_head_dim=8),
    "sd2": dict(block_out_channels=(64, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                cross_attention_dim=48, attention_head_dim=(1, 1), use_linear_projection=True,
                upcast_attention=True),
    "sdxl": dict(block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                 transformer_layers_per_block=(1, 2), cross_attention_dim=32 + 48, attention_head_dim=(1, 1),
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=32 + 6 * 256),
}
TINY_VAE = dict(block_out_channels=(32, 32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4)
_TEXT = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
             vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407)
TINY_CLIP_L = dict(_TEXT, hidden_act="quick_gelu", pad_token_id=49407)
# OpenCLIP narrower-than-real but wider than CLIP-L: tools (diffusers too) tell SDXL's two encoders
# apart by width, and a non-square text_projection (48 -> 32) pins down its orientation.
TINY_OPEN_CLIP = dict(_TEXT, hidden_size=48, intermediate_size=192, hidden_act="gelu", pad_token_id=0,
                      projection_dim=32)


@dataclass
class TinyModels:
    family: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list


def _roughen(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Perturb norms and biases too (defaults are 1/0), so swapped keys change outputs."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))


def build_tiny_models(family: str = "sd1", *, inpainting: bool = False, prediction_type: str | None = None,
                      seed: int = 0, round_to: torch.dtype | None = torch.float16,
                      unet_overrides: dict | None = None) -> TinyModels:
    """Deterministic tiny model set.  ``round_to``: make every weight exactly representable in that
    dtype, so a file saved in it reloads bit-exactly as float32.  ``unet_overrides``: UNet config
    entries to change (e.g. SDXL's ``addition_time_embed_dim``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if family not in TINY_UNET:
        raise ValueError(f"family must be sd1, sd2 or sdxl, not {family!r}")
    size = DEFAULT_SIZE[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**{**TINY_UNET[family], **(unet_overrides or {})}, in_channels=9 if inpainting else 4, out_channels=4,
                                    sample_size=size // 8)
        vae = AutoencoderKL(**TINY_VAE, sample_size=size,
                            scaling_factor=0.13025 if family == "sdxl" else 0.18215)
        if family == "sd1":
            tes = [CLIPTextModel(CLIPTextConfig(**TINY_CLIP_L))]
        elif family == "sd2":
            tes = [CLIPTextModel(CLIPTextConfig(**{k: v for k, v in TINY_OPEN_CLIP.items() if k != "projection_dim"}))]
        else:
            tes = [CLIPTextModel(CLIPTextConfig(**TINY_CLIP_L)),
                   CLIPTextModelWithProjection(CLIPTextConfig(**TINY_OPEN_CLIP))]
        gen = torch.Generator().manual_seed(seed + 1)
        for m in [unet, vae, *tes]:
            _roughen(m, gen)
        # Make A1111's SD2 v-prediction test (mean(unet(0.5, t=999) - 0.5) < -1) answer as asked.
        with torch.no_grad():
            v = prediction_type in ("v", "v_prediction")
            unet.conv_out.weight.mul_(0.1)
            unet.conv_out.bias.fill_(-2.5 if v else 0.5)
    for m in [unet, vae, *tes]:
        m.eval().requires_grad_(False)
        if round_to is not None:
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(p.to(round_to).to(p.dtype))
    return TinyModels(family, unet, vae, tes)


def make_tiny_checkpoint(
    path: str | Path,
    family: str = "sd1",
    *,
    inpainting: bool = False,
    prediction_type: str | None = None,
    seed: int = 0,
    metadata: dict[str, str] | None = None,
    fmt: str = "safetensors",
    dtype: torch.dtype = torch.float16,
    unet_overrides: dict | None = None,
) -> Path:
    """Write a tiny real-layout checkpoint and return its path.

    ``prediction_type`` ("epsilon" / "v_prediction"): for SD2 it only shapes the weights so that
    A1111's runtime test detects it (no metadata, like real SD2 files); for SD1/SDXL, whose type can
    only be declared, it adds ``modelspec.prediction_type`` metadata (``fmt="ckpt"``: a ``<stem>.yaml``
    with ``parameterization: "v"`` instead).  ``dtype``: storage dtype (weights are pre-rounded to it).
    ``fmt="ckpt"`` writes ``torch.save({"state_dict": ...})``.
    """
    path = Path(path)
    models = build_tiny_models(family, inpainting=inpainting, prediction_type=prediction_type, seed=seed,
                               round_to=dtype if dtype != torch.float32 else None, unet_overrides=unet_overrides)
    meta = dict(metadata or {})
    v = prediction_type in ("v", "v_prediction")
    if prediction_type and family != "sd2":
        meta.setdefault("modelspec.prediction_type", "v" if v else "epsilon")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        save_ldm_checkpoint(path, unet=models.unet, vae=models.vae, text_encoders=models.text_encoders,
                            family=family, metadata=meta, dtype=dtype)
    elif fmt == "ckpt":
        sd = ldm_state_dict(unet=models.unet, vae=models.vae, text_encoders=models.text_encoders, family=family)
        sd = {k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in sd.items()}
        torch.save({"state_dict": sd, "global_step": 0}, path)
        if prediction_type and family != "sd2" and v:
            path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    else:
        raise ValueError(f"fmt must be 'safetensors' or 'ckpt', not {fmt!r}")
    return path


class _RunsCode:
    """Unpickling this would execute a shell command (the classic malicious-checkpoint trick)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def make_malicious_ckpt(path: str | Path, marker: str | Path | None = None) -> Path:
    """A ``.ckpt`` whose unpickling would run ``touch <marker>``; a safe loader must refuse it.

    ``marker`` defaults to ``<path>.pwned``; its existence after a load proves code ran.
    """
    path = Path(path)
    marker = Path(marker) if marker is not None else path.with_name(path.name + ".pwned")
    payload = _RunsCode(f"touch {shlex.quote(str(marker))}")
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
                               "payload": payload}}, path)
    return path
