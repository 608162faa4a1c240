"""A1111 hypernetworks (`models/hypernetworks/*.pt`) applied with `<hypernet:name:strength>`.

File format (A1111's `Hypernetwork.save`): integer keys = context widths (768, 1024, …) → a pair
of state dicts (for keys, for values) of small MLPs, plus `layer_structure` (e.g. [1, 2, 1]),
`activation_func`, `is_layer_norm`, `use_dropout`/`dropout_structure`/`last_layer_dropout`,
`activate_output`.  Each MLP maps the cross-attention context `x` to `x + mlp(x) * strength` before
the attention's key (or value) projection of every cross-attention layer whose context width
matches.  They wrap the projections with forward pre-hooks, so removing one is exact.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from webui.hashes import sha256_file
from webui.memory.bounded_cache import MB, BoundedCache
from webui.models.file_checks import CONTEXT_FAMILIES, CheckCache, FileCheck

HYPERNET_SUFFIXES = (".pt",)


class HypernetworkFileError(ValueError):
    pass


def activation_classes() -> dict[str, type[torch.nn.Module]]:
    """A1111's HypernetworkModule.activation_dict: its seven names plus every torch.nn activation, lower-cased."""
    acts: dict[str, type[torch.nn.Module]] = {"linear": torch.nn.Identity, "relu": torch.nn.ReLU,
                                              "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
                                              "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh,
                                              "sigmoid": torch.nn.Sigmoid}
    for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass):
        if issubclass(cls, torch.nn.Module) and cls.__module__ == "torch.nn.modules.activation":
            acts.setdefault(name.lower(), cls)
    return acts


def dropout_structure(layer_structure: list[float], use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """A1111's `parse_dropout_structure` for files that do not store one."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    values = [0.0] + [0.3] * (len(layer_structure) - 3)
    values.append(0.3 if last_layer_dropout else 0.0)
    values.append(0.0)
    return values


def build_layers(dim: int, info: dict[str, Any]) -> torch.nn.Sequential:
    """The MLP (fresh weights) with the exact module indices A1111 gives it, so a file's `linear.N.*`
    keys fit; shared by the loader and by the trainer's file writer (webui/training)."""
    structure = [float(x) for x in info.get("layer_structure") or [1, 2, 1]]
    if structure[0] != 1 or structure[-1] != 1:
        raise HypernetworkFileError(f"layer_structure {structure} must start and end with 1")
    act_name = info.get("activation_func") or "linear"
    acts = activation_classes()
    if act_name not in acts:
        raise HypernetworkFileError(f"unknown activation_func {act_name!r}")
    drops = info.get("dropout_structure") or dropout_structure(structure, bool(info.get("use_dropout")),
                                                               bool(info.get("last_layer_dropout")))
    layers: list[torch.nn.Module] = []
    for i in range(len(structure) - 1):
        layers.append(torch.nn.Linear(int(dim * structure[i]), int(dim * structure[i + 1])))
        last = i >= len(structure) - 2
        if act_name != "linear" and not (last and not info.get("activate_output")):
            layers.append(acts[act_name]())
        if info.get("is_layer_norm"):
            layers.append(torch.nn.LayerNorm(int(dim * structure[i + 1])))
        if drops[i + 1] > 0:
            layers.append(torch.nn.Dropout(p=float(drops[i + 1])))
    return torch.nn.Sequential(*layers)


def build_module(dim: int, state: dict[str, torch.Tensor], info: dict[str, Any]) -> torch.nn.Sequential:
    """`build_layers` loaded with a file's weights, frozen for inference."""
    mlp = build_layers(dim, info)
    # legacy files: linear1/linear2 instead of linear.N
    if any(k.startswith("linear1.") for k in state):
        state = {k.replace("linear1.", "0.").replace("linear2.", f"{len(mlp) - 1}."): v for k, v in state.items()}
    state = {k[len("linear."):] if k.startswith("linear.") else k: v for k, v in state.items()}
    try:
        mlp.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise HypernetworkFileError(f"weights do not fit the declared structure: {str(e).splitlines()[0]}") from None
    return mlp.eval().requires_grad_(False)


@dataclass
class Hypernetwork:
    name: str
    path: Path
    modules: dict[int, tuple[torch.nn.Module, torch.nn.Module]]  # context width → (for k, for v)
    info: dict[str, Any] = field(default_factory=dict)
    _sha256: str | None = None

    @property
    def shorthash(self) -> str:
        """A1111: sha256 of the file, 10 hex (`Hypernet hash`)."""
        if self._sha256 is None:
            self._sha256 = sha256_file(self.path)
        return self._sha256[:10]


def read_hypernetwork(path: Path) -> Hypernetwork:
    from webui.models.file_io import ModelFileError, load_pickle

    try:
        data = load_pickle(path)
    except ModelFileError as e:
        raise HypernetworkFileError(str(e)) from None
    if not isinstance(data, dict):
        raise HypernetworkFileError(f"{path.name}: not a hypernetwork")
    info = {k: v for k, v in data.items() if isinstance(k, str)}
    modules: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}
    for k, v in data.items():
        if isinstance(k, int):
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise HypernetworkFileError(f"{path.name}: entry {k} is not a (key, value) pair of modules")
            modules[k] = (build_module(k, v[0], info), build_module(k, v[1], info))
    if not modules:
        raise HypernetworkFileError(f"{path.name}: no per-width modules (not an A1111 hypernetwork)")
    return Hypernetwork(path.stem, path, modules, info)


