"""A1111's "timesteps" samplers (DDIM, PLMS, UniPC) carried out in k-diffusion's sigma space.

A VP latent x_vp at noise level t is x_vp = sqrt(a_t) * x_k with sigma = sqrt((1 - a_t) / a_t), and the
data-prediction forms of DDIM (Song et al. 2020), PLMS (Liu et al. 2022, pseudo linear multistep on eps)
and UniPC (Zhao et al. 2023, B(h) predictor-corrector) are invariant under that rescaling, so they run
here on the same denoiser as every other sampler.

A1111 stops these samplers at its last timestep (t=1 for DDIM/PLMS, t=0 i.e. sigma_min for UniPC)
without a final denoise, and returns that VP latent. Their sigma lists therefore end "..., last, 0": the
final transition calls no model and only rescales x to VP space, so the output equals A1111's.
"""
from __future__ import annotations

import numpy as np
import torch

from webui.engine.model_schedule import ModelSchedule
from webui.engine.sampler_algorithms import Ctx


def ddim_timesteps(steps: int, n_train: int = 1000) -> torch.Tensor:
    """A1111 v1.10 get_timesteps: arange(0, T, T // steps) + 1, clipped (may be longer than `steps`)."""
    return torch.clip(torch.arange(0, n_train, max(n_train // steps, 1)) + 1, 0, n_train - 1)


def ddim_sigmas(steps: int, ms: ModelSchedule) -> torch.Tensor:
    ts = ddim_timesteps(steps, len(ms.sigmas))
    return torch.cat([ms.sigmas[ts].flip(0), torch.zeros(1)])


def unipc_sigmas(steps: int, ms: ModelSchedule, skip_type: str = "time_uniform") -> torch.Tensor:
    """Noise levels of A1111's UniPC: DPM-Solver's continuous time t in [1/T, 1], log(alpha_t)
    interpolated piecewise-linearly between the discrete steps; steps + 1 levels, then 0."""
    n = len(ms.alphas_cumprod)
    t_grid = torch.linspace(0.0, 1.0, n + 1)[1:].double().numpy()
    log_alpha = (0.5 * torch.log(ms.alphas_cumprod)).double().numpy()
    t_T, t_0 = 1.0, 1.0 / n
    if skip_type == "logSNR":
        lam = [float(-np.log(np.sqrt(np.expm1(-2 * np.interp(t, t_grid, log_alpha))))) for t in (t_T, t_0)]
        sig = np.exp(-np.linspace(lam[0], lam[1], steps + 1))
    else:
        if skip_type == "time_uniform":
            ts = np.linspace(t_T, t_0, steps + 1)
        elif skip_type == "time_quadratic":
            ts = np.linspace(t_T ** 0.5, t_0 ** 0.5, steps + 1) ** 2
        else:
            raise ValueError(f"unknown UniPC skip type {skip_type!r}")
        sig = np.sqrt(np.expm1(-2 * np.interp(ts, t_grid, log_alpha)))
    return torch.tensor(np.append(sig, 0.0), dtype=torch.float32)


def _finish(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The no-model last transition: return the VP latent at the last level, as A1111 does."""
    last = sigmas[-2]
    x = x / (1 + last ** 2) ** 0.5
    ctx.callback(len(sigmas) - 2, x, denoised, last)
    return x


def sample_ddim(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    denoised = x
    for i in range(len(sigmas) - 2):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = ctx.denoise(x, s)
        eps = (x - denoised) / s
        a_t, a_prev = 1 / (1 + s ** 2), 1 / (1 + s_next ** 2)
        # DDIM's eta-scaled posterior std, in VP units; eta=0 makes this an exact Euler step in sigma
        sig = ctx.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        x = denoised + ((1 - a_prev - sig ** 2).clamp(min=0) / a_prev) ** 0.5 * eps
        if ctx.eta:
            x = x + sig / a_prev ** 0.5 * ctx.randn()
        ctx.callback(i, x, denoised, s)
    return _finish(ctx, x, sigmas, denoised)


def sample_plms(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    old_eps: list[torch.Tensor] = []
    pred_x0 = x
    for i in range(len(sigmas) - 2):
        s, s_next = sigmas[i], sigmas[i + 1]
        e_t = (x - ctx.denoise(x, s)) / s
        if not old_eps:  # start-up: pseudo improved Euler (second model call at the next level)
            x_next = x + (s_next - s) * e_t
            e_prime = (e_t + (x_next - ctx.denoise(x_next, s_next)) / s_next) / 2
        elif len(old_eps) == 1:  # Adams-Bashforth 2, 3, 4 on eps
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        pred_x0 = x - s * e_prime
        x = pred_x0 + s_next * e_prime
        old_eps = (old_eps + [e_t])[-3:]
        ctx.callback(i, x, pred_x0, s)
    return _finish(ctx, x, sigmas, pred_x0)


def _unipc_update(ctx: Ctx, x, models, levels, sigma_t, order: int, corrector: bool, variant: str):
    """One UniPC step in data-prediction form from levels[-1] to sigma_t, using the last `order` x0s."""
    lam = lambda s: -float(np.log(float(s)))  # noqa: E731  (lambda = log SNR / 2 in sigma space)
    s0, m0 = levels[-1], models[-1]
    h = lam(sigma_t) - lam(s0)
    rks, d1s = [], []
    for i in range(1, order):
        rk = (lam(levels[-(i + 1)]) - lam(s0)) / h
        rks.append(rk)
        d1s.append((models[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    hh = -h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else np.expm1(hh)
    R, b, fact = [], [], 1
    for i in range(1, order + 1):
        R.append(np.power(rks, i - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    R, b = np.array(R), np.array(b)
    h_phi_1, b_h = float(h_phi_1), float(b_h)  # python floats: numpy scalars would turn tensors into arrays
    x_t_ = (sigma_t / s0) * x - h_phi_1 * m0
    x_t = x_t_
    if d1s:
        rhos_p = [0.5] if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        x_t = x_t_ - b_h * sum(float(r) * d for r, d in zip(rhos_p, d1s))
    if not corrector:
        return x_t, None
    rhos_c = [0.5] if order == 1 else np.linalg.solve(R, b)
    model_t = ctx.denoise(x_t, sigma_t)
    corr = sum(float(r) * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else 0
    return x_t_ - b_h * (corr + float(rhos_c[-1]) * (model_t - m0)), model_t


def sample_unipc(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, variant: str = "bh1", order: int = 3,
                 lower_order_final: bool = True) -> torch.Tensor:
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unsupported UniPC variant {variant!r} (bh1 or bh2)")
    levels = sigmas[:-1]
    n = len(levels) - 1
    if n < 1:
        return _finish(ctx, x, sigmas, x)
    order = max(1, min(order, n))  # A1111 asserts order <= steps; we lower the order instead
    models, used = [ctx.denoise(x, levels[0])], [levels[0]]
    for step in range(1, n + 1):
        if step < order:  # warm-up with increasing order
            step_order, corrector = step, True
        else:
            step_order = min(order, n + 1 - step) if lower_order_final else order
            corrector = step != n  # the last step's model value would never be used
        x, model_x = _unipc_update(ctx, x, models, used, levels[step], step_order, corrector, variant)
        ctx.callback(step - 1, x, models[-1] if model_x is None else model_x, levels[step - 1])
        if model_x is not None:
            models, used = (models + [model_x])[-order:], (used + [levels[step]])[-order:]
    return _finish(ctx, x, sigmas, models[-1])
