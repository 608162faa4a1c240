"""ControlNet files in the original (lllyasviel) single-file layout: ``control_model.*`` keys.

``save_controlnet`` writes a diffusers ``ControlNetModel`` in that layout (what A1111's ControlNet
extension, Forge and ComfyUI read); ``load_controlnet`` reads such a file back into diffusers,
with the config derived from tensor shapes (a ControlNet mirrors its base UNet's encoder) and the
key conversion done by diffusers' own ``convert_controlnet_checkpoint``.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

from webui.models.detect import _unet_config
from webui.models.file_io import ModelFileError, load_state_dict, read_safetensors_header
from webui.models.ldm_writer import UNET_PREFIX, unet_to_ldm

CONTROL_PREFIX = "control_model."
_HINT_LAST = 14  # diffusers' converter expects the 4-level hint encoder of every released ControlNet


def controlnet_to_ldm(sd: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers ControlNetModel keys -> ``control_model.*`` keys (same tensors)."""
    encoder: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    n_hint = len(config.conditioning_embedding_out_channels)
    if 2 * (2 * (n_hint - 1) + 1) != _HINT_LAST:
        raise ValueError("only 4-level conditioning embeddings have an original-layout equivalent")
    for key, t in sd.items():
        name, _, param = key.rpartition(".")
        if name == "controlnet_cond_embedding.conv_in":
            out[f"input_hint_block.0.{param}"] = t
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)", name):
            out[f"input_hint_block.{2 * (int(m[1]) + 1)}.{param}"] = t
        elif name == "controlnet_cond_embedding.conv_out":
            out[f"input_hint_block.{_HINT_LAST}.{param}"] = t
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)", name):
            out[f"zero_convs.{m[1]}.0.{param}"] = t
        elif name == "controlnet_mid_block":
            out[f"middle_block_out.0.{param}"] = t
        else:
            encoder[key] = t
    unet_like = SimpleNamespace(block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
                                up_block_types=())
    for k, t in unet_to_ldm(encoder, unet_like).items():
        out[k[len(UNET_PREFIX):]] = t
    return {CONTROL_PREFIX + k: v for k, v in out.items()}


def save_controlnet(path: str | Path, controlnet, *, metadata: dict[str, str] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    sd = controlnet_to_ldm(controlnet.state_dict(), controlnet.config)
    out = {k: (t.detach().to(dtype) if dtype is not None and t.is_floating_point() else t.detach()).contiguous().cpu()
           for k, t in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


def controlnet_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """ControlNetModel kwargs for an original-layout ControlNet (SD1/SD2 style)."""
    keys = list(shapes)
    attn2 = next((k for k in keys if k.endswith(".attn2.to_k.weight")), None)
    proj_in = next((k for k in keys if k.endswith(".proj_in.weight")), None)
    linear = proj_in is not None and len(shapes[proj_in]) == 2
    family = "sd2" if linear or (attn2 is not None and shapes[attn2][1] == 1024) else "sd1"
    unet = _unet_config(shapes, family, keys, prefix=CONTROL_PREFIX)
    hint = [shapes[f"{CONTROL_PREFIX}input_hint_block.{i}.weight"][0] for i in (0, 4, 8, 12)]
    cfg = {k: unet[k] for k in ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                                "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                                "transformer_layers_per_block") if k in unet}
    if "time_embedding_dim" in unet:
        raise ModelFileError(None, "ControlNet with a non-standard time embedding is not supported")
    cfg["conditioning_channels"] = shapes[f"{CONTROL_PREFIX}input_hint_block.0.weight"][1]
    cfg["conditioning_embedding_out_channels"] = tuple(int(c) for c in hint)
    if family == "sd2":
        cfg["upcast_attention"] = True
    return cfg


def load_controlnet(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Original-layout ``.safetensors`` ControlNet -> diffusers ``ControlNetModel`` (eval, no grad)."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    path = Path(path)
    infos, _meta = read_safetensors_header(path)
    shapes = {k: tuple(v.shape) for k, v in infos.items()}
    if f"{CONTROL_PREFIX}input_hint_block.0.weight" not in shapes:
        raise ModelFileError(path, "not an original-layout ControlNet (no control_model.input_hint_block)")
    cfg = controlnet_config_from_shapes(shapes)
    sd = load_state_dict(path, device, dtype=dtype)
    converted = convert_controlnet_checkpoint(sd, cfg)
    with init_empty_weights():
        model = ControlNetModel(**cfg)
    model.load_state_dict({k: v for k, v in converted.items() if v is not None}, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
