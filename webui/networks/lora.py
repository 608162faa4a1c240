"""LoRA-family networks from `models/Lora`: read the ecosystem's formats, compute weight deltas.

Formats (keys as kohya_ss, LyCORIS, A1111 and diffusers/PEFT write them):
  - kohya LoRA / LoCon: `<module>.lora_down.weight`, `.lora_up.weight` (+ `.lora_mid.weight`), `.alpha`,
    module names `lora_unet_*` (diffusers-style for SD1/SD2, LDM/compvis-style for SDXL and older
    files), `lora_te_*` (SD1/SD2), `lora_te1_*` / `lora_te2_*` (SDXL);
  - LyCORIS LoHa: `.hada_w1_a/.hada_w1_b/.hada_w2_a/.hada_w2_b` (+ `.alpha`);
  - full difference: `.diff` (+ `.diff_b`);
  - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (or `.lora.down/up.weight`),
    `text_encoder.` / `text_encoder_2.` prefixes.
A module's delta is `up @ down * alpha / rank` (A1111's scale); the tag's multiplier is applied by
the caller, so changing only the multiplier never re-reads the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from webui.hashes import addnet_hash_safetensors, sha256_file
from webui.models.file_checks import FileCheck
from webui.models.file_io import ModelFileError, load_state_dict, read_key_shapes, read_safetensors_header

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")

_KOHYA_PARTS = ("lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha", "hada_w1_a", "hada_w1_b",
                "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2", "diff", "diff_b", "scale", "dora_scale",
                "lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2",
                "lora_A.weight", "lora_B.weight", "lora.down.weight", "lora.up.weight", "lora_linear_layer.down.weight",
                "lora_linear_layer.up.weight")


class LoraFileError(ValueError):
    pass


@dataclass
class NetworkModule:
    """One target layer's update, in the file's own terms (tensors on CPU in the file's dtype: an fp16
    file stays half the size in the cache; the delta is computed in float32)."""
    key: str                      # the file's module name
    tensors: dict[str, torch.Tensor]

    @property
    def kind(self) -> str:
        t = self.tensors
        if "hada_w1_a" in t:
            return "loha"
        if "lokr_w1" in t or "lokr_w1_a" in t:
            return "lokr"
        if "diff" in t:
            return "full"
        return "lora"

    def delta(self, shape: torch.Size) -> torch.Tensor:
        """The weight update (before the multiplier) reshaped to the target weight's shape."""
        t = {k: v.float() for k, v in self.tensors.items()}
        kind = self.kind
        alpha = float(t["alpha"]) if "alpha" in t else None
        if kind == "full":
            return t["diff"].reshape(shape)
        if kind == "loha":
            w1 = t["hada_w1_a"] @ t["hada_w1_b"]
            w2 = t["hada_w2_a"] @ t["hada_w2_b"]
            rank = t["hada_w1_b"].shape[0]
            d = (w1 * w2).reshape(shape)
        elif kind == "lokr":
            w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
            if "lokr_w2" in t:
                w2 = t["lokr_w2"]
            elif "lokr_t2" in t:  # Tucker: core [r, r, k, k] between w2_a [r, out] and w2_b [r, in]
                w2 = torch.einsum("i j k l, j r, i p -> p r k l", t["lokr_t2"], t["lokr_w2_b"],
                                  t["lokr_w2_a"]).contiguous()
            else:
                w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
            # the rank that alpha is relative to (LyCORIS/A1111: w1's if it is factorised, else w2's);
            # with both halves full, alpha is not used
            rank = t["lokr_w1_b"].shape[0] if "lokr_w1_b" in t else (
                t["lokr_w2_b"].shape[0] if "lokr_w2_b" in t else None)
            if len(shape) == 4 and w2.ndim == 2:
                w2 = w2.unsqueeze(2).unsqueeze(3)
            d = torch.kron(w1.reshape(w1.shape + (1,) * (w2.ndim - w1.ndim)), w2).reshape(shape)
            if rank is None:
                alpha = None
        else:
            down, up = t["down"], t["up"]
            rank = down.shape[0]
            if "mid" in t:  # LoCon with a CP-decomposed middle
                d = torch.einsum("n m k l, i n, m j -> i j k l", t["mid"], up.flatten(1), down.flatten(1))
            elif down.ndim == 4 and down.shape[2:] != (1, 1):  # 3x3 conv LoCon: up is 1x1
                d = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], down.shape[1], *down.shape[2:])
            else:
                d = up.flatten(1) @ down.flatten(1)
            d = d.reshape(shape)
        scale = float(t["scale"]) if "scale" in t else (alpha / rank if alpha is not None and rank else 1.0)
        return d * scale


