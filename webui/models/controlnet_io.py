"""ControlNet files: the original (lllyasviel) single-file layout (``control_model.*`` keys, in
``.safetensors`` or ``.pth``) and diffusers' layout (``controlnet_cond_embedding.*``, as in the
``diffusion_pytorch_model.safetensors`` of Hugging Face ControlNet repos), for SD1, SD2 and SDXL.

``save_controlnet`` writes a diffusers ``ControlNetModel`` in the original layout (what A1111's
ControlNet extension, Forge and ComfyUI read); ``load_controlnet`` reads either layout into
diffusers, with the config derived from tensor shapes (a ControlNet mirrors its base UNet's
encoder) and the original keys converted by diffusers' own ``convert_controlnet_checkpoint``.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import torch

from webui.fsutil import normal_mode
from webui.models.detect import ADDITION_TIME_EMBED_DIM, _unet_config
from webui.models.file_checks import FileCheck
from webui.models.file_io import ModelFileError, load_state_dict, read_key_shapes
from webui.models.ldm_writer import UNET_PREFIX, unet_to_ldm
from webui.models.load import assign_weights

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
    normal_mode(path)  # safetensors writes 0600
    return path


def controlnet_layout(shapes: dict[str, tuple[int, ...]]) -> str:
    """"original" or "diffusers"; other control files get a reason naming what they are."""
    if f"{CONTROL_PREFIX}input_hint_block.0.weight" in shapes:
        return "original"
    if "controlnet_cond_embedding.conv_in.weight" in shapes:
        return "diffusers"
    keys = list(shapes)
    if any("lora_controlnet" in k for k in keys) or any(k.endswith((".up", ".down")) for k in keys):
        raise ModelFileError(None, "a Control-LoRA, not a full ControlNet (not supported yet)")
    if any(k.startswith(("adapter.", "body.", "conv_in.")) for k in keys) and \
            not any(".attn2." in k for k in keys):
        raise ModelFileError(None, "a T2I-Adapter, not a ControlNet (not supported yet)")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelFileError(None, "a Stable Diffusion checkpoint, not a ControlNet: move it to models/Stable-diffusion")
    example = keys[0] if keys else "no tensors"
    raise ModelFileError(None, f"not a ControlNet: no control_model.input_hint_block or controlnet_cond_embedding "
                               f"weights (first key: {example})")


def _cross_width(shapes: dict[str, tuple[int, ...]]) -> int | None:
    attn2 = next((k for k in shapes if k.endswith(".attn2.to_k.weight")), None)
    return shapes[attn2][1] if attn2 is not None else None


def check_controlnet_file(path: Path) -> FileCheck:
    """Listing check: a ControlNet of a known layout, and the family its cross-attention width says."""
    shapes, _meta = read_key_shapes(path)
    try:
        layout = controlnet_layout(shapes)
    except ModelFileError as e:
        return FileCheck(e.reason)
    if _cross_width(shapes) is None:
        return FileCheck("no cross-attention weights: an incomplete ControlNet")
    marker = f"{CONTROL_PREFIX}label_emb.0.0.weight" if layout == "original" else "add_embedding.linear_1.weight"
    return FileCheck(None, _family(shapes, marker))


def _family(shapes: dict[str, tuple[int, ...]], added_embedding_key: str) -> str:
    """SDXL has the added (text, time) embedding; SD2 linear projections or 1024-wide context."""
    proj_in = next((k for k in shapes if k.endswith(".proj_in.weight")), None)
    width = _cross_width(shapes)
    if width == 2048 or added_embedding_key in shapes:
        return "sdxl"
    if (proj_in is not None and len(shapes[proj_in]) == 2) or width == 1024:
        return "sd2"
    return "sd1"


def controlnet_config_from_shapes(shapes: dict[str, tuple[int, ...]]) -> dict:
    """ControlNetModel kwargs for an original-layout ControlNet (SD1, SD2 or SDXL)."""
    keys = list(shapes)
    family = _family(shapes, f"{CONTROL_PREFIX}label_emb.0.0.weight")
    unet = _unet_config(shapes, family, keys, prefix=CONTROL_PREFIX)
    hint = [shapes[f"{CONTROL_PREFIX}input_hint_block.{i}.weight"][0] for i in (0, 4, 8, 12)]
    cfg = {k: unet[k] for k in ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                                "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                                "transformer_layers_per_block", "addition_embed_type", "addition_time_embed_dim",
                                "projection_class_embeddings_input_dim") if k in unet}
    if "time_embedding_dim" in unet:
        raise ModelFileError(None, "ControlNet with a non-standard time embedding is not supported")
    cfg["conditioning_channels"] = shapes[f"{CONTROL_PREFIX}input_hint_block.0.weight"][1]
    cfg["conditioning_embedding_out_channels"] = tuple(int(c) for c in hint)
    if family == "sd2":
        cfg["upcast_attention"] = True
    return cfg


def _count(shapes: dict[str, tuple[int, ...]], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m[1]) for k in shapes if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def diffusers_controlnet_config(shapes: dict[str, tuple[int, ...]]) -> dict:
    """ControlNetModel kwargs for a diffusers-layout file (no config.json needed: all from shapes)."""
    n = _count(shapes, r"down_blocks\.(\d+)\.")
    if n == 0 or "conv_in.weight" not in shapes:
        raise ModelFileError(None, "diffusers ControlNet without down blocks or conv_in")
    block_out = [shapes[f"down_blocks.{i}.resnets.0.conv2.weight"][0] for i in range(n)]
    layers = _count(shapes, r"down_blocks\.0\.resnets\.(\d+)\.")
    has_attn = [f"down_blocks.{i}.attentions.0.proj_in.weight" in shapes for i in range(n)]
    depth = [_count(shapes, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1
             for i in range(n)]
    mid_depth = _count(shapes, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1
    if not has_attn[-1]:
        depth[-1] = mid_depth
    width = _cross_width(shapes)
    family = _family(shapes, "add_embedding.linear_1.weight")
    proj_in = next(k for k in shapes if k.endswith(".proj_in.weight"))
    cond = shapes["controlnet_cond_embedding.conv_in.weight"]
    n_hint = _count(shapes, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    hint = [cond[0]] + [shapes[f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight"][0] for i in range(n_hint // 2)]
    cfg: dict = {
        "in_channels": shapes["conv_in.weight"][1],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "block_out_channels": block_out,
        "layers_per_block": layers,
        "cross_attention_dim": width,
        "attention_head_dim": 8 if family == "sd1" else [max(1, c // 64) for c in block_out],
        "use_linear_projection": len(shapes[proj_in]) == 2,
        "transformer_layers_per_block": depth if any(d != 1 for d in depth) else 1,
        "conditioning_channels": cond[1],
        "conditioning_embedding_out_channels": tuple(int(c) for c in hint),
    }
    if shapes["time_embedding.linear_1.weight"][0] != 4 * block_out[0]:
        raise ModelFileError(None, "ControlNet with a non-standard time embedding is not supported")
    if "add_embedding.linear_1.weight" in shapes:
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
                   projection_class_embeddings_input_dim=shapes["add_embedding.linear_1.weight"][1])
    if family == "sd2":
        cfg["upcast_attention"] = True
    return cfg


def load_controlnet(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A ControlNet file of either layout -> diffusers ``ControlNetModel`` (eval, no grad)."""
    from accelerate import init_empty_weights
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    path = Path(path)
    shapes, _meta = read_key_shapes(path)
    try:
        layout = controlnet_layout(shapes)
        if layout == "original":
            cfg = controlnet_config_from_shapes(shapes)
            sd = load_state_dict(path, device, dtype=dtype, prefixes=(CONTROL_PREFIX,))
            converted = convert_controlnet_checkpoint(sd, cfg)
            for i in (0, 2):  # SDXL's added (text, time) embedding: diffusers' converter leaves it out
                for p in ("weight", "bias"):
                    if (t := sd.get(f"{CONTROL_PREFIX}label_emb.0.{i}.{p}")) is not None:
                        converted[f"add_embedding.linear_{i // 2 + 1}.{p}"] = t
        else:
            cfg = diffusers_controlnet_config(shapes)
            converted = load_state_dict(path, device, dtype=dtype)
    except ModelFileError as e:
        raise ModelFileError(path, e.reason) from None
    except (KeyError, IndexError, StopIteration) as e:
        raise ModelFileError(path, f"ControlNet weights are incomplete ({type(e).__name__}: {e})") from None
    with init_empty_weights():
        model = ControlNetModel(**cfg)
    assign_weights(model, converted, path, "ControlNet")
    return model.to(device).eval().requires_grad_(False)
