"""Hypernetwork files as A1111 writes them (`Hypernetwork.save`), for Create hypernetwork and the trainer.

`models/hypernetworks/<name>.pt` is a torch pickle: each enabled context width (768, 320, …) → a
(key MLP, value MLP) pair of state dicts named `linear.N.weight/bias`, N counting every module of
A1111's nn.Sequential (activations, LayerNorms and Dropouts included), plus `step`, `name`,
`layer_structure`, `activation_func`, `is_layer_norm`, `weight_initialization`, `sd_checkpoint`,
`sd_checkpoint_name`, `activate_output`, `use_dropout`, `dropout_structure`, `last_layer_dropout` and
`optional_info`.  The MLPs are built by the loader's `build_layers` (webui/networks/hypernetworks.py), so
what is written here is exactly what the loader rebuilds.  `<file>.optim` holds `{optimizer_name, hash,
optimizer_state_dict}`, `hash` being the saved file's short sha256 (A1111 only reuses a matching state).
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from webui.hashes import sha256_file
from webui.networks.hypernetworks import HYPERNET_SUFFIXES, activation_classes, build_layers
from webui.training.embedding_files import check_free, read_optim_file, sanitize_name
from webui.training.file_writes import atomic_write

log = logging.getLogger(__name__)

MODULE_SIZES = (768, 1024, 320, 640, 1280)  # A1111's "Modules" checkboxes (context widths)
DEFAULT_SIZES = (768, 320, 640, 1280)
WEIGHT_INITS = ("Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal")
UI_HIDDEN_ACTIVATIONS = ("hardswish", "multiheadattention")  # A1111's dropdown leaves these out
DEFAULT_LAYER_STRUCTURE = "1, 2, 1"


@lru_cache(maxsize=1)
def usable_activations() -> tuple[str, ...]:
    """A1111's activation names that build without arguments and keep the width (GLU halves it,
    Threshold and MultiheadAttention need arguments: A1111 accepts them and then fails)."""
    out = []
    x = torch.zeros(1, 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # softmax & co. complain about their implicit dim
        for name, cls in activation_classes().items():
            try:
                if cls()(x).shape == x.shape:
                    out.append(name)
            except Exception:  # any failure means: not usable in a hypernetwork
                continue
    return tuple(out)


def ui_activations() -> list[str]:
    return [a for a in usable_activations() if a not in UI_HIDDEN_ACTIVATIONS]


def _numbers(value: Any, what: str) -> list[float]:
    if isinstance(value, str):
        items: list[Any] = [x.strip() for x in value.split(",") if x.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"{what} must be a comma-separated string or a list of numbers, not {value!r}")
    try:
        if any(isinstance(x, bool) for x in items):
            raise ValueError
        nums = [float(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is not a list of numbers") from None
    if not all(math.isfinite(n) for n in nums):
        raise ValueError(f"{what} {value!r} is not a list of finite numbers")
    return nums


def parse_layer_structure(value: Any) -> list[float]:
    """`"1, 2, 1"` or [1, 2, 1] → [1.0, 2.0, 1.0]; first and last must be 1, all above 0."""
    nums = _numbers(DEFAULT_LAYER_STRUCTURE if value is None else value, "layer structure")
    if len(nums) < 2 or nums[0] != 1 or nums[-1] != 1:
        raise ValueError(f"layer structure {value!r}: the first and last numbers must be 1 (for example 1, 2, 1)")
    if any(n <= 0 for n in nums):
        raise ValueError(f"layer structure {value!r}: every multiplier must be above 0")
    return nums


def parse_dropout_structure(value: Any, use_dropout: bool, layer_structure: Sequence[float]) -> list[float]:
    """A1111's rule: the text is read only with dropout on; otherwise zeros, one per layer.  We also check
    what its placeholder asks: one value per layer, first and last 0, each from 0 to below 1."""
    if not use_dropout or value is None or (isinstance(value, str) and not value.strip()):
        return [0] * len(layer_structure)
    nums = _numbers(value, "dropout structure")
    if len(nums) != len(layer_structure):
        raise ValueError(f"dropout structure {value!r} has {len(nums)} values; the layer structure has "
                         f"{len(layer_structure)} (one each)")
    if nums[0] != 0 or nums[-1] != 0:
        raise ValueError(f"dropout structure {value!r}: the first and last values must be 0")
    if any(not 0 <= n < 1 for n in nums):
        raise ValueError(f"dropout structure {value!r}: each value must be from 0 to below 1")
    return nums


def parse_sizes(sizes: Any) -> list[int]:
    try:
        out = [int(s) for s in sizes]
    except (TypeError, ValueError):
        raise ValueError(f"module sizes must be whole numbers (context widths such as 768), not {sizes!r}") from None
    if not out:
        raise ValueError("choose at least one module size (the context width of the model, 768 for SD1)")
    if any(s < 1 or s > 65536 for s in out):
        raise ValueError(f"module sizes {out} must be context widths (for example 768, 1024)")
    return list(dict.fromkeys(out))


@dataclass
class HypernetworkSpec:
    """The shape of a hypernetwork's MLPs, as stored in the file."""
    layer_structure: list[float]
    activation_func: str = "linear"
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: list[float] | None = None
    activate_output: bool = False

    def info(self) -> dict[str, Any]:
        """The file's string keys (what `webui.networks.hypernetworks.build_layers` reads)."""
        drops = self.dropout_structure
        return {"layer_structure": self.layer_structure, "activation_func": self.activation_func,
                "is_layer_norm": self.add_layer_norm, "weight_initialization": self.weight_init,
                "activate_output": self.activate_output, "use_dropout": self.use_dropout,
                "dropout_structure": drops, "last_layer_dropout": bool(drops and drops[-2] != 0),
                "optional_info": None}