@dataclass
class LoraFile:
    name: str
    path: Path
    metadata: dict[str, str]
    modules: dict[str, NetworkModule] = field(default_factory=dict)
    _addnet: str | None = None

    @property
    def alias(self) -> str:
        return self.metadata.get("ss_output_name") or self.name

    @property
    def addnet_hash(self) -> str:
        """A1111's `Lora hashes` value: sha256 of the tensor bytes after the safetensors header, 12 hex."""
        if self._addnet is None:
            self._addnet = (addnet_hash_safetensors(self.path) if self.path.suffix.lower() == ".safetensors"
                            else sha256_file(self.path))
        return self._addnet[:12]


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header's `__metadata__` without reading any tensor."""
    if path.suffix.lower() != ".safetensors":
        return {}
    try:
        return {str(k): str(v) for k, v in read_safetensors_header(path)[1].items()}
    except ModelFileError as e:
        raise LoraFileError(str(e)) from None


def family_from_keys(shapes: dict[str, tuple[int, ...]], meta: dict[str, str]) -> str | None:
    """sd1 / sd2 / sdxl from key names, shapes and kohya metadata; None if they cannot tell."""
    keys = list(shapes)
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys) or \
            str(meta.get("ss_base_model_version", "")).startswith("sdxl"):
        return "sdxl"
    if str(meta.get("ss_v2", "")).lower() == "true":
        return "sd2"
    for k in keys:  # text-encoder width: 768 = CLIP-L (SD1), 1024 = OpenCLIP-H (SD2)
        if k.startswith("lora_te_") and k.endswith("lora_down.weight"):
            return {768: "sd1", 1024: "sd2"}.get(shapes[k][-1])
    for k in keys:  # cross-attention context width of the UNet's attn2.to_k
        if "attn2_to_k" in k and k.endswith("lora_down.weight"):
            return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(shapes[k][-1])
    return None


def lora_family(path: Path) -> str | None:
    """``family_from_keys`` from a safetensors header alone (None for pickles or a broken header)."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        infos, meta = read_safetensors_header(path)
    except ModelFileError:
        return None
    return family_from_keys({k: v.shape for k, v in infos.items()}, meta)


def _part_of(key: str) -> str | None:
    return next((p for p in _KOHYA_PARTS if key.endswith("." + p)), None)


def check_lora_file(path: Path) -> FileCheck:
    """Listing check from the header (or a memory-mapped weights-only pickle): every tensor is a
    part of a LoRA/LyCORIS module we apply, and the family it was made for."""
    shapes, meta = read_key_shapes(path)
    keys = [k for k in shapes if not k.startswith("bundle_emb.")]
    if not keys:
        return FileCheck("no network tensors in the file")
    unknown = [k for k in keys if _part_of(k) is None]
    if len(unknown) == len(keys):
        return FileCheck(f"no LoRA/LyCORIS tensors (first key {keys[0]!r}): not a LoRA file")
    if unknown:
        return FileCheck(f"unknown tensor {unknown[0]!r}")
    if any(k.endswith(".dora_scale") for k in keys):
        return FileCheck("DoRA files (dora_scale) are not supported yet")
    return FileCheck(None, family_from_keys(shapes, {str(k): str(v) for k, v in meta.items()}))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(path)  # safetensors checked first; pickles only with weights_only
    except ModelFileError as e:
        raise LoraFileError(str(e)) from None


_PEFT = re.compile(r"^(.*?)\.(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight|"
                   r"lora_linear_layer\.down\.weight|lora_linear_layer\.up\.weight|alpha)$")


def group_modules(sd: dict[str, torch.Tensor]) -> dict[str, NetworkModule]:
    """Group a state dict's tensors by target module (kohya names keep their dots-free form)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        if key.startswith("bundle_emb."):
            continue  # embeddings bundled in a LoRA file: read by the embedding database
        part = _part_of(key)
        if part is None:
            raise LoraFileError(f"unknown tensor {key!r}")
        base = key[: -len(part) - 1]
        part = {"lora_down.weight": "down", "lora_up.weight": "up", "lora_mid.weight": "mid",
                "lora_A.weight": "down", "lora_B.weight": "up", "lora.down.weight": "down", "lora.up.weight": "up",
                "lora_linear_layer.down.weight": "down", "lora_linear_layer.up.weight": "up"}.get(part, part)
        out.setdefault(base, {})[part] = t
    mods = {k: NetworkModule(k, v) for k, v in out.items()}
    if any("dora_scale" in m.tensors for m in mods.values()):
        # DoRA renormalises the whole weight per column; adding its low-rank part alone would be wrong
        raise LoraFileError("DoRA files (dora_scale) are not supported yet")
    for m in mods.values():
        if m.kind == "lora" and not ("down" in m.tensors and "up" in m.tensors):
            raise LoraFileError(f"{m.key}: a LoRA module needs both up and down weights")
    return mods


def read_lora(path: Path, name: str | None = None) -> LoraFile:
    meta = read_metadata(path)
    mods = group_modules(_load_tensors(path))
    if not mods:
        raise LoraFileError(f"{path.name}: no network modules in the file")
    return LoraFile(name or path.stem, path, meta, mods)


# ------------------------------------------------------------------ naming: file keys → modules

def _underscored(name: str) -> str:
    return name.replace(".", "_")


