"""Standalone VAE files (`models/VAE`, or `<checkpoint>.vae.*` beside a checkpoint).

Both layouts load: the original one A1111 users download (`encoder.down.0.block.0…`, optionally
under `first_stage_model.`, in `.safetensors`, `.pt` or `.ckpt` with a `state_dict`), and diffusers'
(`encoder.down_blocks.0.resnets.0…`).  Training leftovers (`loss.*`, `model_ema.*`) are ignored,
as A1111 ignores them.  Pickles are read with `torch.load(weights_only=True)` only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.hashes import sha256_file
from webui.models.detect import VAE_PREFIX, _vae_config
from webui.models.file_checks import FileCheck
from webui.models.file_io import ModelFileError, load_state_dict, read_key_shapes

VAE_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")


@dataclass(frozen=True)
class VaeFile:
    name: str  # the file name, as A1111 lists it ("vae-ft-mse-840000-ema-pruned.safetensors")
    path: Path

    def shorthash(self) -> str:
        """A1111's `VAE hash`: sha256 of the file, 10 hex."""
        return sha256_file(self.path)[:10]


def scan_vae_files(vae_dir: Path | None, ckpt_dir: Path | None) -> dict[str, VaeFile]:
    """`models/VAE/*` plus `*.vae.*` files in the checkpoint folder (A1111 lists both)."""
    out: dict[str, VaeFile] = {}
    if vae_dir is not None and vae_dir.is_dir():
        for p in sorted(vae_dir.rglob("*")):
            if p.is_file() and p.suffix.lower() in VAE_SUFFIXES:
                out.setdefault(p.name, VaeFile(p.name, p))
    if ckpt_dir is not None and ckpt_dir.is_dir():
        for p in sorted(ckpt_dir.rglob("*.vae.*")):
            if p.is_file() and p.suffix.lower() in VAE_SUFFIXES:
                out.setdefault(p.name, VaeFile(p.name, p))
    return out


def automatic_vae(checkpoint: Path, files: dict[str, VaeFile]) -> VaeFile | None:
    """A1111's "Automatic": `<checkpoint stem>.vae.<ext>` beside the checkpoint, else in the VAE folder."""
    stem = checkpoint.name.rsplit(".", 1)[0]
    for ext in (".pt", ".ckpt", ".safetensors"):
        beside = checkpoint.with_name(stem + ".vae" + ext)
        if beside.is_file():
            return VaeFile(beside.name, beside)
    for f in files.values():
        if f.name.rsplit(".", 1)[0] in (stem, stem + ".vae"):
            return f
    return None


def _not_a_vae(keys: list[str]) -> str | None:
    """Why a set of (prefix-free) keys is not a VAE, or None."""
    if not any(k.startswith("encoder.") for k in keys) or not any(k.startswith("decoder.") for k in keys):
        return "no encoder/decoder weights: not a VAE file"
    return None


def check_vae_file(path: Path) -> FileCheck:
    """Listing check from the header (or a memory-mapped weights-only pickle): a VAE of either layout
    with SD's 4 latent channels.  SD1, SD2 and SDXL VAEs share that shape, so no family is claimed."""
    shapes, _meta = read_key_shapes(path)
    if reason := _not_a_vae([k.removeprefix("first_stage_model.") for k in shapes]):
        return FileCheck(reason)
    conv_in = shapes.get("decoder.conv_in.weight") or shapes.get("first_stage_model.decoder.conv_in.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        return FileCheck(f"{conv_in[1]} latent channels: a VAE for another architecture (SD1/SD2/SDXL use 4)")
    return FileCheck()


def load_vae_file(path: Path, dtype: torch.dtype = torch.float32):
    """An AutoencoderKL from a standalone VAE file of either layout."""
    from diffusers import AutoencoderKL

    sd = {k: v for k, v in load_state_dict(path).items() if not k.startswith(("loss.", "model_ema."))}
    sd = {k[len("first_stage_model."):] if k.startswith("first_stage_model.") else k: v for k, v in sd.items()}
    if reason := _not_a_vae(list(sd)):
        raise ModelFileError(path, reason)
    if any(k.startswith("encoder.down_blocks.") for k in sd):  # diffusers layout
        n = 1 + max(int(m[1]) for k in sd if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k)))
        block_out = [sd[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(n)]
        lpb = 1 + max(int(m[1]) for k in sd if (m := re.match(r"encoder\.down_blocks\.0\.resnets\.(\d+)\.", k)))
        cfg = dict(in_channels=sd["encoder.conv_in.weight"].shape[1], out_channels=sd["decoder.conv_out.weight"].shape[0],
                   down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                   block_out_channels=block_out, layers_per_block=lpb,
                   latent_channels=sd["decoder.conv_in.weight"].shape[1],
                   use_quant_conv="quant_conv.weight" in sd, use_post_quant_conv="post_quant_conv.weight" in sd)
        vae = AutoencoderKL(**cfg)
        missing, unexpected = vae.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ModelFileError(path, f"diffusers VAE keys do not fit (missing {missing[:2]}, unexpected {unexpected[:2]})")
    else:
        from webui.models.load import build_vae

        prefixed = {VAE_PREFIX + k: v for k, v in sd.items()}
        shapes = {k: tuple(v.shape) for k, v in prefixed.items()}
        try:
            cfg = _vae_config(shapes, list(shapes))
        except Exception as e:  # detect's own error names what is missing
            raise ModelFileError(path, f"not a VAE file: {getattr(e, 'reason', e)}") from None

        class _Det:  # the one field build_vae reads
            vae_config = cfg
        vae = build_vae(_Det, prefixed, path)  # type: ignore[arg-type]
    return vae.to(dtype=dtype).eval().requires_grad_(False)
