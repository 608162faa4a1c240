"""Checkpoint merger (A1111's Checkpoint Merger tab): weighted sum and add difference.

Works on the files' own tensors (any layout, as long as the checkpoints share it), one key at a
time, so peak memory stays near the size of the inputs.  The result is a `.safetensors` file whose
metadata records the recipe (`sd_merge_recipe`, as A1111 writes it) and the input hashes.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.fsutil import normal_mode
from webui.hashes import sha256_file
from webui.models.file_io import ModelFileError, load_state_dict

METHODS = ("Weighted sum", "Add difference", "No interpolation")


class MergeError(ValueError):
    pass


@dataclass
class MergeRecipe:
    primary: Path
    secondary: Path | None
    tertiary: Path | None
    method: str = "Weighted sum"
    multiplier: float = 0.3       # A1111's "M": A*(1-M) + B*M, or A + (B-C)*M
    save_as_half: bool = False
    output: Path | None = None
    skip_vae: bool = False        # keep A's VAE untouched (A1111 "copy config"/VAE options differ)


def _sha10(path: Path) -> str:
    return sha256_file(path)[:10]


def _same_family(models: dict[Path | None, dict[str, torch.Tensor]]) -> None:
    """Refuse mixing SD1, SD2, SDXL or inpainting models: A1111 would write a file nothing can load."""
    from webui.models.detect import detect_checkpoint

    kinds = {}
    for path, sd in models.items():
        try:
            det = detect_checkpoint({k: tuple(v.shape) for k, v in sd.items()}, {})
            kinds[path] = f"{det.family}{' inpainting' if det.inpainting else ''}"
        except Exception as e:
            raise MergeError(f"{path.name if path else '?'} is not a Stable Diffusion checkpoint: "
                             f"{getattr(e, 'reason', e)}") from None
    if len(set(kinds.values())) > 1:
        desc = ", ".join(f"{p.name if p else '?'} is {k}" for p, k in kinds.items())
        raise MergeError(f"merge models of the same family ({desc})")


def merge_checkpoints(r: MergeRecipe) -> Path:
    if r.method not in METHODS:
        raise MergeError(f"unknown merge method {r.method!r}; choose one of {list(METHODS)}")
    if r.method != "No interpolation" and r.secondary is None:
        raise MergeError(f"{r.method} needs a secondary model (B)")
    if r.method == "Add difference" and r.tertiary is None:
        raise MergeError("Add difference needs a tertiary model (C): the result is A + (B - C) * M")
    if r.output is None:
        raise MergeError("no output file name")
    try:
        a = load_state_dict(r.primary)
        b = load_state_dict(r.secondary) if r.secondary is not None and r.method != "No interpolation" else None
        c = load_state_dict(r.tertiary) if r.method == "Add difference" and r.tertiary is not None else None
    except ModelFileError as e:
        raise MergeError(str(e)) from None
    if b is not None:
        _same_family({r.primary: a, r.secondary: b, **({r.tertiary: c} if c is not None else {})})
    m = float(r.multiplier)
    out: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, ta in a.items():
        t = ta
        if b is not None and not (r.skip_vae and key.startswith("first_stage_model.")) and ta.is_floating_point():
            tb = b.get(key)
            tc = c.get(key) if c is not None else None
            if tb is None or tb.shape != ta.shape or (c is not None and (tc is None or tc.shape != ta.shape)):
                mismatched.append(key)  # A1111 keeps A's tensor when B (or C) has no twin
            elif r.method == "Weighted sum":
                t = (ta.float() * (1 - m) + tb.float() * m).to(ta.dtype)
            else:
                t = (ta.float() + (tb.float() - tc.float()) * m).to(ta.dtype)  # type: ignore[union-attr]
        if r.save_as_half and t.is_floating_point():
            t = t.half()
        out[key] = t.contiguous()
    if b is not None and len(mismatched) > len(a) // 2:
        raise MergeError(f"the checkpoints do not share a layout ({len(mismatched)} of {len(a)} tensors have no "
                         f"twin, e.g. {mismatched[0]}): merge models of the same family")
    recipe = {"type": "webui", "primary_model_hash": _sha10(r.primary),
              "secondary_model_hash": _sha10(r.secondary) if b is not None and r.secondary else None,
              "tertiary_model_hash": _sha10(r.tertiary) if c is not None and r.tertiary else None,
              "interp_method": r.method, "multiplier": m, "save_as_half": r.save_as_half,
              "custom_name": r.output.stem, "config_source": 0, "bake_in_vae": None,
              "discard_weights": "", "is_inpainting": False, "is_instruct_pix2pix": False}
    meta = {"sd_merge_recipe": json.dumps(recipe), "format": "pt",
            "sd_merge_models": json.dumps({_sha10(p): {"name": p.name} for p in (r.primary, r.secondary, r.tertiary)
                                           if p is not None and (p == r.primary or b is not None)}),
            "modelspec.date": time.strftime("%Y-%m-%d")}
    from safetensors.torch import save_file
    r.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = r.output.with_name(r.output.name + ".part")
    save_file(out, str(tmp), metadata=meta)
    normal_mode(tmp)  # safetensors writes 0600; a merge is a normal model file
    tmp.replace(r.output)  # a failed write never leaves a half file under the final name
    return r.output