CACHE_MB = 128  # parsed hypernetworks kept (A1111 files are 20-200 MB for SD1; small ones are common)


class HypernetworkNetworks:
    """Activator for `<hypernet:name:strength>` tags (see ModelService.network_kinds)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}
        # the listing check parses each file too: bounded, so a folder of hundreds stays cheap to hold
        self.cache: BoundedCache[Hypernetwork] = BoundedCache("hypernetwork", CACHE_MB * MB)
        self.checks = CheckCache(self._check)
        self.active: list[tuple[Hypernetwork, float]] = []
        self._hooked: Any = None
        self._handles: list[Any] = []
        self.refresh()

    def refresh(self) -> None:
        self.files = {}
        if self.folder is not None and self.folder.is_dir():
            for p in sorted(self.folder.rglob("*")):
                if p.is_file() and p.suffix.lower() in HYPERNET_SUFFIXES:
                    self.files.setdefault(p.stem, p)

    def listing(self, family: str | None = None) -> list[dict[str, Any]]:
        """A1111's GET /sdapi/v1/hypernetworks entries (name, path) plus sd_version/fits/error."""
        out = []
        for n, p in sorted(self.files.items()):
            check = self.checks.get(p)
            entry: dict[str, Any] = {"name": n, "path": str(p), "sd_version": check.family,
                                     "fits": check.fits(family), "note": check.note(family)}
            if check.error:
                entry["error"] = check.error
            out.append(entry)
        return out

    def _check(self, path: Path) -> FileCheck:
        """Listing check: the (small) file parsed as an A1111 hypernetwork (and kept, as a use would);
        the family is read from the context widths it has modules for."""
        try:
            hn = self.load(path)
        except HypernetworkFileError as e:
            return FileCheck(str(e).split(": ", 1)[-1])
        return FileCheck(None, next((CONTEXT_FAMILIES[w] for w in sorted(hn.modules) if w in CONTEXT_FAMILIES), None))

    def load(self, path: Path) -> Hypernetwork:
        return self.cache.get_or_load(path, read_hypernetwork)

    def _context_hook(self, which: int) -> Any:
        def hook(_module: torch.nn.Module, args: tuple) -> tuple | None:
            if not self.active or not args:
                return None
            x = args[0]
            for hn, strength in self.active:
                pair = hn.modules.get(int(x.shape[-1]))
                if pair is not None:
                    mlp = pair[which].to(x.device, x.dtype)
                    x = x + mlp(x) * strength  # A1111's HypernetworkModule.forward
            return (x,) + tuple(args[1:])
        return hook

    def _bind(self, model: Any) -> None:
        if self._hooked is model:
            return
        for h in self._handles:
            h.remove()
        self._handles = []
        # cross-attention layers only: their to_k/to_v read the text context
        for mod in model.sd.unet.modules():
            if getattr(mod, "is_cross_attention", False) and hasattr(mod, "to_k"):
                self._handles.append(mod.to_k.register_forward_pre_hook(self._context_hook(0)))
                self._handles.append(mod.to_v.register_forward_pre_hook(self._context_hook(1)))
        self._hooked = model

    def activate(self, model: Any, params: list[Any]) -> Any:
        from webui.networks.lora_networks import NetworkReport

        report = NetworkReport()
        active: list[tuple[Hypernetwork, float]] = []
        for p in params:
            name = str(p.positional[0]) if p.positional else ""
            path = self.files.get(name)
            if path is None:
                self.refresh()
                path = self.files.get(name)
            if path is None:
                report.warnings.append(f"Networks not found: hypernet:{name}")
                continue
            try:
                strength = float(p.positional[1]) if len(p.positional) > 1 else 1.0
                hn = self.load(path)
            except ValueError as e:
                report.warnings.append(f"Hypernetwork {name} is unusable: {e}")
                continue
            ctx = getattr(model.sd.unet.config, "cross_attention_dim", None)
            if isinstance(ctx, int) and ctx not in hn.modules:
                report.warnings.append(f"Hypernetwork {name} has modules for context widths {sorted(hn.modules)}, "
                                       f"the loaded model uses {ctx}: it changes nothing")
                continue
            active.append((hn, strength))
        if active:
            self._bind(model)
        self.active = active
        return report
