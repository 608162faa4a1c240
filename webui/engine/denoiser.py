"""The one place a UNet is called during sampling: CFG, parameterisation, per-step hooks.

Samplers work in k-diffusion's space (x = x0 + sigma * eps) and see only `denoiser(x, sigma) -> x0`.
Everything that must happen "every step" (prompt editing, ControlNet, extension callbacks,
interrupt) hooks in here, whatever sampler is running.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from webui.engine.model_schedule import ModelSchedule
from webui.prompts.conditioning import StepConds
from webui.prompts.encoder import Conditioning


@dataclass
class DenoiserCall:
    """What a per-step hook sees before the UNet runs; hooks may replace tensors in place.
    ``cond`` stacks every positive part (AND) of every image; ``parts`` says which rows are whose."""
    x: torch.Tensor
    sigma: torch.Tensor
    step: int
    total_steps: int
    cond: Conditioning
    uncond: Conditioning
    parts: list[list[tuple[int, float]]] = field(default_factory=list)


class ConditioningSource(Protocol):
    def at(self, step: int) -> StepConds: ...


@dataclass
class CFGDenoiser:
    unet: Any
    schedule: ModelSchedule
    prediction_type: str
    conds: ConditioningSource  # per-step cond/uncond (prompt editing, alternation, AND)
    cfg_scale: float
    width: int
    height: int
    family: str
    image_conditioning: torch.Tensor | None = None   # [B, C, h, w] for 9-channel inpainting models
    total_steps: int = 0
    before_hooks: list[Callable[[DenoiserCall], None]] = field(default_factory=list)
    # after the model ran, before CFG: (predictions of every row, conds then unconds; step) → predictions
    after_model_hooks: list[Callable[[torch.Tensor, int], torch.Tensor | None]] = field(default_factory=list)
    after_cfg_hooks: list[Callable[[torch.Tensor, int], torch.Tensor]] = field(default_factory=list)
    # A1111's NGMS (s_min_uncond): below this sigma, every other step skips the negative prompt
    s_min_uncond: float = 0.0
    step: int = 0
    # when a list: every call appends (step, the conditioning it used) — for tests and debugging
    record: list[tuple[int, StepConds]] | None = None
    controls: Any = None  # webui.engine.controlnet.ControlStack: ControlNet residuals per UNet call
    # SDXL's crop coordinates (A1111's sdxl_crop_top / sdxl_crop_left options)
    crop_top: int = 0
    crop_left: int = 0

    def _sdxl_added(self, pooled: torch.Tensor, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
        # original size, crop top-left, target size: A1111 passes the requested size and its crop options
        ids = torch.tensor([self.height, self.width, self.crop_top, self.crop_left, self.height, self.width],
                           device=device, dtype=dtype)
        return {"text_embeds": pooled, "time_ids": ids.repeat(batch, 1)}

    def _model(self, x: torch.Tensor, sigma: torch.Tensor, cross: torch.Tensor, pooled: torch.Tensor | None,
               image_cond: torch.Tensor | None, uncond_rows: torch.Tensor | None = None) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1)
        c_in = 1.0 / (s ** 2 + 1.0) ** 0.5
        t = self.schedule.sigma_to_t(sigma.float()).to(x.device)
        inp = x * c_in
        if image_cond is not None:
            inp = torch.cat([inp, image_cond.to(inp.dtype)], dim=1)
        kwargs: dict[str, Any] = {}
        if self.family == "sdxl":
            assert pooled is not None
            kwargs["added_cond_kwargs"] = self._sdxl_added(pooled.to(x.device, dtype), x.shape[0], x.device, dtype)
        if self.controls is not None and self.controls.units:
            rows = uncond_rows if uncond_rows is not None else torch.zeros(x.shape[0], dtype=torch.bool)
            kwargs.update(self.controls.residuals(inp[:, :x.shape[1]], t, cross.to(dtype), rows.to(x.device), self.step,
                                                  self.total_steps, kwargs.get("added_cond_kwargs")))
        out = self.unet(inp.to(dtype), t.to(dtype) if dtype != torch.float32 else t, encoder_hidden_states=cross.to(dtype),
                        return_dict=False, **kwargs)[0].to(x.dtype)
        if self.prediction_type == "v_prediction":
            return x / (s ** 2 + 1.0) - out * s / (s ** 2 + 1.0) ** 0.5
        return x - out * s

    def _after_model(self, out: torch.Tensor) -> torch.Tensor:
        for hook in self.after_model_hooks:
            r = hook(out, self.step)
            if r is not None:
                out = r
        return out

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sc = self.conds.at(self.step)
        if self.record is not None:
            self.record.append((self.step, sc))
        call = DenoiserCall(x, sigma, self.step, self.total_steps, sc.cond, sc.uncond, sc.parts)
        for hook in self.before_hooks:
            hook(call)
        x, sigma, cond, uncond, parts = call.x, call.sigma, call.cond, call.uncond, call.parts
        b = x.shape[0]
        if sigma.ndim == 0:
            sigma = sigma.repeat(b)
        # Each image's x once per AND part (A1111's repeats), then the images once for the negative.
        rows = [i for i, item in enumerate(parts) for _ in item]
        index = torch.tensor(rows, device=x.device)
        xc, sc_sigma = x[index], sigma[index]
        ic = self.image_conditioning
        icc = None if ic is None else ic[index.to(ic.device)]
        simple = all(len(p) == 1 and p[0][1] == 1.0 for p in parts)
        skip_uncond = (self.s_min_uncond > 0 and self.step % 2 == 1 and float(sigma[0]) < self.s_min_uncond)
        if simple and self.cfg_scale == 1.0:
            denoised = self._model(xc, sc_sigma, cond.cross_attn, cond.pooled, icc)
            denoised = self._after_model(denoised)
        elif skip_uncond:
            # A1111: the cond prediction stands in for the skipped uncond one, so CFG returns it
            d_cond = self._after_model(self._model(xc, sc_sigma, cond.cross_attn, cond.pooled, icc))
            d_uncond = torch.stack([d_cond[item[0][0]] for item in parts])
            denoised = d_uncond.clone()
            for i, item in enumerate(parts):
                for row, weight in item:
                    denoised[i] += (d_cond[row] - d_uncond[i]) * (weight * self.cfg_scale)
        else:
            if cond.cross_attn.shape[1] != uncond.cross_attn.shape[1]:
                # Different chunk counts: two UNet calls, as A1111 does unless pad_cond_uncond is set.
                d_cond = self._model(xc, sc_sigma, cond.cross_attn, cond.pooled, icc)
                d_uncond = self._model(x, sigma, uncond.cross_attn, uncond.pooled, ic,
                                       torch.ones(b, dtype=torch.bool))
            else:
                n = xc.shape[0]
                cross = torch.cat([cond.cross_attn, uncond.cross_attn])
                pooled = None if cond.pooled is None else torch.cat([cond.pooled, uncond.pooled])
                both_ic = None if ic is None else torch.cat([icc, ic])
                rows_mask = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
                both = self._model(torch.cat([xc, x]), torch.cat([sc_sigma, sigma]), cross, pooled, both_ic, rows_mask)
                d_cond, d_uncond = both[:n], both[n:]
            if self.after_model_hooks:
                both = self._after_model(torch.cat([d_cond, d_uncond]))
                d_cond, d_uncond = both[:d_cond.shape[0]], both[d_cond.shape[0]:]
            # A1111's combine_denoised: uncond + sum over parts of weight * scale * (cond_part - uncond)
            denoised = d_uncond.clone()
            for i, item in enumerate(parts):
                for row, weight in item:
                    denoised[i] += (d_cond[row] - d_uncond[i]) * (weight * self.cfg_scale)
        for after in self.after_cfg_hooks:
            denoised = after(denoised, self.step)
        self.step += 1
        return denoised
