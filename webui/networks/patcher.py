"""The one mechanism networks use to change a model: weight deltas added in place, undoable exactly.

A layer's original weight is copied the first time any network touches it (on whatever device
the weight lives); every later change recomputes `original + sum(multiplier * delta)` from that
copy, and removing the last network copies the original back, bit for bit.  A change of the
whole set is all-or-nothing: if computing or writing any layer fails, every layer touched in that
call is put back as it was and the error is raised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

Delta = Callable[[torch.Size], torch.Tensor]  # weight shape → delta (float32, CPU or any device)


@dataclass
class LayerUpdate:
    layer: torch.nn.Module
    terms: list[tuple[Hashable, float, Delta]]  # (identity of the delta, multiplier, delta)

    @property
    def signature(self) -> tuple:
        return tuple((ident, mult) for ident, mult, _ in self.terms)


@dataclass
class WeightPatcher:
    originals: dict[str, torch.Tensor] = field(default_factory=dict)  # qualified name → original weight
    layers: dict[str, torch.nn.Module] = field(default_factory=dict)
    applied: dict[str, tuple] = field(default_factory=dict)           # qualified name → signature

    @property
    def patched(self) -> list[str]:
        return sorted(self.applied)

    def set(self, updates: dict[str, LayerUpdate]) -> list[str]:
        """Make exactly ``updates`` active (layers not named go back to their originals).
        Returns the qualified names whose weights changed."""
        todo: dict[str, torch.Tensor | None] = {}  # None = restore the original
        for name in self.applied:
            if name not in updates or not updates[name].terms:
                todo[name] = None
        for name, upd in updates.items():
            if not upd.terms or self.applied.get(name) == upd.signature:
                continue
            weight = upd.layer.weight
            base = self.originals.get(name, weight.detach())
            total = base.float().clone()
            for _, mult, delta in upd.terms:
                total += mult * delta(base.shape).to(total.device, torch.float32)
            todo[name] = total.to(weight.dtype)
            self.layers[name] = upd.layer
        # Every delta is computed above, before any weight changes: a bad file fails here with the
        # model untouched.  The writes below keep the previous weights to put back if one fails.
        previous: dict[str, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for name, new in todo.items():
                    layer = self.layers[name]
                    previous[name] = layer.weight.detach().clone()
                    if new is None:
                        layer.weight.copy_(self.originals[name])
                    else:
                        if name not in self.originals:  # kept in CPU RAM: device memory is for the model
                            self.originals[name] = previous[name].to("cpu", copy=True)
                        layer.weight.copy_(new)
        except BaseException:
            with torch.no_grad():
                for name, old in previous.items():
                    self.layers[name].weight.copy_(old)
                    if name not in self.applied:
                        self.originals.pop(name, None)
            raise
        for name, new in todo.items():
            if new is None:
                self.applied.pop(name, None)
                self.originals.pop(name, None)
                self.layers.pop(name, None)
            else:
                self.applied[name] = updates[name].signature
        return list(todo)

    def restore_all(self) -> None:
        self.set({})
