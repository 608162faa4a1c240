"""Checkpoint merger (A1111's Checkpoint Merger tab): weighted sum and add difference.

Works on the files' own tensors (any layout, as long as the checkpoints share it), one key at a
time, so peak memory stays near the size of the inputs.  As in A1111 only model weights (keys with
"model" in their name) are mixed; the rest (the noise schedule `alphas_cumprod`, ...) is A's.  The
result is a `.safetensors` file; with "Copy metadata" (on by default, as in A1111) it carries the inputs'
metadata (A, then B, then C: prediction type, resolution and the like, which decide how the model is
sampled), and with "Add merge recipe" A1111's `sd_merge_recipe` / `sd_merge_models` entries.  A
`<name>.yaml` config beside an input is copied beside the result (A1111's "Copy config from").
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from webui.fsutil import normal_mode
from webui.hashes import legacy_model_hash, sha256_file
from webui.models.file_io import ModelFileError, load_state_dict, read_safetensors_header

METHODS = ("Weighted sum", "Add difference", "No interpolation")
CONFIG_SOURCES = ("A, B or C", "B", "C", "Don't")  # A1111's "Copy config from" choices, by index

log = logging.getLogger(__name__)


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
    skip_vae: bool = False        # keep A's VAE untouched
    save_metadata: bool = True    # A1111's "Save metadata"; the two below only act with it
    add_merge_recipe: bool = True
    copy_metadata: bool = True    # A1111's "Copy metadata from merged models"
    config_source: int = 0        # index into CONFIG_SOURCES


def _read_metadata(path: Path) -> dict[str, str]:
    if path.suffix.lower() != ".safetensors":
        return {}  # .ckpt files carry no metadata
    try:
        return {str(k): str(v) for k, v in read_safetensors_header(path)[1].items()}
    except Exception as e:  # the tensors loaded fine; unreadable metadata only loses the copy
        log.warning("could not read the metadata of %s: %s", path, e)
        return {}


def _json_dict(text: str | None) -> dict:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _merge_metadata(r: MergeRecipe, used: list[Path]) -> dict[str, str]:
    """The result's metadata, in A1111's order: inputs' metadata (A, B, C), `format`, then the recipe."""
    if not r.save_metadata:
        return {}
    inputs = {p: _read_metadata(p) for p in used}
    meta: dict[str, str] = {}
    if r.copy_metadata:
        for p in used:
            meta.update(inputs[p])
    meta["format"] = "pt"
    if r.add_merge_recipe:
        hashes = {p: sha256_file(p) for p in used}
        recipe = {"type": "webui", "primary_model_hash": hashes[r.primary],
                  "secondary_model_hash": hashes.get(r.secondary) if r.secondary else None,
                  "tertiary_model_hash": hashes.get(r.tertiary) if r.tertiary else None,
                  "interp_method": r.method, "multiplier": r.multiplier, "save_as_half": r.save_as_half,
                  "custom_name": r.output.stem if r.output else "", "config_source": r.config_source,
                  "bake_in_vae": None, "discard_weights": "", "is_inpainting": False, "is_instruct_pix2pix": False}
        models: dict[str, dict] = {}
        for p in used:  # an input that is itself a merge brings its own ancestry along
            models[hashes[p]] = {"name": p.stem, "legacy_hash": legacy_model_hash(p),
                                 "sd_merge_recipe": inputs[p].get("sd_merge_recipe")}
            models.update(_json_dict(inputs[p].get("sd_merge_models")))
        meta["sd_merge_recipe"] = json.dumps(recipe)
        meta["sd_merge_models"] = json.dumps(models)
    return meta


def _copy_config(r: MergeRecipe, used: list[Path]) -> None:
    """A1111's "Copy config from": `<input>.yaml` (which may set v-prediction) beside the result."""
    source = CONFIG_SOURCES[r.config_source] if 0 <= r.config_source < len(CONFIG_SOURCES) else "Don't"
    order = {"A, B or C": [r.primary, r.secondary, r.tertiary], "B": [r.secondary], "C": [r.tertiary]}.get(source, [])
    for p in order:
        if p is not None and p in used and p.with_suffix(".yaml").is_file() and r.output is not None:
            dest = r.output.with_suffix(".yaml")
            shutil.copyfile(p.with_suffix(".yaml"), dest)
            normal_mode(dest)
            return


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
        mixed = "model" in key and not (r.skip_vae and key.startswith("first_stage_model."))
        if b is not None and mixed and ta.is_floating_point():
            tb = b.get(key)
            tc = c.get(key) if c is not None else None
            if tb is None or tb.shape != ta.shape or (c is not None and (tc is None or tc.shape != ta.shape)):
                mismatched.append(key)  # A1111 keeps A's tensor when B (or C) has no twin
            elif r.method == "Weighted sum":
                # A + (B - A) * M: A*(1-M) + B*M, but exact wherever A and B agree
                t = torch.lerp(ta.float(), tb.float(), m).to(ta.dtype)
            else:
                t = (ta.float() + (tb.float() - tc.float()) * m).to(ta.dtype)  # type: ignore[union-attr]
        if r.save_as_half and t.is_floating_point():
            t = t.half()
        out[key] = t.contiguous()
    if b is not None and len(mismatched) > len(a) // 2:
        raise MergeError(f"the checkpoints do not share a layout ({len(mismatched)} of {len(a)} tensors have no "
                         f"twin, e.g. {mismatched[0]}): merge models of the same family")
    used = [r.primary] + ([r.secondary] if b is not None and r.secondary else []) \
        + ([r.tertiary] if c is not None and r.tertiary else [])
    used = list(dict.fromkeys(used))  # A merged with itself is one input
    meta = _merge_metadata(r, used)
    from safetensors.torch import save_file
    r.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = r.output.with_name(r.output.name + ".part")
    save_file(out, str(tmp), metadata=meta or None)
    normal_mode(tmp)  # safetensors writes 0600; a merge is a normal model file
    tmp.replace(r.output)  # a failed write never leaves a half file under the final name
    _copy_config(r, used)
    return r.output
