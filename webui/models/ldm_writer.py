"""Write diffusers/transformers model sets back into the original single-file LDM layout.

The inverse of diffusers' ``convert_ldm_*`` functions: key names (and 1x1-conv VAE attention
shapes, fused OpenCLIP qkv, transposed text projection) are those of real SD1.x / SD2.x / SDXL
``.safetensors`` files, so files written here load in A1111, ComfyUI, diffusers and our loader.
Works on meta-device modules too (``ldm_state_dict``), which lets tests check full-size layouts
without allocating weights.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable

import torch

from webui.fsutil import normal_mode
from webui.models.detect import (
    SD1_TE_PREFIX, SD2_TE_PREFIX, SDXL_TE0_PREFIX, SDXL_TE1_PREFIX, UNET_PREFIX, VAE_PREFIX,
)

_RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPENCLIP_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature; real files carry it


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def _layers(config, n: int) -> list[int]:
    lpb = config.layers_per_block
    return [int(lpb)] * n if isinstance(lpb, int) else [int(x) for x in lpb]


def unet_to_ldm(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> ``model.diffusion_model.*`` keys (same tensors)."""
    n = len(config.block_out_channels)
    lpb = _layers(config, n)
    in_start = [1 + sum(x + 1 for x in lpb[:b]) for b in range(n)]
    up_lpb = list(reversed(lpb))
    out_start = [sum(x + 1 for x in up_lpb[:b]) for b in range(n)]
    up_has_attn = [t.startswith("CrossAttn") for t in config.up_block_types]

    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        name, _, param = key.rpartition(".")
        if name in _UNET_TOP:
            new = f"{_UNET_TOP[name]}.{param}"
        elif m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "resnets":
                new = f"input_blocks.{in_start[b] + j}.0.{_rename_resnet(rest, _RESNET_UNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{in_start[b] + j}.1.{rest}"
            else:  # downsampler conv -> "op"
                new = f"input_blocks.{in_start[b] + lpb[b]}.0.{rest.replace('conv.', 'op.', 1)}"
        elif m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key):
            kind, j, rest = m[1], int(m[2]), m[3]
            if kind == "resnets":
                new = f"middle_block.{2 * j}.{_rename_resnet(rest, _RESNET_UNET)}"
            else:
                new = f"middle_block.1.{rest}"
        elif m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", key):
            b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if kind == "resnets":
                new = f"output_blocks.{out_start[b] + j}.0.{_rename_resnet(rest, _RESNET_UNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{out_start[b] + j}.1.{rest}"
            else:  # upsampler sits after the resnet (and the transformer, if the level has one)
                new = f"output_blocks.{out_start[b] + up_lpb[b]}.{2 if up_has_attn[b] else 1}.{rest}"
        else:
            raise ValueError(f"UNet parameter {key!r} has no LDM equivalent")
        out[UNET_PREFIX + new] = t
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> ``first_stage_model.*`` keys."""
    n = len(config.block_out_channels)
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        new = key.replace("conv_norm_out", "norm_out")
        if m := re.fullmatch(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)",
                             key):
            part, direction, i, kind, j, rest = m[1], m[2], int(m[3]), m[4], m[5], m[6]
            level = i if direction == "down" else n - 1 - i  # LDM numbers decoder levels bottom-up
            if kind == "resnets":
                new = f"{part}.{direction}.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                new = f"{part}.{direction}.{level}.{'downsample' if direction == 'down' else 'upsample'}.{rest}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)",
                               key):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if t.ndim == 2:  # LDM's attention uses 1x1 convolutions
                t = t.reshape(*t.shape, 1, 1)
        elif not re.fullmatch(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.\w+|(post_)?quant_conv\.\w+", new):
            raise ValueError(f"VAE parameter {key!r} has no LDM equivalent")
        out[VAE_PREFIX + new] = t
    return out


def _clip_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with a uniform ``text_model.`` prefix (transformers >= 5.6 flattened CLIPTextModel)."""
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids"):
            continue
        out[k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k] = v
    return out