def make_spec(layer_structure: Any = None, activation_func: str | None = "linear", weight_init: str | None = "Normal",
              add_layer_norm: bool = False, use_dropout: bool = False,
              dropout_structure: Any = None) -> HypernetworkSpec:
    """Validated spec from the Create hypernetwork fields (ValueError with the reason otherwise)."""
    structure = parse_layer_structure(layer_structure)
    act = (activation_func or "linear").strip().lower()
    if act not in usable_activations():
        raise ValueError(f"unknown activation function {activation_func!r}; "
                         f"choose one of {', '.join(usable_activations())}")
    init = weight_init or "Normal"
    if init not in WEIGHT_INITS:
        raise ValueError(f"unknown weight initialization {weight_init!r}; choose one of {', '.join(WEIGHT_INITS)}")
    drops = parse_dropout_structure(dropout_structure, bool(use_dropout), structure)
    return HypernetworkSpec(structure, act, init, bool(add_layer_norm), bool(use_dropout), drops)


def init_weights(mlp: torch.nn.Sequential, weight_init: str, activation_func: str) -> None:
    """A1111's initialisation: LayerNorms and "Normal" get weights N(0, 0.01) and zero biases; Xavier and
    Kaiming (for leaky ReLU when that is the activation, else ReLU) get zero biases."""
    gain_for = "leaky_relu" if activation_func == "leakyrelu" else "relu"
    with torch.no_grad():
        for layer in mlp:
            if type(layer) not in (torch.nn.Linear, torch.nn.LayerNorm):
                continue
            w, b = layer.weight, layer.bias
            if weight_init == "Normal" or type(layer) is torch.nn.LayerNorm:
                torch.nn.init.normal_(w, mean=0.0, std=0.01)
            elif weight_init == "XavierUniform":
                torch.nn.init.xavier_uniform_(w)
            elif weight_init == "XavierNormal":
                torch.nn.init.xavier_normal_(w)
            elif weight_init == "KaimingUniform":
                torch.nn.init.kaiming_uniform_(w, nonlinearity=gain_for)
            elif weight_init == "KaimingNormal":
                torch.nn.init.kaiming_normal_(w, nonlinearity=gain_for)
            else:
                raise ValueError(f"unknown weight initialization {weight_init!r}")
            torch.nn.init.zeros_(b)


MlpPair = tuple[torch.nn.Sequential, torch.nn.Sequential]  # (for keys, for values)


def new_modules(sizes: Sequence[int], spec: HypernetworkSpec) -> dict[int, MlpPair]:
    """Freshly initialised (key, value) MLPs per context width, in eval mode (the trainer calls .train())."""
    info = spec.info()
    out = {}
    for size in sizes:
        if any(int(size * m) < 1 for m in spec.layer_structure):
            raise ValueError(f"layer structure {spec.layer_structure} gives an empty layer at width {size}")
        pair = (build_layers(size, info), build_layers(size, info))
        for mlp in pair:
            init_weights(mlp, spec.weight_init, spec.activation_func)
            mlp.eval()
        out[int(size)] = pair
    return out


