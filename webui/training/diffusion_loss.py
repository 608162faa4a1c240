"""The denoising loss and the small optimisation helpers every trainer shares (the built-in model's
recipe in ``tools/train_default_model.py``, and the Train tab's embedding, hypernetwork and LoRA
trainers).

``diffusion_loss`` noises clean latents at random timesteps of the model's ``alphas_cumprod`` and
scores the network's prediction against the target of its prediction type (epsilon or v), with
optional offset noise, min-SNR-gamma weighting and per-element loss weights (A1111's "PNG alpha as
loss weight").
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import torch

PREDICTION_TYPES = {"epsilon": "epsilon", "v": "v", "v_prediction": "v"}


def prediction_kind(prediction: str) -> str:
    """``"epsilon"`` or ``"v"`` for a prediction type as models and our tools name it."""
    try:
        return PREDICTION_TYPES[prediction]
    except KeyError:
        raise ValueError(f"unknown prediction type '{prediction}' (epsilon, v or v_prediction)") from None


def diffusion_target(latents: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor,
                     prediction: str) -> torch.Tensor:
    """What the network should output for ``sqrt(a) * latents + sqrt(1 - a) * noise``: the noise
    (epsilon) or the velocity ``sqrt(a) * noise - sqrt(1 - a) * latents`` (v)."""
    if prediction_kind(prediction) == "epsilon":
        return noise
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents


def diffusion_loss(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], latents: torch.Tensor,
                   alphas: torch.Tensor, gen: torch.Generator, offset_noise: float = 0.0, min_snr: float = 0.0,
                   x0_floor: float = 0.0, prediction: str = "epsilon", high_t: float = 0.0, *,
                   weight: torch.Tensor | None = None, x0_weighting: bool = False) -> torch.Tensor:
    """Mean denoising loss of one batch.

    ``predict(noisy, t)``: the network's output (epsilon or v, as ``prediction`` says) for a batch of
    noised latents at integer timesteps ``t``; ``alphas``: the model's ``alphas_cumprod`` (its length
    is the number of training timesteps); ``gen``: draws the timesteps and the noise (on the
    latents' device), so a seeded generator makes the loss reproducible.
    ``offset_noise``: std of a per-channel constant added to the noise (lets the model change an
    image's mean brightness/colour); ``min_snr``: min-SNR-gamma weighting (0: off);
    ``high_t``: share of the batch drawn from the noisiest fifth of the steps (where layout is
    decided); ``weight``: per-element loss weights broadcastable to the latents.
    Weighting: with ``min_snr``, ``x0_floor`` and ``x0_weighting`` all off the loss is the plain
    mean squared error against the target (A1111, kohya).  Otherwise a weight is set in x0 terms --
    the SNR, capped at ``min_snr``, floored at ``x0_floor`` -- and converted to the target's scale
    (eps-error = x0-error * snr, v-error = x0-error * (snr + 1)); with ``min_snr`` alone this is
    min-SNR-gamma as kohya and diffusers apply it to both prediction types.
    """
    kind = prediction_kind(prediction)
    b = latents.shape[0]
    dev = latents.device
    steps = alphas.shape[0]
    t = torch.randint(0, steps, (b,), device=dev, generator=gen)
    n_high = int(round(b * high_t))
    if n_high:
        t[:n_high] = torch.randint(steps - steps // 5, steps, (n_high,), device=dev, generator=gen)
    noise = torch.randn(latents.shape, device=dev, generator=gen)
    if offset_noise:
        noise = noise + offset_noise * torch.randn((b, latents.shape[1], 1, 1), device=dev, generator=gen)
    a = alphas[t].view(b, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    pred = predict(noisy, t)
    target = diffusion_target(latents, noise, a, kind)
    err = (pred.float() - target) ** 2
    if weight is not None:
        err = err * weight
    per = err.mean(dim=tuple(range(1, err.dim())))
    if not (min_snr or x0_floor or x0_weighting):
        return per.mean()
    snr = alphas[t] / (1 - alphas[t])
    # In x0 terms the epsilon loss weighs each step by snr (min-SNR caps it at min_snr), so the
    # noisiest steps, where only the prompt can say *where* the shape goes, hardly count; a floor
    # on that weight makes the layout at those steps matter.
    x0_weight = torch.clamp(snr, max=min_snr) if min_snr else snr
    if x0_floor:
        x0_weight = torch.clamp(x0_weight, min=x0_floor)
    # x0-error = eps-error / snr = v-error / (snr + 1): convert the x0 weight to this target's
    return (per * x0_weight / (snr if kind == "epsilon" else snr + 1)).mean()


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Iterable[torch.nn.Parameter],
                   max_grad_norm: float | None = 1.0) -> None:
    """Zero the gradients, backpropagate ``loss``, clip the gradient norm (None: no clipping), step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()


class EMA:
    """Exponential moving average of modules' parameters, kept in eval-mode copies (``shadow``);
    the decay ramps up as ``(1 + step) / (10 + step)`` so early averages are not dominated by the
    random initialisation."""

    def __init__(self, modules: list[torch.nn.Module], decay: float) -> None:
        self.decay = decay
        self.shadow = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
        self.modules = modules

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for s, m in zip(self.shadow, self.modules):
            for ps, pm in zip(s.parameters(), m.parameters()):
                ps.lerp_(pm.detach(), 1.0 - d)
