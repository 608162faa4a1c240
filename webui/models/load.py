"""Build diffusers/transformers models from a single-file SD checkpoint, fully offline.

Pipeline (each step small and separately testable):
  read + validate file -> detect architecture from shapes -> split state dict by prefix ->
  convert each part with diffusers' own ``convert_ldm_*`` functions -> build the module on the meta
  device -> ``load_state_dict(strict=True, assign=True)`` (the file's tensors become the parameters,
  so nothing is allocated twice).  Configs come from ``detect``, tokenizers from the package.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from webui.models.detect import (
    SD1_TE_PREFIX, SD2_TE_PREFIX, SDXL_TE0_PREFIX, SDXL_TE1_PREFIX, UNET_PREFIX, VAE_PREFIX,
    Detection, UnsupportedModelError, detect_checkpoint, fix_legacy_clip_key, prediction_type_from_metadata,
)
from webui.models.file_io import (
    SAFETENSORS_SUFFIXES, ModelFileError, load_state_dict, read_safetensors_header,
)
from webui.models.tokenizers import load_clip_tokenizer

_COMPONENT_PREFIXES = (UNET_PREFIX, VAE_PREFIX, "cond_stage_model.", "conditioner.embedders.")


@dataclass
class SDModel:
    family: str  # "sd1" | "sd2" | "sdxl"
    inpainting: bool
    prediction_type: str  # "epsilon" | "v_prediction"
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoders: list  # [CLIPTextModel] or, for SDXL, [CLIPTextModel, CLIPTextModelWithProjection]
    tokenizers: list  # CLIPTokenizer per text encoder
    scaling_factor: float
    default_size: int
    metadata: dict[str, str]
    path: Path
    alphas_cumprod: torch.Tensor  # float32 [1000]
    latent_channels: int = 4
    vae_scale_factor: int = 8
    description: str = field(default="")


def ldm_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The "scaled linear" DDPM schedule exactly as ldm/A1111 compute it (float64, then float32)."""
    betas = (torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2).numpy()
    return torch.tensor(np.cumprod(1.0 - betas, axis=0), dtype=torch.float32)


def _sub(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if k.startswith(prefix)}


def assign_weights(model: torch.nn.Module, weights: dict[str, Any], path: Path, what: str) -> None:
    """Strict load that names the offending keys instead of dumping torch's wall of text."""
    expected = model.state_dict()
    weights = {k: v for k, v in weights.items() if v is not None}
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    bad_shape = [f"{k} (file {tuple(weights[k].shape)}, model {tuple(expected[k].shape)})"
                 for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad_shape)):
        if items:
            problems.append(f"{label}: {', '.join(items[:3])}" + (f" (+{len(items) - 3} more)" if len(items) > 3 else ""))
    if problems:
        raise ModelFileError(path, f"{what} weights do not fit the detected architecture; " + "; ".join(problems))
    model.load_state_dict(weights, strict=True, assign=True)