def _position_ids(model: torch.nn.Module) -> torch.Tensor:
    n = model.config.max_position_embeddings
    return torch.arange(n, dtype=torch.int64).unsqueeze(0)


def clip_to_ldm(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """CLIP-L (transformers layout, as SD1 and SDXL's first embedder store it)."""
    sd = {prefix + k: v for k, v in _clip_params(model).items() if not k.startswith("text_projection.")}
    sd[prefix + "text_model.embeddings.position_ids"] = _position_ids(model)  # real files carry it
    return sd


def open_clip_to_ldm(model: torch.nn.Module, prefix: str, *, with_projection: bool) -> dict[str, torch.Tensor]:
    """transformers CLIP text model -> OpenCLIP layout (fused qkv ``in_proj``, ``resblocks``)."""
    sd = _clip_params(model)
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": sd.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": sd.pop("text_model.final_layer_norm.bias"),
    }
    proj = sd.pop("text_projection.weight", None)
    if with_projection:
        if proj is None:
            raise ValueError("SDXL's second text encoder needs a text_projection (CLIPTextModelWithProjection)")
        out["text_projection"] = proj.T.contiguous()  # OpenCLIP applies x @ P, a Linear applies x @ W.T
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    n_layers = model.config.num_hidden_layers
    for i in range(n_layers):
        lp = f"text_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd.pop(f"{lp}self_attn.{x}_proj.{kind}") for x in "qkv"]
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(qkv, 0)
        for src, dst in names.items():
            for kind in ("weight", "bias"):
                out[f"transformer.resblocks.{i}.{dst}.{kind}"] = sd.pop(f"{lp}{src}.{kind}")
    if sd:
        raise ValueError(f"text encoder parameters without an OpenCLIP equivalent: {sorted(sd)[:4]}")
    ref = out["ln_final.weight"]
    out["logit_scale"] = torch.tensor(OPENCLIP_LOGIT_SCALE, dtype=ref.dtype, device=ref.device)
    return {prefix + k: v for k, v in out.items()}


def ldm_state_dict(*, unet, vae, text_encoders: Iterable[torch.nn.Module], family: str) -> dict[str, torch.Tensor]:
    """The full single-file state dict (tensors shared with the modules, nothing copied needlessly)."""
    tes = list(text_encoders)
    expected = {"sd1": 1, "sd2": 1, "sdxl": 2}.get(family)
    if expected is None:
        raise ValueError(f"unknown family {family!r}")
    if len(tes) != expected:
        raise ValueError(f"{family} needs {expected} text encoder(s), got {len(tes)}")
    sd = unet_to_ldm(unet.state_dict(), unet.config)
    sd.update(vae_to_ldm(vae.state_dict(), vae.config))
    if family == "sd1":
        sd.update(clip_to_ldm(tes[0], SD1_TE_PREFIX))
    elif family == "sd2":
        sd.update(open_clip_to_ldm(tes[0], SD2_TE_PREFIX, with_projection=False))
    else:
        sd.update(clip_to_ldm(tes[0], SDXL_TE0_PREFIX))
        sd.update(open_clip_to_ldm(tes[1], SDXL_TE1_PREFIX, with_projection=True))
    return sd


def save_ldm_checkpoint(
    path: str | Path,
    *,
    unet,
    vae,
    text_encoders: Iterable[torch.nn.Module],
    family: str,
    metadata: dict[str, str] | None = None,
    dtype: torch.dtype | None = None,
    extra_tensors: dict[str, torch.Tensor | None] | None = None,
) -> Path:
    """Save a model set as one real-layout ``.safetensors`` checkpoint (``dtype`` casts float tensors).

    ``extra_tensors``: top-level tensors stored as they are (e.g. ``alphas_cumprod``, which must stay
    float32); None values are skipped."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    sd = ldm_state_dict(unet=unet, vae=vae, text_encoders=text_encoders, family=family)
    out = {}
    for k, t in sd.items():
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous().cpu()
    for k, t in (extra_tensors or {}).items():
        if t is not None:
            out[k] = t.detach().contiguous().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    normal_mode(path)  # safetensors writes 0600
    return path
