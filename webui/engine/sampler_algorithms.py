"""Sigma-space ("k-diffusion style") samplers, written from the published algorithms.

Every sampler walks a descending sigma list with a denoiser D(x, sigma) -> x0 estimate, where
x = x0 + sigma * eps. Euler/Heun/churn: Karras et al. 2022 (Alg. 2); DPM2: its DPM-Solver-2 variant;
ancestral steps split sigma_next into a deterministic sigma_down and fresh noise sigma_up;
DPM-Solver++ 2S/2M/SDE: Lu et al. 2022; 3M SDE: third-order multistep in lambda = -log(sigma);
LMS: linear multistep on dx/dsigma; LCM: Luo et al. 2023 (denoise, then re-noise to the next sigma).
The order of random draws follows A1111 so that seeds reproduce its images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Ctx:
    """What one sampling run needs besides x and the sigmas."""
    model: Denoiser
    callback: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]  # (i, x after step, denoised, sigma)
    randn: Callable[[], torch.Tensor]  # next per-image normal draw shaped like x (A1111 rng.next())
    noise_sampler: NoiseFn  # noise for (sigma, sigma_next): randn for ancestral, Brownian for SDE samplers
    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    total: int = 0  # steps reported to the callback; samplers with their own step plan overwrite it

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.model(x, sigma * x.new_ones([x.shape[0]]))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """dx/dsigma of the probability-flow ODE."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0):
    """(sigma_down, sigma_up): sigma_down**2 + sigma_up**2 = sigma_to**2; eta=1 is the DDPM posterior."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    return (sigma_to ** 2 - sigma_up ** 2) ** 0.5, sigma_up


def _t(sigma: torch.Tensor) -> torch.Tensor:  # lambda = -log sigma
    return sigma.log().neg()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _churn(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, i: int):
    """Karras "churn": raise sigma to sigma_hat by adding noise. A1111 draws the noise every step
    (so the stream position is fixed); when churn is off it is never used, so we skip the draw."""
    sigma = sigmas[i]
    gamma = min(ctx.s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if ctx.s_tmin <= sigma <= ctx.s_tmax else 0.0
    eps = ctx.randn() * ctx.s_noise if ctx.s_churn > 0 else None
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


def sample_euler(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(ctx, x, sigmas, i)
        denoised = ctx.denoise(x, sigma_hat)
        x = x + to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_heun(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(ctx, x, sigmas, i)
        denoised = ctx.denoise(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:  # last step: Euler (the trapezoid would need D at sigma 0)
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], ctx.denoise(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpm_2(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(ctx, x, sigmas, i)
        denoised = ctx.denoise(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:  # midpoint in log-sigma
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, ctx.denoise(x_2, sigma_mid))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_euler_ancestral(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + ctx.noise_sampler(sigmas[i], sigmas[i + 1]) * ctx.s_noise * sigma_up
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpm_2_ancestral(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, ctx.denoise(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + ctx.noise_sampler(sigmas[i], sigmas[i + 1]) * ctx.s_noise * sigma_up
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def _lms_coeff(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial j on t_i, t_{i-1}, ... (exact)."""
    poly = np.array([1.0])
    for k in range(order):
        if k != j:
            poly = np.polynomial.polynomial.polymul(poly, [-t[i - k], 1.0]) / (t[i - j] - t[i - k])
    integ = np.polynomial.polynomial.polyint(poly)
    return float(np.polynomial.polynomial.polyval(t[i + 1], integ) - np.polynomial.polynomial.polyval(t[i], integ))