def unet_ldm_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers Linear/Conv2d module path → its LDM (compvis/sgm) module path, through the checkpoint
    writer's table; empty for an architecture without an LDM twin."""
    from webui.models.ldm_writer import unet_to_ldm
    from webui.models.detect import UNET_PREFIX

    params = {f"{n}.weight": n for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    try:
        mapped = unet_to_ldm(params, unet.config)  # type: ignore[arg-type]
    except ValueError:
        return {}
    return {name: ldm_key[len(UNET_PREFIX):].rsplit(".", 1)[0] for ldm_key, name in mapped.items()}


def kohya_te_prefix(index: int, count: int) -> str:
    """kohya's text-encoder prefix: `lora_te_` for one encoder, `lora_te1_` / `lora_te2_` for SDXL's two."""
    return "lora_te_" if count == 1 else f"lora_te{index + 1}_"


def text_model_path(name: str) -> str:
    """A CLIP text-encoder module path as transformers 4 names it (transformers 5 drops `text_model.`
    on CLIPTextModel); kohya's names are built from this form."""
    return name if name.startswith("text_model.") else f"text_model.{name}"


def kohya_unet_key(path: str) -> str:
    return f"lora_unet_{_underscored(path)}"


def kohya_unet_names(unet: torch.nn.Module, family: str) -> dict[str, str]:
    """diffusers Linear/Conv2d path → the name kohya's sd-scripts writes for it: the diffusers path for
    SD1/SD2 (its UNet there mirrors diffusers' names), the LDM path for SDXL (its SDXL UNet mirrors
    the original sgm one)."""
    if family == "sdxl":
        return {name: kohya_unet_key(ldm) for name, ldm in unet_ldm_names(unet).items()}
    return {name: kohya_unet_key(name) for name, m in unet.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def kohya_te_name(name: str, index: int, count: int) -> str:
    """kohya's name for a Linear of text encoder ``index`` (of ``count``)."""
    return f"{kohya_te_prefix(index, count)}{_underscored(text_model_path(name))}"


def module_lookup(unet: torch.nn.Module, text_encoders: list[torch.nn.Module]) -> dict[str, tuple[str, torch.nn.Module]]:
    """Every name a LoRA file may use for a layer → (our qualified name, the layer)."""
    table: dict[str, tuple[str, torch.nn.Module]] = {}
    unet_mods = dict(unet.named_modules())
    for name, key in kohya_unet_names(unet, "sd1").items():
        entry = (f"unet.{name}", unet_mods[name])
        for k in (key, f"unet.{name}", name):
            table[k] = entry
    # LDM/compvis names (SDXL kohya files and older SD1 ones)
    for name, key in kohya_unet_names(unet, "sdxl").items():
        table.setdefault(key, (f"unet.{name}", unet_mods[name]))
    n_te = len(text_encoders)
    for i, te in enumerate(text_encoders):
        diffusers_prefix = "text_encoder." if i == 0 else "text_encoder_2."
        for name, mod in te.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            entry = (f"te{i}.{name}", mod)
            for k in (kohya_te_name(name, i, n_te), f"{diffusers_prefix}{text_model_path(name)}",
                      f"{diffusers_prefix}{name}"):
                table[k] = entry
    return table


def is_text_encoder_target(qualified: str) -> bool:
    return qualified.startswith("te")


def resolve_modules(lora: LoraFile, lookup: dict[str, tuple[str, torch.nn.Module]]) -> tuple[
        list[tuple[str, torch.nn.Module, NetworkModule]], list[str]]:
    """(matched (qualified name, layer, module) triples, unmatched file keys)."""
    found, missing = [], []
    for key, mod in lora.modules.items():
        hit = lookup.get(key)
        if hit is None and key.endswith(".processor"):
            hit = lookup.get(key[: -len(".processor")])
        if hit is None:
            # diffusers' old attention-processor names: <attn>.processor.to_q_lora → <attn>.to_q
            m = re.fullmatch(r"(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora", key)
            if m:
                hit = lookup.get(f"{m[1]}.{m[2]}" + (".0" if m[2] == "to_out" else ""))
        if hit is None:
            missing.append(key)
        else:
            found.append((hit[0], hit[1], mod))
    return found, missing


def scan_folder(folders: Iterable[Path]) -> dict[str, Path]:
    """name → path for every LoRA-looking file (first folder wins on a name clash)."""
    out: dict[str, Path] = {}
    for folder in folders:
        if folder is None or not folder.is_dir():
            continue
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix.lower() in LORA_SUFFIXES and not p.name.startswith("."):
                out.setdefault(p.stem, p)
    return out


def tag_multipliers(params: Any) -> tuple[float, float]:
    """A1111's `<lora:name:te:unet>` / `te=`/`unet=`: (text-encoder, UNet) multipliers."""
    pos = list(params.positional)
    named = dict(params.named)
    te = float(named.get("te", pos[1] if len(pos) > 1 else 1.0))
    unet = float(named.get("unet", pos[2] if len(pos) > 2 else te))
    return te, unet
