"""Trainable LoRA adapters on a loaded SD model, named and shaped as kohya's sd-scripts makes them.

Each adapter is kohya's LoRA module: ``lora_down`` (Kaiming-uniform, a=√5), ``lora_up`` (zeros),
an ``alpha`` buffer, output ``base(x) + up(down(x)) · alpha/rank · multiplier``.  Linear layers get
Linear down/up; convolutions get a down conv with the base's kernel, stride, padding and dilation and
a 1×1 up conv (LoCon), so a file saved from them is the file kohya would write.

Targets (kohya's `networks.lora` rules, applied to diffusers' modules, which carry the same class
names as kohya's own UNet):
  - ``"transformer"`` (default, kohya's default): every Linear and 1×1 Conv2d inside a
    ``Transformer2DModel`` — attention q/k/v/out, feed-forward, proj_in/proj_out;
  - ``"attention"``: only the attention projections to_q/to_k/to_v/to_out.0 (diffusers' example
    script's choice; smaller files, fewer parameters);
  - ``"locon"``: the transformer layers plus every Linear/Conv2d in ``ResnetBlock2D``,
    ``Downsample2D`` and ``Upsample2D`` (kohya with ``conv_dim``): 3×3 convs get ``conv_rank`` /
    ``conv_alpha``, Linear and 1×1 layers ``rank`` / ``alpha``;
  - text encoders (optional): every Linear in ``CLIPAttention`` / ``CLIPMLP`` (q/k/v/out_proj, fc1,
    fc2).  For SD2 the encoder's last layer is left out: kohya's SD2 text encoder has 23 layers (the
    24th is never used, SD2 conditions on the penultimate one), so its files never name it.

Injection is a forward hook per layer: removing it restores the layer's own forward exactly, the
base weights are never written, and it composes with whatever else wraps a layer's forward
(offloading hooks, gradient checkpointing).  Hand-written rather than peft's LoRA layers: peft is
not a dependency here, it names tensors ``lora_A``/``lora_B`` under diffusers paths and treats conv
LoRA differently from LoCon, so kohya's file would need a translation pass anyway; the module below
is the whole mechanism.
"""
from __future__ import annotations

import contextlib
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch
from torch import nn

from webui.networks.lora import kohya_te_name, kohya_unet_names

log = logging.getLogger(__name__)

UNET_TARGETS = ("transformer", "attention", "locon")
_TRANSFORMER = ("Transformer2DModel",)
_RESNET = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
_TEXT = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
_ATTENTION_LEAVES = ("to_q", "to_k", "to_v", "to_out.0")


class ModelParts(Protocol):
    family: str
    unet: Any
    text_encoders: list


