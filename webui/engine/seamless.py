"""Seamless tiling (A1111's "Tiling" checkbox, API field ``tiling``, infotext ``Tiling: True``).

A1111 (``sd_hijack.apply_circular``) sets ``padding_mode = "circular"`` on every ``torch.nn.Conv2d``
of the loaded model for a job with tiling on, and back to ``"zeros"`` otherwise, so that every
convolution wraps around the picture's edges and the result tiles without a seam. Nothing else
changes: no ConvTranspose (SD's UNets and VAEs have none, and PyTorch's transposed convolutions only
pad with zeros), and attention is global anyway.

``seamless(unet, vae, ...)`` does the same for the duration of a ``with`` block and puts back exactly
what was there afterwards (each conv's ``padding_mode`` and ``_reversed_padding_repeated_twice``),
also when the block raises. Differences from A1111's hijack:

* subclasses of ``nn.Conv2d`` are included (diffusers' deprecated ``LoRACompatibleConv``, PEFT's
  LoRA ``base_layer`` and its ``lora_A`` conv, which all honour ``padding_mode``); A1111 matches
  the exact type only, since its own model code has no subclasses;
* convs without padding (1x1 convs, diffusers' VAE downsamplers, which pad by hand) are left alone:
  circular padding by zero pixels changes nothing and only costs a pad call;
* ``_reversed_padding_repeated_twice`` (what ``Conv2d._conv_forward`` pads with when the mode is not
  ``"zeros"``) is recomputed from the conv's current ``padding``, in case it was changed after
  construction.

Works under the memory manager: group-offloading hooks (``webui.memory.streaming``) wrap
``forward`` and move weights, but the original ``Conv2d.forward`` still reads ``padding_mode``.

Not thread-safe: the modes are attributes of shared modules, so two jobs with different tiling must
not run at once on the same model. The job queue runs one job at a time, which is what this relies
on. Nesting is fine (the inner block restores what the outer one set).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["seamless", "circular_padding", "seamless_convs"]


def circular_padding(conv: torch.nn.Conv2d) -> list[int]:
    """The F.pad amounts (last dim first, each side) a conv needs with a non-zeros padding mode,
    computed from its ``padding`` as ``torch.nn.modules.conv._ConvNd.__init__`` does."""
    n = len(conv.kernel_size)
    if isinstance(conv.padding, str):
        out = [0, 0] * n
        if conv.padding == "same":
            for d, k, i in zip(conv.dilation, conv.kernel_size, range(n - 1, -1, -1)):
                total = d * (k - 1)
                out[2 * i], out[2 * i + 1] = total // 2, total - total // 2
        return out
    pad = tuple(conv.padding) if isinstance(conv.padding, (tuple, list)) else (int(conv.padding),) * n
    return [int(p) for p in reversed(pad) for _ in range(2)]


def seamless_convs(*modules: torch.nn.Module | None) -> list[torch.nn.Conv2d]:
    """The convs ``seamless`` changes: every ``nn.Conv2d`` (subclasses included) with some padding,
    each once even when shared between the modules."""
    seen: set[int] = set()
    out: list[torch.nn.Conv2d] = []
    for module in modules:
        if module is None:
            continue
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d) and id(m) not in seen:
                seen.add(id(m))
                if any(circular_padding(m)):
                    out.append(m)
    return out


@contextlib.contextmanager
def seamless(*modules: torch.nn.Module | None, enabled: bool = True) -> Iterator[list[torch.nn.Conv2d]]:
    """Within the block every padded ``nn.Conv2d`` of ``modules`` (None entries are skipped) pads
    circularly; afterwards each has its own ``padding_mode`` and ``_reversed_padding_repeated_twice``
    again, also after an exception. ``enabled=False`` changes nothing (so callers can write
    ``with seamless(unet, vae, enabled=p.tiling):``). Yields the convs it changed."""
    if not enabled:
        yield []
        return
    saved: list[tuple[torch.nn.Conv2d, str, object]] = []
    try:
        for conv in seamless_convs(*modules):
            saved.append((conv, conv.padding_mode, conv._reversed_padding_repeated_twice))
            conv._reversed_padding_repeated_twice = circular_padding(conv)
            conv.padding_mode = "circular"
        yield [c for c, _, _ in saved]
    finally:
        for conv, mode, reversed_padding in reversed(saved):
            conv.padding_mode = mode
            conv._reversed_padding_repeated_twice = reversed_padding  # type: ignore[assignment]