def save_hypernetwork(path: Path, modules: Mapping[int, tuple[torch.nn.Module, torch.nn.Module]],
                      info: Mapping[str, Any], *, name: str, step: int, sd_checkpoint: str | None,
                      sd_checkpoint_name: str | None, optimizer_name: str | None = None,
                      optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write A1111's layout; `info` is a spec's `.info()` or a loaded file's string keys.  With
    `optimizer_state`, also `<path>.optim` keyed to the new file's short hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[Any, Any] = {}
    for size, pair in modules.items():
        data[int(size)] = tuple({f"linear.{k}": v.detach().to("cpu", torch.float32).clone()
                                 for k, v in mlp.state_dict().items()} for mlp in pair)
    drops = info.get("dropout_structure")
    data.update({
        "step": int(step), "name": name, "layer_structure": list(info.get("layer_structure") or [1, 2, 1]),
        "activation_func": info.get("activation_func") or "linear",
        "is_layer_norm": bool(info.get("is_layer_norm")),
        "weight_initialization": info.get("weight_initialization") or "Normal",
        "sd_checkpoint": sd_checkpoint, "sd_checkpoint_name": sd_checkpoint_name,
        "activate_output": bool(info.get("activate_output")), "use_dropout": bool(info.get("use_dropout")),
        "dropout_structure": list(drops) if drops is not None else None,
        # A1111 derives it from the structure when there is one (the value before the output layer)
        "last_layer_dropout": (drops[-2] != 0) if drops else bool(info.get("last_layer_dropout")),
        "optional_info": info.get("optional_info") or None,
    })
    atomic_write(path, lambda p: torch.save(data, p))
    if optimizer_state is not None:
        optim = {"optimizer_name": optimizer_name or "AdamW", "hash": sha256_file(path)[:10],
                 "optimizer_state_dict": optimizer_state}
        atomic_write(Path(f"{path}.optim"), lambda p: torch.save(optim, p))
    return path


def load_optimizer_state(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(optimizer name, state) from `<path>.optim` when its hash matches the file (A1111's rule)."""
    saved = read_optim_file(path)
    if saved is None or saved.get("hash") != sha256_file(path)[:10]:
        return None
    state = saved.get("optimizer_state_dict")
    return (str(saved.get("optimizer_name") or "AdamW"), state) if state else None


def create_hypernetwork(folder: Path, name: str, enable_sizes: Sequence[int] = DEFAULT_SIZES,
                        overwrite_old: bool = False, layer_structure: Any = None,
                        activation_func: str | None = "linear",
                        weight_init: str | None = "Normal", add_layer_norm: bool = False, use_dropout: bool = False,
                        dropout_structure: Any = None, sd_checkpoint: str | None = None,
                        sd_checkpoint_name: str | None = None) -> Path:
    """A1111's Create hypernetwork: `<folder>/<name>.pt` at step 0 with freshly initialised MLPs."""
    name = sanitize_name(name)
    if name == "None":
        raise ValueError("'None' is reserved (A1111 never lists a hypernetwork of that name)")
    sizes = parse_sizes(enable_sizes)
    spec = make_spec(layer_structure, activation_func, weight_init, add_layer_norm, use_dropout, dropout_structure)
    folder = Path(folder)
    path = folder / f"{name}.pt"
    check_free(folder, name, path, bool(overwrite_old), HYPERNET_SUFFIXES)
    modules = new_modules(sizes, spec)
    save_hypernetwork(path, modules, spec.info(), name=name, step=0, sd_checkpoint=sd_checkpoint,
                      sd_checkpoint_name=sd_checkpoint_name)
    log.info("Created hypernetwork %s (sizes %s, layers %s, %s)", path, sizes, spec.layer_structure,
             spec.activation_func)
    return path


__all__ = ["DEFAULT_SIZES", "MODULE_SIZES", "WEIGHT_INITS", "HypernetworkSpec", "create_hypernetwork",
           "init_weights", "load_optimizer_state", "make_spec", "new_modules", "parse_dropout_structure",
           "parse_layer_structure", "parse_sizes", "save_hypernetwork", "ui_activations", "usable_activations"]