@dataclass
class LoraSpec:
    """What to train: kohya's ``network_dim`` / ``network_alpha`` and its ``conv_dim`` / ``conv_alpha``."""
    rank: int = 4
    alpha: float = 1.0
    unet_target: str = "transformer"
    conv_rank: int | None = None    # LoCon 3×3 convs; None = rank
    conv_alpha: float | None = None  # None = alpha
    text_encoder: bool = False

    def __post_init__(self) -> None:
        if self.unet_target not in UNET_TARGETS:
            raise ValueError(f"unet_target must be one of {', '.join(UNET_TARGETS)}, not {self.unet_target!r}")
        if self.rank < 1 or (self.conv_rank is not None and self.conv_rank < 1):
            raise ValueError("LoRA rank must be at least 1")

    @property
    def conv_dims(self) -> tuple[int, float] | None:
        """(rank, alpha) of 3×3 conv adapters, None unless LoCon."""
        if self.unet_target != "locon":
            return None
        return (self.conv_rank or self.rank, self.alpha if self.conv_alpha is None else self.conv_alpha)

    def network_args(self) -> dict[str, str]:
        """kohya's ``--network_args`` as it records them in ``ss_network_args`` (string values)."""
        conv = self.conv_dims
        return {} if conv is None else {"conv_dim": str(conv[0]), "conv_alpha": _num(conv[1])}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class LoraAdapter(nn.Module):
    """One layer's low-rank update; its state dict is kohya's ``lora_down.weight`` / ``lora_up.weight`` / ``alpha``."""

    def __init__(self, name: str, base: nn.Module, rank: int, alpha: float | None, *,
                 dtype: torch.dtype | None = torch.float32, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.lora_name = name
        if isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise ValueError(f"{name}: grouped convolutions have no LoRA form")
            down: nn.Module = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding,
                                        base.dilation, bias=False)
            up: nn.Module = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        elif isinstance(base, nn.Linear):
            down, up = nn.Linear(base.in_features, rank, bias=False), nn.Linear(rank, base.out_features, bias=False)
        else:
            raise TypeError(f"{name}: LoRA adapts Linear and Conv2d layers, not {type(base).__name__}")
        # initialised on the CPU in float32 from one generator: the same seed gives the same adapters
        # on any device and dtype
        nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(up.weight)
        self.lora_down, self.lora_up = down, up
        alpha = float(rank) if not alpha else float(alpha)  # kohya: alpha 0/None means no scaling
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32))
        self.rank = rank
        self.scale = alpha / rank
        self.multiplier = 1.0
        # the device is the caller's when the base layer's weights may be streamed (offloaded to the CPU)
        self.to(device or base.weight.device, dtype or base.weight.dtype)
        self._base = (base,)  # a tuple, so the base layer is not a submodule (its weights stay out of the state dict)
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self.enabled = True

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        w = self.lora_down.weight
        return self.lora_up(self.lora_down(x.to(w.dtype))) * (self.scale * self.multiplier)

    def _hook(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not self.enabled:
            return None  # None leaves the layer's output as it is
        return output + self.delta(args[0]).to(output.dtype)

    def apply_to(self) -> None:
        if self._handle is None:
            self._handle = self.base.register_forward_hook(self._hook)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def applied(self) -> bool:
        return self._handle is not None


class LoraNetwork(nn.Module):
    """All adapters of one LoRA, registered under their kohya names, so ``state_dict()`` is the file's
    tensor set (``<name>.lora_down.weight``, ``<name>.lora_up.weight``, ``<name>.alpha``)."""

    def __init__(self, family: str, spec: LoraSpec, adapters: list[LoraAdapter]) -> None:
        super().__init__()
        self.family = family
        self.spec = spec
        for a in adapters:
            if a.lora_name in self._modules:
                raise ValueError(f"duplicate LoRA module name {a.lora_name}")
            self.add_module(a.lora_name, a)

    def adapters(self) -> Iterator[LoraAdapter]:
        for m in self.children():
            yield m  # type: ignore[misc]

    @property
    def unet_adapters(self) -> list[LoraAdapter]:
        return [a for a in self.adapters() if a.lora_name.startswith("lora_unet_")]

    @property
    def text_encoder_adapters(self) -> list[LoraAdapter]:
        return [a for a in self.adapters() if a.lora_name.startswith("lora_te")]

    def apply_to(self) -> None:
        for a in self.adapters():
            a.apply_to()

    def remove(self) -> None:
        """Detach every adapter: the model's layers compute exactly what they did before injection."""
        for a in self.adapters():
            a.remove()

    def set_multiplier(self, multiplier: float) -> None:
        for a in self.adapters():
            a.multiplier = multiplier

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Adapters stay attached but add nothing (a generation served between training steps)."""
        before = [(a, a.enabled) for a in self.adapters()]
        for a, _ in before:
            a.enabled = False
        try:
            yield
        finally:
            for a, was in before:
                a.enabled = was

    def param_groups(self, unet_lr: float, text_encoder_lr: float | None = None) -> list[dict[str, Any]]:
        """Optimizer groups, UNet first; text-encoder adapters are left out when their rate is 0/None
        (kohya trains only the UNet then)."""
        groups = [{"params": [p for a in self.unet_adapters for p in a.parameters()], "lr": unet_lr}]
        te = [p for a in self.text_encoder_adapters for p in a.parameters()]
        if te and text_encoder_lr:
            groups.append({"params": te, "lr": text_encoder_lr})
        return [g for g in groups if g["params"]]

    def kohya_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The file's tensors on the CPU, every one (alpha too, as kohya does) in ``dtype`` if given."""
        out = {}
        for k, v in self.state_dict().items():
            v = v.detach().to("cpu", copy=True)
            out[k] = v.to(dtype) if dtype is not None else v
        return out

    @torch.no_grad()
    def load_kohya_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Copy saved adapter tensors in (strict: the same names and shapes)."""
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        if missing or unexpected:
            raise ValueError(f"LoRA state does not match the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
        for k, t in own.items():
            if tuple(t.shape) != tuple(sd[k].shape):
                raise ValueError(f"{k}: shape {tuple(sd[k].shape)} does not match {tuple(t.shape)}")
            t.copy_(sd[k])


def _inside(root: nn.Module, classes: tuple[str, ...]) -> Iterator[tuple[str, nn.Module]]:
    """(full path, layer) of every Linear/Conv2d under a module whose class name is in ``classes``."""
    seen: set[str] = set()
    for name, mod in root.named_modules():
        if type(mod).__name__ not in classes:
            continue
        for child_name, child in mod.named_modules():
            path = f"{name}.{child_name}" if child_name else name
            if isinstance(child, (nn.Linear, nn.Conv2d)) and path not in seen:
                seen.add(path)
                yield path, child


def unet_targets(unet: nn.Module, target: str) -> list[tuple[str, nn.Module, bool]]:
    """(diffusers path, layer, is a 3×3-style conv) for the UNet layers a target set adapts."""
    if target not in UNET_TARGETS:
        raise ValueError(f"unet_target must be one of {', '.join(UNET_TARGETS)}, not {target!r}")
    out = []
    for path, mod in _inside(unet, _TRANSFORMER):
        is_conv = isinstance(mod, nn.Conv2d) and mod.kernel_size != (1, 1)
        if is_conv:
            continue  # kohya adapts only Linear and 1×1 conv in transformer blocks
        if target == "attention" and not path.endswith(tuple("." + leaf for leaf in _ATTENTION_LEAVES)):
            continue
        out.append((path, mod, False))
    if target == "locon":
        for path, mod in _inside(unet, _RESNET):
            out.append((path, mod, isinstance(mod, nn.Conv2d) and mod.kernel_size != (1, 1)))
    return out


def text_encoder_targets(te: nn.Module, family: str) -> list[tuple[str, nn.Module]]:
    """(module path, Linear) for a text encoder's self-attention and MLP layers."""
    found = [(p, m) for p, m in _inside(te, _TEXT) if isinstance(m, nn.Linear)]
    if family == "sd2":
        layers = [int(m[1]) for p, _ in found if (m := re.search(r"encoder\.layers\.(\d+)\.", p))]
        if layers:
            last = f"encoder.layers.{max(layers)}."
            found = [(p, m) for p, m in found if last not in p]
    return found


def build_lora(model: ModelParts, spec: LoraSpec, *, dtype: torch.dtype | None = torch.float32,
               seed: int | None = None, device: torch.device | str | None = None) -> LoraNetwork:
    """Create the adapters for ``model`` (not yet attached; see ``inject_lora``).  ``dtype`` None keeps
    each base layer's dtype; float32 (the default) is what training wants.  ``device`` None puts each
    adapter beside its base layer's weights."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    adapters: list[LoraAdapter] = []
    tes = list(model.text_encoders) if spec.text_encoder else []
    for i, te in enumerate(tes):  # text encoders first, as kohya builds them (same init order)
        for path, mod in text_encoder_targets(te, model.family):
            adapters.append(LoraAdapter(kohya_te_name(path, i, len(model.text_encoders)), mod, spec.rank, spec.alpha,
                                        dtype=dtype, generator=gen, device=device))
    names = kohya_unet_names(model.unet, model.family)
    conv = spec.conv_dims
    for path, mod, is_conv in unet_targets(model.unet, spec.unet_target):
        if path not in names:
            raise ValueError(f"UNet layer {path} has no kohya name for {model.family}")
        rank, alpha = conv if (is_conv and conv) else (spec.rank, spec.alpha)
        adapters.append(LoraAdapter(names[path], mod, rank, alpha, dtype=dtype, generator=gen, device=device))
    net = LoraNetwork(model.family, spec, adapters)
    log.info("LoRA network: %d UNet and %d text-encoder modules, rank %d, alpha %s",
             len(net.unet_adapters), len(net.text_encoder_adapters), spec.rank, spec.alpha)
    return net


def inject_lora(model: ModelParts, spec: LoraSpec, *, dtype: torch.dtype | None = torch.float32,
                seed: int | None = None, device: torch.device | str | None = None) -> LoraNetwork:
    """Build the adapters and attach them; ``network.remove()`` detaches them again."""
    net = build_lora(model, spec, dtype=dtype, seed=seed, device=device)
    net.apply_to()
    return net