def sample_lms(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, order: int = 4) -> torch.Tensor:
    t = sigmas.detach().cpu().double().numpy()
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        cur = min(i + 1, order)
        coeffs = [_lms_coeff(cur, t, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpmpp_2s_ancestral(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:  # DPM-Solver++(2S) to sigma_down, midpoint in lambda
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma(s) / _sigma(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = ctx.denoise(x_2, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + ctx.noise_sampler(sigmas[i], sigmas[i + 1]) * ctx.s_noise * sigma_up
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpmpp_sde(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, r: float = 0.5) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            fac = 1 / (2 * r)
            # stage 1: stochastic step to the intermediate point s
            sd, su = ancestral_step(_sigma(t), _sigma(s), ctx.eta)
            s_ = _t(sd)
            x_2 = (_sigma(s_) / _sigma(t)) * x - (t - s_).expm1() * denoised
            if ctx.eta:  # with eta 0 su is 0; skipping the (Brownian, order-free) query changes nothing
                x_2 = x_2 + ctx.noise_sampler(_sigma(t), _sigma(s)) * ctx.s_noise * su
            denoised_2 = ctx.denoise(x_2, _sigma(s))
            # stage 2: full step with the blended x0 estimate
            sd, su = ancestral_step(_sigma(t), _sigma(t_next), ctx.eta)
            t_next_ = _t(sd)
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (_sigma(t_next_) / _sigma(t)) * x - (t - t_next_).expm1() * denoised_d
            if ctx.eta:
                x = x + ctx.noise_sampler(_sigma(t), _sigma(t_next)) * ctx.s_noise * su
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpmpp_2m(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            denoised_d = denoised
            if old_denoised is not None:  # second order: extrapolate D linearly in lambda
                r = (t - _t(sigmas[i - 1])) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma(t_next) / _sigma(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpmpp_2m_sde(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, solver_type: str = "midpoint") -> torch.Tensor:
    old_denoised, h_last, eta = None, None, ctx.eta
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None and h_last is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + ((-h - eta_h).expm1().neg() / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + ctx.noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * ctx.s_noise
        old_denoised, h_last = denoised, h
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_dpmpp_3m_sde(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    denoised_1 = denoised_2 = h_1 = h_2 = None
    eta = ctx.eta
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None:  # third order from the last three x0 estimates
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta:
                x = x + ctx.noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * ctx.s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_lcm(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = ctx.denoise(x, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * ctx.noise_sampler(sigmas[i], sigmas[i + 1])
        ctx.callback(i, x, denoised, sigmas[i])
    return x


def sample_restart(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Restart sampling (Xu et al. 2023) with A1111's automatic restart plan: Heun steps, and for
    >= 20 steps a Karras schedule shortened by the restart steps plus jumps back up to sigma 2."""
    from webui.engine.model_schedule import karras

    steps = len(sigmas) - 1
    restart: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        r_steps, r_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras(steps - r_steps * r_times, float(sigmas[-2]), float(sigmas[0])).to(sigmas.device)
        restart = {0.1: (r_steps + 1, r_times, 2.0)}
    by_index = {int(torch.argmin((sigmas - k).abs())): v for k, v in restart.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in by_index:
            r_steps, r_times, r_max = by_index[i + 1]
            max_idx = int(torch.argmin((sigmas - r_max).abs()))
            if max_idx < i + 1:
                up = karras(r_steps, float(sigmas[i + 1]), float(sigmas[max_idx]))[:-1].to(sigmas.device)
                pairs.extend(list(zip(up[:-1], up[1:])) * r_times)
    last = None
    for step, (old, new) in enumerate(pairs):
        if last is not None and last < old:  # restart: re-noise from `last` up to `old`
            x = x + ctx.randn() * (old ** 2 - last ** 2) ** 0.5
        denoised = ctx.denoise(x, old)
        d = to_d(x, old, denoised)
        if new == 0:
            x = x + d * (new - old)
        else:
            x_2 = x + d * (new - old)
            x = x + (d + to_d(x_2, new, ctx.denoise(x_2, new))) / 2 * (new - old)
        last = new
        ctx.callback(step, x, denoised, old)
    return x


# --- DPM-Solver (Lu et al. 2022) in noise-prediction form, time t = -log(sigma) ----------------------

class _DPMSolver:
    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    def eps(self, cache: dict, key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if key not in cache:  # stages shared between the low- and high-order estimates run once
            cache[key] = (x - self.ctx.denoise(x, _sigma(t))) / _sigma(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        return x - _sigma(t_next) * (t_next - t).expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1: float = 1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        eps_r1 = self.eps(cache, "eps_r1", x - _sigma(s1) * (r1 * h).expm1() * eps, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1: float = 1 / 3, r2: float = 2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        eps_r1 = self.eps(cache, "eps_r1", x - _sigma(s1) * (r1 * h).expm1() * eps, s1)
        u2 = (x - _sigma(s2) * (r2 * h).expm1() * eps
              - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral(self, t, t_next, t_end):
        """With eta, step deterministically to sigma_down and add noise sigma_up back."""
        if not self.ctx.eta:
            return t_next, 0.0
        sd, _ = ancestral_step(_sigma(t), _sigma(t_next), self.ctx.eta)
        t_next_ = torch.minimum(t_end, _t(sd))
        return t_next_, (_sigma(t_next) ** 2 - _sigma(t_next_) ** 2) ** 0.5


def _ends(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM fast/adaptive ignore the schedule's shape: they run from sigmas[0] to the last nonzero sigma."""
    return _t(sigmas[0]), _t(sigmas[sigmas > 0].min())


def sample_dpm_fast(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    nfe = len(sigmas) - 1
    solver, (t_start, t_end) = _DPMSolver(ctx), _ends(sigmas)
    m = nfe // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    ctx.total = len(orders)
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = solver.ancestral(t, t_next, t_end)
        denoised = x - _sigma(t) * solver.eps(cache, "eps", x, t)
        x = (solver.step_1, solver.step_2, solver.step_3)[order - 1](x, t, t_next_, cache)
        if ctx.eta:
            x = x + su * ctx.s_noise * ctx.noise_sampler(_sigma(t), _sigma(t_next))
        ctx.callback(i, x, denoised, _sigma(t))
    return x


def sample_dpm_adaptive(ctx: Ctx, x: torch.Tensor, sigmas: torch.Tensor, order: int = 3, rtol: float = 0.05,
                        atol: float = 0.0078, h_init: float = 0.05, accept_safety: float = 0.81) -> torch.Tensor:
    """Embedded DPM-Solver-2/3 pair with an integral step-size controller (pcoeff=0, icoeff=1, dcoeff=0)."""
    solver, (s, t_end) = _DPMSolver(ctx), _ends(sigmas)
    h, x_prev, step = h_init, x, 0
    ctl_order = 1.5 if ctx.eta else order
    while s < t_end - 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + h)
        t_, su = solver.ancestral(s, t, t_end)
        denoised = x - _sigma(s) * solver.eps(cache, "eps", x, s)
        if order == 2:
            x_low, x_high = solver.step_1(x, s, t_, cache), solver.step_2(x, s, t_, cache)
        else:
            x_low, x_high = solver.step_2(x, s, t_, cache, r1=1 / 3), solver.step_3(x, s, t_, cache)
        delta = torch.maximum(torch.tensor(atol), rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        # pure I-controller: only the current error's exponent is nonzero; atan soft-limits the change
        factor = 1 + math.atan((1 / (float(error) + 1e-8)) ** (1 / ctl_order) - 1)
        if factor >= accept_safety:
            x_prev = x_low
            x = x_high + (su * ctx.s_noise * ctx.noise_sampler(_sigma(s), _sigma(t)) if ctx.eta else 0)
            s = t
        h *= factor
        ctx.callback(step, x, denoised, _sigma(s))
        step += 1
    return x