def _finish(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    model.to(device)  # moves the (non-persistent) buffers made on CPU; parameters are already there
    model.eval()
    model.requires_grad_(False)
    return model


def build_unet(det: Detection, sd: dict[str, torch.Tensor], path: Path):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    try:
        converted = convert_ldm_unet_checkpoint(_sub(sd, UNET_PREFIX), det.unet_config)
    except (KeyError, IndexError, AttributeError) as e:
        raise ModelFileError(path, f"UNet weights are incomplete ({e})") from None
    with init_empty_weights():
        unet = UNet2DConditionModel(**det.unet_config)
    assign_weights(unet, converted, path, "UNet")
    return unet


def build_vae(det: Detection, sd: dict[str, torch.Tensor], path: Path):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        converted = convert_ldm_vae_checkpoint(_sub(sd, VAE_PREFIX), det.vae_config)
    except (KeyError, IndexError, AttributeError) as e:
        raise ModelFileError(path, f"VAE weights are incomplete ({e})") from None
    with init_empty_weights():
        vae = AutoencoderKL(**det.vae_config)
    assign_weights(vae, converted, path, "VAE")
    return vae


def _fit_text_model_keys(model: torch.nn.Module, converted: dict[str, Any]) -> dict[str, Any]:
    # transformers >= 5.6 flattened CLIPTextModel (no ``text_model.`` level); position_ids is a
    # non-persistent buffer there (and broken in some merged SD1 files), so it is never loaded.
    flat = not hasattr(model, "text_model")
    out = {}
    for k, v in converted.items():
        if k.endswith("position_ids"):
            continue
        out[k.removeprefix("text_model.") if flat else k] = v
    return out


def build_text_encoders(det: Detection, sd: dict[str, torch.Tensor], path: Path) -> list:
    from accelerate import init_empty_weights
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if det.family == "sd1":
        parts = [("clip", SD1_TE_PREFIX, CLIPTextModel)]
    elif det.family == "sd2":
        parts = [("open_clip", SD2_TE_PREFIX, CLIPTextModel)]
    else:
        parts = [("clip", SDXL_TE0_PREFIX, CLIPTextModel), ("open_clip", SDXL_TE1_PREFIX, CLIPTextModelWithProjection)]
    models = []
    for (kind, prefix, cls), cfg in zip(parts, det.text_encoder_configs):
        with init_empty_weights():
            model = cls(CLIPTextConfig(**cfg))
        sub = _sub(sd, prefix)
        if kind == "clip":
            converted = convert_ldm_clip_checkpoint(sub)
        else:
            alt = prefix + "text_projection.weight"  # a few exporters store it as a Linear weight
            if prefix + "text_projection" not in sub and alt in sub:
                sub[prefix + "text_projection"] = sub.pop(alt).T
            try:
                converted = convert_open_clip_checkpoint(model, sub, prefix=prefix)
            except (KeyError, IndexError, AttributeError) as e:
                raise ModelFileError(path, f"text encoder weights are incomplete ({e})") from None
            if cls is CLIPTextModel:
                converted.pop("text_projection.weight", None)
        assign_weights(model, _fit_text_model_keys(model, converted), path,
                       f"text encoder {len(models) + 1}")
        models.append(model)
    return models


@torch.no_grad()
def sd2_is_v_prediction(unet) -> bool:
    """A1111's test: at t=999 a v-model predicts roughly -x for a constant latent."""
    p = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, device=p.device, dtype=p.dtype)
    ctx = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=p.device, dtype=p.dtype)
    t = torch.tensor([999], device=p.device)
    out = unet(x, t, encoder_hidden_states=ctx).sample
    return (out.float() - x[:, : out.shape[1]].float()).mean().item() < -1


def prediction_type_from_yaml(path: Path) -> str | None:
    """A1111 honours ``<stem>.yaml`` next to the checkpoint; ldm's default parameterization is eps."""
    cfg = path.with_suffix(".yaml")
    if not cfg.is_file():
        return None
    text = cfg.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^\s*parameterization:\s*[\"']?(\w+)[\"']?", text, re.MULTILINE)
    return "v_prediction" if m and m.group(1) == "v" else "epsilon"


