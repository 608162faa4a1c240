"""Streaming a model part block by block through the device, on diffusers' group-offloading hooks.

A streamed block lives in CPU RAM and is copied to the device right before it runs and dropped
right after; on CUDA the copies come from pinned memory on a second stream, so the next block's
transfer overlaps the current block's compute (diffusers `apply_group_offloading(use_stream=True)`).

A UNet (or ControlNet) is cut at its down/mid/up blocks: the manager keeps as many of those
resident as its budget allows and streams the rest, each streamed block in groups of one
resnet / one attention stack.  Any other module (text encoder, VAE, upscaler) is streamed layer
by layer ("leaf level").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, apply_group_offloading

# diffusers' hook names (diffusers.hooks.group_offloading); removing them is how diffusers itself
# re-plans offloading after a module changed (`_maybe_remove_and_reapply_group_offloading`).
_HOOK_NAMES = ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading")


class _QuietNestedMove(logging.Filter):
    """Without CUDA streams, diffusers offloads a group by calling ``.to()`` on its modules, and a
    nested diffusers model (a UNet block's Transformer2DModel) answers that with a warning per
    call.  That path only runs on the CPU (simulated budgets), where nothing moves anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is group offloaded and moving it" not in record.getMessage()


logging.getLogger("diffusers.models.modeling_utils").addFilter(_QuietNestedMove())


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


@dataclass(eq=False)
class Unit:
    """One block the manager may keep resident or stream."""
    name: str
    module: torch.nn.Module
    level: str            # "block_level" (its resnets/attentions are the groups) or "leaf_level"
    nbytes: int
    group_bytes: int      # the largest group streamed at once (two are on the device with prefetch)


def _largest_group(module: torch.nn.Module, level: str) -> int:
    if level == "leaf_level":
        leaves = [m for m in module.modules() if not list(m.children())]
        return max((tensor_bytes(m) for m in leaves), default=0)
    groups = [c for child in module.children() if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential))
              for c in child]
    return max((tensor_bytes(g) for g in groups), default=tensor_bytes(module))


def units_of(module: torch.nn.Module) -> tuple[list[Unit], int]:
    """The streamable blocks of ``module`` and the bytes of everything else (always resident
    while the part runs: embeddings, first/last convs, norms)."""
    found: list[tuple[str, torch.nn.Module]] = []
    for attr in ("down_blocks", "up_blocks"):
        blocks = getattr(module, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            found += [(f"{attr}.{i}", b) for i, b in enumerate(blocks)]
    mid = getattr(module, "mid_block", None)
    if isinstance(mid, torch.nn.Module):
        found.append(("mid_block", mid))
    if not found:
        total = tensor_bytes(module)
        return [Unit("", module, "leaf_level", total, _largest_group(module, "leaf_level"))], 0
    units = [Unit(n, m, "block_level", tensor_bytes(m), _largest_group(m, "block_level")) for n, m in found]
    rest = tensor_bytes(module) - sum(u.nbytes for u in units)
    return units, max(0, rest)


def start_streaming(unit: Unit, device: torch.device, offload: torch.device) -> None:
    """Hand ``unit`` (which must sit on ``offload``) to diffusers' group offloading."""
    cuda = device.type == "cuda"
    apply_group_offloading(unit.module, onload_device=device, offload_device=offload, offload_type=unit.level,
                           num_blocks_per_group=1 if unit.level == "block_level" else None,
                           use_stream=cuda, non_blocking=cuda)


def stop_streaming(unit: Unit, offload: torch.device) -> None:
    """Remove the hooks; the unit's tensors end up on ``offload``."""
    registry = HookRegistry.check_if_exists_or_initialize(unit.module)
    for name in _HOOK_NAMES:
        registry.remove_hook(name, recurse=True)
    unit.module.to(offload)
