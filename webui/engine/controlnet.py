"""ControlNet units inside the denoising loop (sd-webui-controlnet semantics).

Each unit holds a loaded diffusers `ControlNetModel`, its control image (already preprocessed and
resized to the generation size), a weight, a guidance window (fractions of the steps) and a control
mode.  `ControlStack.residuals` is asked once per UNet call: it runs every unit active at this
step on the same scaled input and timestep the UNet gets, and returns the summed residuals.
  - Balanced: residuals on every row (cond and uncond);
  - My prompt is more important: residuals fade towards the shallow layers (0.825^(12-i));
  - ControlNet is more important: residuals on the cond rows only, so CFG pushes towards the map.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")


def control_mode_name(value: Any) -> str:
    """A1111-ControlNet accepts the name or its index (0, 1, 2)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return CONTROL_MODES[int(value)]
    if isinstance(value, str) and value.isdigit():
        return CONTROL_MODES[int(value)]
    if value in CONTROL_MODES:
        return str(value)
    raise ValueError(f"control_mode must be one of {list(CONTROL_MODES)} (or 0-2), got {value!r}")


@dataclass
class ControlUnitRuntime:
    model: Any                 # diffusers ControlNetModel on the UNet's device
    hint: torch.Tensor         # [1, 3, H, W] in 0..1, at the generation size
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"
    hires_hint: torch.Tensor | None = None  # the same map at the hires-fix size, for the second pass

    def active(self, step: int, total: int) -> bool:
        frac = step / max(1, total)
        return self.guidance_start <= frac <= self.guidance_end and self.weight != 0


@dataclass
class ControlStack:
    units: list[ControlUnitRuntime] = field(default_factory=list)
    calls: list[tuple[int, int]] = field(default_factory=list)  # (step, active units) per UNet call

    def for_hires(self) -> "ControlStack":
        """The units for the hires-fix pass: each with its map made at the hires size (as
        sd-webui-controlnet does), sharing this stack's call log."""
        return ControlStack([replace(u, hint=u.hires_hint) for u in self.units if u.hires_hint is not None],
                            self.calls)

    def residuals(self, sample: torch.Tensor, t: torch.Tensor, cross: torch.Tensor, uncond_rows: torch.Tensor,
                  step: int, total: int, added_cond_kwargs: dict | None = None) -> dict[str, Any]:
        """UNet kwargs (down/mid residuals) for this call, or {} when no unit is active."""
        down_sum: list[torch.Tensor] | None = None
        mid_sum: torch.Tensor | None = None
        active = [u for u in self.units if u.active(step, total)]
        self.calls.append((step, len(active)))
        for u in active:
            dtype = next(u.model.parameters()).dtype
            hint = u.hint.to(sample.device, dtype).expand(sample.shape[0], -1, -1, -1)
            down, mid = u.model(sample.to(dtype), t.to(dtype) if dtype != torch.float32 else t,
                                encoder_hidden_states=cross.to(dtype), controlnet_cond=hint,
                                conditioning_scale=u.weight, return_dict=False,
                                **({"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs else {}))
            down = [d.to(sample.dtype) for d in down]
            mid = mid.to(sample.dtype)
            if u.control_mode == "My prompt is more important":
                n = len(down) + 1
                scales = [0.825 ** float(n - 1 - i) for i in range(n)]  # deepest (mid) keeps 1.0
                down = [d * s for d, s in zip(down, scales[:-1])]
                mid = mid * scales[-1]
            elif u.control_mode == "ControlNet is more important":
                keep = (~uncond_rows).to(sample.dtype).view(-1, 1, 1, 1)
                down = [d * keep for d in down]
                mid = mid * keep
            down_sum = down if down_sum is None else [a + b for a, b in zip(down_sum, down)]
            mid_sum = mid if mid_sum is None else mid_sum + mid
        if down_sum is None:
            return {}
        return {"down_block_additional_residuals": down_sum, "mid_block_additional_residual": mid_sum}