def _detect(path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> Detection:
    try:
        return detect_checkpoint(shapes, metadata)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(path, e.reason) from None


def load_checkpoint(path: str | Path, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device = "cpu") -> SDModel:
    """Load an SD1/SD2/SDXL ``.safetensors`` / ``.ckpt`` checkpoint into diffusers modules."""
    path = Path(path)
    file_alphas = None  # read in float32 whatever ``dtype`` is: it is the sampler's noise schedule
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        infos, metadata = read_safetensors_header(path)
        det = _detect(path, {k: v.shape for k, v in infos.items()}, metadata)  # before reading any weights
        if "alphas_cumprod" in infos:
            file_alphas = load_state_dict(path, prefixes=("alphas_cumprod",)).get("alphas_cumprod")
        sd = load_state_dict(path, device, dtype=dtype, prefixes=_COMPONENT_PREFIXES)
    else:
        sd = load_state_dict(path, "cpu")
        metadata = {}
        det = _detect(path, {k: tuple(v.shape) for k, v in sd.items()}, metadata)
        file_alphas = sd.get("alphas_cumprod")
        for k in list(sd):  # drop EMA/optimizer copies, cast the rest one tensor at a time
            t = sd.pop(k)
            if k.startswith(_COMPONENT_PREFIXES):
                sd[k] = (t.to(dtype) if t.is_floating_point() else t).to(device)
    sd = {fix_legacy_clip_key(k): v for k, v in sd.items()}

    unet = build_unet(det, sd, path)
    vae = build_vae(det, sd, path)
    text_encoders = build_text_encoders(det, sd, path)
    del sd  # the models now own every tensor they need

    pred = prediction_type_from_metadata(metadata) or prediction_type_from_yaml(path)
    if pred is None:
        if det.family == "sd2" and det.prediction_type is None:
            pred = "v_prediction" if sd2_is_v_prediction(unet.to(device)) else "epsilon"
        else:
            pred = det.prediction_type or "epsilon"
    size = det.default_size
    if det.family == "sd2" and "modelspec.resolution" not in metadata:
        size = 768 if pred == "v_prediction" and not det.inpainting else 512
    description = det.description
    if pred == "v_prediction" and "v-prediction" not in description:
        description += " (v-prediction)"
    elif pred == "epsilon":
        description = description.replace(" (v-prediction)", "")

    if file_alphas is not None and tuple(file_alphas.shape) == (1000,):
        alphas = file_alphas.detach().to("cpu", torch.float32)  # A1111 uses the file's schedule buffer
    else:
        alphas = ldm_alphas_cumprod()
    vae_levels = len(det.vae_config["block_out_channels"])
    return SDModel(
        family=det.family, inpainting=det.inpainting, prediction_type=pred,
        unet=_finish(unet, device), vae=_finish(vae, device),
        text_encoders=[_finish(te, device) for te in text_encoders],
        tokenizers=_tokenizers(det.family), scaling_factor=det.scaling_factor, default_size=size,
        metadata=dict(metadata), path=path, alphas_cumprod=alphas,
        latent_channels=int(det.vae_config["latent_channels"]), vae_scale_factor=2 ** (vae_levels - 1),
        description=description,
    )


def _tokenizers(family: str) -> list:
    pads = {"sd1": [True], "sd2": [False], "sdxl": [True, False]}[family]
    return [load_clip_tokenizer(pad_with_eos=p) for p in pads]


def load_diffusers_folder(path: str | Path, *, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu") -> SDModel:
    """Load a diffusers-format folder (model_index.json + unet/ vae/ text_encoder[_2]/) offline."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    root = Path(path)
    index_file = root / "model_index.json"
    if not index_file.is_file():
        raise ModelFileError(root, "not a diffusers folder (model_index.json missing)")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        kw = {"local_files_only": True}
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype, **kw)
        tes = [CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype, **kw)]
        if "text_encoder_2" in index and (root / "text_encoder_2").is_dir():
            tes.append(CLIPTextModelWithProjection.from_pretrained(root, subfolder="text_encoder_2", dtype=dtype, **kw))
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise ModelFileError(root, f"cannot load diffusers folder ({str(e).splitlines()[0][:200]})") from None
    family = "sdxl" if len(tes) == 2 else ("sd2" if tes[0].config.hidden_act == "gelu" else "sd1")
    sched = root / "scheduler" / "scheduler_config.json"
    pred = "epsilon"
    if sched.is_file():
        pred = json.loads(sched.read_text(encoding="utf-8")).get("prediction_type", "epsilon") or "epsilon"
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    name = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "Stable Diffusion XL"}[family]
    inpainting = unet.config.in_channels == 9
    return SDModel(
        family=family, inpainting=inpainting, prediction_type=pred,
        unet=_finish(unet, device), vae=_finish(vae, device), text_encoders=[_finish(t, device) for t in tes],
        tokenizers=_tokenizers(family), scaling_factor=float(vae.config.scaling_factor),
        default_size=int(unet.config.sample_size) * vae_scale, metadata={}, path=root,
        alphas_cumprod=ldm_alphas_cumprod(), latent_channels=int(vae.config.latent_channels),
        vae_scale_factor=vae_scale,
        description=name + (" inpainting" if inpainting else "") + (" (v-prediction)" if pred == "v_prediction" else ""),
    )
