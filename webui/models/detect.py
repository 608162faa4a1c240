"""Stable Diffusion architecture detection from tensor names and shapes (no tensor data needed).

Like ComfyUI's model detection, every width/depth is *read from shapes*, so a full-size checkpoint
and a tiny test model in the same layout go through the same code.  Only what shapes cannot tell
(attention head counts, activation functions, prediction type) comes from known per-family values.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from webui.models.file_io import ModelFileError

Family = Literal["sd1", "sd2", "sdxl"]
PredictionType = Literal["epsilon", "v_prediction"]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD1_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_TE0_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE1_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_PREFIX = "conditioner.embedders.0.model."

SCALING_FACTORS = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
ADDITION_TIME_EMBED_DIM = 256  # SDXL: each of the 6 size/crop ids gets a 256-d sinusoidal embedding


class UnsupportedModelError(ModelFileError):
    """The file is readable but is not a Stable Diffusion 1.x / 2.x / XL checkpoint we can build."""


@dataclass
class Detection:
    family: Family
    inpainting: bool
    prediction_type: PredictionType | None  # None: unknown (SD2 without metadata; see load.py)
    unet_config: dict  # kwargs for diffusers.UNet2DConditionModel
    vae_config: dict  # kwargs for diffusers.AutoencoderKL
    text_encoder_configs: list[dict] = field(default_factory=list)  # kwargs for transformers.CLIPTextConfig
    scaling_factor: float = 0.18215
    default_size: int = 512
    description: str = ""


def fix_legacy_clip_key(key: str) -> str:
    """Old SD1 files (transformers < 4.x) lack the ``text_model.`` level; A1111 renames them too."""
    if key.startswith(SD1_TE_PREFIX) and not key.startswith(SD1_TE_PREFIX + "text_model."):
        rest = key[len(SD1_TE_PREFIX):]
        if rest.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            return SD1_TE_PREFIX + "text_model." + rest
    return key


def prediction_type_from_metadata(metadata: dict[str, str]) -> PredictionType | None:
    for key in ("modelspec.prediction_type", "prediction_type"):
        value = str(metadata.get(key, "")).strip().lower().replace("-", "_")
        if value in ("v", "v_prediction", "vpred", "v_pred", "v_param", "v_parameterization"):
            return "v_prediction"
        if value in ("epsilon", "eps", "epsilon_prediction"):
            return "epsilon"
    if str(metadata.get("ss_v_parameterization", "")).strip().lower() == "true":  # kohya fine-tunes
        return "v_prediction"
    return None


def resolution_from_metadata(metadata: dict[str, str]) -> int | None:
    m = re.fullmatch(r"\s*(\d+)\s*[x×*]\s*(\d+)\s*", str(metadata.get("modelspec.resolution", "")))
    return int(m.group(1)) if m else None


def _what_is_it(keys: list[str]) -> str:
    """A short hint for files that are not checkpoints (shown to the user)."""
    joined = "\n".join(keys[:2000])
    if re.search(r"lora_(unet|te\d?)_|\.lora_(down|up|A|B)\.|\.hada_w1_a|\.lokr_w", joined):
        return "; it looks like a LoRA/LyCORIS network (put it in models/Lora)"
    if any(k in ("string_to_param", "emb_params", "clip_l", "clip_g") or k.startswith("string_to_param.")
           for k in keys):
        return "; it looks like a textual-inversion embedding (put it in embeddings/)"
    if any(k.startswith(("control_model.", "controlnet_cond_embedding.", "input_hint_block.")) for k in keys):
        return "; it looks like a ControlNet model"
    if "encoder.conv_in.weight" in keys and "decoder.conv_out.weight" in keys:
        return "; it looks like a standalone VAE (put it in models/VAE)"
    if any(k.startswith(SDXL_REFINER_PREFIX) for k in keys):
        return "; it looks like an SDXL refiner, which is not supported yet"
    if re.search(r"(^|\.)(joint_blocks|double_blocks|x_embedder)\.", joined):
        return "; it looks like an SD3/Flux-type transformer model, which is not supported"
    if "down_blocks.0.resnets.0.conv1.weight" in keys or "conv_in.weight" in keys:
        return "; it looks like a single diffusers-format component, not a full checkpoint"
    return ""


def _unsupported(missing: list[str], keys: list[str]) -> UnsupportedModelError:
    shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
    return UnsupportedModelError(None, f"not a Stable Diffusion checkpoint: missing {shown}{_what_is_it(keys)}")


def _count_indices(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    """Number of consecutive ``prefix<N>.`` sub-modules (0..N-1)."""
    idx = {int(m.group(1)) for k in shapes if k.startswith(prefix)
           for m in [re.match(r"(\d+)\.", k[len(prefix):])] if m}
    n = 0
    while n in idx:
        n += 1
    return n


def _transformer_depths(shapes: dict[str, tuple[int, ...]], prefix: str = UNET_PREFIX) -> dict[str, int]:
    """``'input_blocks.4.1'`` -> number of transformer blocks in that spatial transformer."""
    depth: dict[str, int] = defaultdict(int)
    pat = re.compile(re.escape(prefix) + r"((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)"
                     r"\.transformer_blocks\.(\d+)\.")
    for k in shapes:
        m = pat.match(k)
        if m:
            depth[m.group(1)] = max(depth[m.group(1)], int(m.group(2)) + 1)
    return depth


def _unet_config(shapes: dict[str, tuple[int, ...]], family: Family, keys: list[str],
                 prefix: str = UNET_PREFIX, pooled_width: int | None = None) -> dict:
    """diffusers UNet config from LDM-layout shapes under ``prefix`` (a ControlNet's
    ``control_model.`` mirrors its base UNet's encoder, so it is read the same way).
    ``pooled_width``: SDXL's second text encoder projection width, which with ``label_emb``'s input
    width gives the width of each of the six time-id embeddings (256 in SDXL, anything in a custom file)."""
    p = prefix
    conv_in = shapes[p + "input_blocks.0.0.weight"]  # [model_channels, in_channels, 3, 3]
    depths = _transformer_depths(shapes, p)

    # Walk input_blocks: resnet blocks (optionally followed by a transformer) until a downsampler.
    levels: list[dict] = []
    cur = {"resnets": 0, "channels": conv_in[0], "depths": []}
    k = 1
    while True:
        base = f"{p}input_blocks.{k}.0."
        if base + "op.weight" in shapes:
            levels.append(cur)
            cur = {"resnets": 0, "channels": cur["channels"], "depths": []}
        elif base + "out_layers.3.weight" in shapes:
            cur["resnets"] += 1
            cur["channels"] = shapes[base + "out_layers.3.weight"][0]
            cur["depths"].append(depths.get(f"input_blocks.{k}.1", 0))
        else:
            break
        k += 1
    levels.append(cur)

    if any(lv["resnets"] == 0 for lv in levels):
        raise _unsupported([p + "input_blocks.1.0.out_layers.3.weight"], keys)
    layers = {lv["resnets"] for lv in levels}
    if len(layers) != 1:
        raise UnsupportedModelError(None, f"UNet with varying blocks per level {sorted(layers)} is not supported")
    for lv in levels:
        if len(set(lv["depths"])) != 1:
            raise UnsupportedModelError(None, "UNet with mixed attention inside one level is not supported")
    block_out = [int(lv["channels"]) for lv in levels]
    has_attn = [lv["depths"][0] > 0 for lv in levels]
    mid_depth = depths.get("middle_block.1", 0)
    if mid_depth == 0:
        raise UnsupportedModelError(None, "UNet without middle-block attention (e.g. SSD-1B) is not supported")
    tdepth = [lv["depths"][0] if a else 1 for lv, a in zip(levels, has_attn)]
    if not has_attn[-1]:
        tdepth[-1] = mid_depth  # diffusers' mid block takes the last level's depth
    elif tdepth[-1] != mid_depth:
        raise UnsupportedModelError(None, "UNet whose middle-block depth differs from its last level")

    attn2 = next((k for k in shapes if k.startswith(p) and k.endswith(".attn2.to_k.weight")), None)
    proj_in = next((k for k in shapes if k.startswith(p) and k.endswith(".proj_in.weight")), None)
    if attn2 is None or proj_in is None:
        raise _unsupported([p + "...attn2.to_k.weight"], keys)
    if family == "sd1":
        heads: int | list[int] = 8  # SD1 uses 8 heads everywhere
    else:  # SD2/SDXL use 64-channel heads; diffusers calls the head *count* attention_head_dim
        heads = [max(1, c // 64) for c in block_out]

    time_embed = shapes.get(p + "time_embed.0.weight", (4 * block_out[0],))[0]
    config: dict = {
        "in_channels": conv_in[1],
        "out_channels": shapes.get(p + "out.2.weight", conv_in[1:2])[0],  # ControlNets have no output
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "block_out_channels": block_out,
        "layers_per_block": layers.pop(),
        "cross_attention_dim": shapes[attn2][1],
        "attention_head_dim": heads,
        "use_linear_projection": len(shapes[proj_in]) == 2,
        "transformer_layers_per_block": tdepth if any(d != 1 for d in tdepth) else 1,
    }
    if time_embed != 4 * block_out[0]:
        config["time_embedding_dim"] = time_embed
    if family == "sd2":
        config["upcast_attention"] = True  # as diffusers' SD2.1 config: avoids fp16 overflow in attention
    label = shapes.get(p + "label_emb.0.0.weight")
    if family == "sdxl":
        if label is None:
            raise _unsupported([p + "label_emb.0.0.weight"], keys)
        config.update(addition_embed_type="text_time",
                      addition_time_embed_dim=_time_id_width(label[1], pooled_width),
                      projection_class_embeddings_input_dim=label[1])
    elif label is not None:
        raise UnsupportedModelError(None, "class-conditioned UNet (unCLIP / upscaler) is not supported")
    return config


def _time_id_width(label_in: int, pooled_width: int | None) -> int:
    """SDXL's label_emb input = pooled text embedding + 6 time ids (sizes, crop, target) x width."""
    if pooled_width is None:
        return ADDITION_TIME_EMBED_DIM  # no text encoder to subtract (a ControlNet): SDXL's value
    rest = label_in - pooled_width
    if rest <= 0 or rest % 6 or (rest // 6) % 2:
        raise UnsupportedModelError(None, f"SDXL label_emb takes {label_in} inputs, which is not the pooled text "
                                          f"width {pooled_width} plus six even-width time-id embeddings")
    return rest // 6


def _vae_config(shapes: dict[str, tuple[int, ...]], keys: list[str]) -> dict:
    p = VAE_PREFIX
    needed = [p + "encoder.conv_in.weight", p + "decoder.conv_out.weight", p + "encoder.down.0.block.0.conv2.weight"]
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise _unsupported(missing, keys)
    n_levels = _count_indices(shapes, p + "encoder.down.")
    block_out = [shapes[f"{p}encoder.down.{i}.block.0.conv2.weight"][0] for i in range(n_levels)]
    if p + "quant_conv.weight" in shapes:
        latent = shapes[p + "quant_conv.weight"][0] // 2  # quant_conv maps 2*z -> 2*z (mean, logvar)
    else:
        latent = shapes[p + "decoder.conv_in.weight"][1]
    return {
        "in_channels": shapes[p + "encoder.conv_in.weight"][1],
        "out_channels": shapes[p + "decoder.conv_out.weight"][0],
        "down_block_types": ["DownEncoderBlock2D"] * n_levels,
        "up_block_types": ["UpDecoderBlock2D"] * n_levels,
        "block_out_channels": block_out,
        "layers_per_block": _count_indices(shapes, p + "encoder.down.0.block."),
        "latent_channels": latent,
        "use_quant_conv": p + "quant_conv.weight" in shapes,
        "use_post_quant_conv": p + "post_quant_conv.weight" in shapes,
        "mid_block_add_attention": p + "encoder.mid.attn_1.q.weight" in shapes,
    }


def _heads(hidden: int) -> int:
    return max(1, hidden // 64)  # all SD text encoders use 64-wide heads


def _hf_clip_config(shapes: dict[str, tuple[int, ...]], base: str, pad_id: int) -> dict:
    """CLIP-L in transformers layout; ``base`` ends with ``text_model.``."""
    vocab, hidden = shapes[base + "embeddings.token_embedding.weight"]
    return {
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": shapes[base + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": _count_indices(shapes, base + "encoder.layers."),
        "num_attention_heads": _heads(hidden),
        "max_position_embeddings": shapes[base + "embeddings.position_embedding.weight"][0],
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": pad_id,
    }


def _open_clip_config(shapes: dict[str, tuple[int, ...]], base: str, drop_layer_23: bool) -> dict:
    """OpenCLIP text tower (``base`` ends with ``model.``)."""
    vocab, hidden = shapes[base + "token_embedding.weight"]
    layers = _count_indices(shapes, base + "transformer.resblocks.")
    if drop_layer_23 and layers == 24:
        layers = 23  # SD2 uses the penultimate layer; diffusers' converter drops resblocks.23
    cfg = {
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": shapes[base + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        "num_hidden_layers": layers,
        "num_attention_heads": _heads(hidden),
        "max_position_embeddings": shapes[base + "positional_embedding"][0],
        "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0,
    }
    proj = shapes.get(base + "text_projection")  # OpenCLIP layout [width, embed_dim]
    linear = shapes.get(base + "text_projection.weight")  # some exporters: Linear layout [embed_dim, width]
    if proj is not None and len(proj) == 2:
        cfg["projection_dim"] = proj[1]
    else:
        cfg["projection_dim"] = linear[0] if linear is not None and len(linear) == 2 else hidden
    return cfg


def detect_checkpoint(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str] | None = None) -> Detection:
    """Identify an SD1 / SD2 / SDXL single-file checkpoint and derive diffusers/transformers configs."""
    metadata = metadata or {}
    shapes = {fix_legacy_clip_key(k): tuple(v) for k, v in shapes.items()}
    keys = list(shapes)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    te_configs: list[dict]
    if has(SDXL_TE1_PREFIX) and has(SDXL_TE0_PREFIX + "text_model."):
        family: Family = "sdxl"
        te_configs = [_hf_clip_config(shapes, SDXL_TE0_PREFIX + "text_model.", pad_id=49407),
                      _open_clip_config(shapes, SDXL_TE1_PREFIX, drop_layer_23=False)]
    elif has(SD2_TE_PREFIX + "transformer.resblocks."):
        family = "sd2"
        te_configs = [_open_clip_config(shapes, SD2_TE_PREFIX, drop_layer_23=True)]
    elif has(SD1_TE_PREFIX + "text_model.encoder.layers."):
        family = "sd1"
        te_configs = [_hf_clip_config(shapes, SD1_TE_PREFIX + "text_model.", pad_id=49407)]
    else:
        missing = [] if has(UNET_PREFIX) else [UNET_PREFIX + "*"]
        missing += [] if has(VAE_PREFIX) else [VAE_PREFIX + "*"]
        missing.append("a text encoder (cond_stage_model.* or conditioner.embedders.*)")
        raise _unsupported(missing, keys)

    core = [UNET_PREFIX + "input_blocks.0.0.weight", UNET_PREFIX + "out.2.weight"]
    missing = [k for k in core if k not in shapes]
    if missing:
        raise _unsupported(missing, keys)
    pooled = te_configs[1].get("projection_dim") if family == "sdxl" else None
    unet = _unet_config(shapes, family, keys, pooled_width=pooled)
    vae = _vae_config(shapes, keys)
    in_ch = unet["in_channels"]
    if in_ch not in (4, 8, 9):
        raise UnsupportedModelError(None, f"UNet with {in_ch} input channels (depth/upscale variant) is not supported")
    inpainting = in_ch == 9

    pred = prediction_type_from_metadata(metadata)
    if pred is None and (family != "sd2" or inpainting):
        pred = "epsilon"  # SD1/SDXL and SD2-inpainting are epsilon models unless told otherwise
    if family == "sdxl":
        size = 1024
    elif family == "sd2":
        size = 768 if pred == "v_prediction" else 512
    else:
        size = 512
    size = resolution_from_metadata(metadata) or size

    vae_scale = 2 ** (len(vae["block_out_channels"]) - 1)
    unet["sample_size"] = size // vae_scale
    vae["sample_size"] = size
    vae["scaling_factor"] = SCALING_FACTORS[family]

    name = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "Stable Diffusion XL"}[family]
    if inpainting:
        name += " inpainting"
    elif in_ch == 8:
        name += " instruct-pix2pix"
    if pred == "v_prediction":
        name += " (v-prediction)"
    return Detection(family=family, inpainting=inpainting, prediction_type=pred, unet_config=unet,
                     vae_config=vae, text_encoder_configs=te_configs, scaling_factor=SCALING_FACTORS[family],
                     default_size=size, description=name)
