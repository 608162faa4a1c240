"""A model's discrete noise schedule in k-diffusion's sigma space, plus the sigma schedule formulas.

x = x0 + sigma * eps with sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod). The tables are float32,
like the model buffer A1111 reads them from, so schedules built here round the way A1111's do.
"""
from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch

__all__ = ["ModelSchedule", "LCMSchedule", "sd_alphas_cumprod", "append_zero", "karras", "exponential",
           "polyexponential", "sgm_uniform", "kl_optimal", "align_your_steps", "simple", "normal",
           "ddim_uniform", "beta"]


def sd_alphas_cumprod(n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The "scaled linear" DDPM schedule shared by SD1.x, SD2.x and SDXL (float64)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


class ModelSchedule:
    """Discrete DDPM schedule of a model (k-diffusion's DiscreteSchedule semantics)."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon") -> None:
        ac = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float32)
        self.alphas_cumprod = ac
        self.prediction_type = prediction_type
        self.sigmas = ((1 - ac) / ac) ** 0.5  # ascending in t
        self.log_sigmas = self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool = False) -> torch.Tensor:
        """Fractional timestep: linear interpolation of log-sigma between table entries (clamped)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_sigma = sigma.log()
        dists = log_sigma.reshape(1, -1) - log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        # Index of the last table entry <= sigma; cumsum+argmax picks it even for out-of-range sigmas.
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = log_sigmas[low_idx], log_sigmas[high_idx]
        w = ((low - log_sigma.reshape(-1)) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t).float()
        log_sigmas = self.log_sigmas.to(t.device)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * log_sigmas[low_idx] + w * log_sigmas[high_idx]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """A1111 "Uniform" (and Automatic without a sampler default): t = linspace(T-1, 0, n)."""
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return append_zero(self.t_to_sigma(t))

    @cached_property
    def lcm(self) -> "LCMSchedule":
        return LCMSchedule(self)


class LCMSchedule(ModelSchedule):
    """A1111's LCM view of a model: only the 50 "original" LCM timesteps (19, 39, ..., 999) exist.

    sigma_to_t snaps to that grid (LCM models are distilled on it); the denoiser should feed the UNet
    `sigma_to_t(sigma)` and apply `boundary_scalings` to its x0 prediction as A1111's LCM denoiser does.
    """

    def __init__(self, base: ModelSchedule, original_steps: int = 50) -> None:
        n = len(base.alphas_cumprod)
        self.skip_steps = n // original_steps
        idx = torch.tensor([n - 1 - x * self.skip_steps for x in range(original_steps)][::-1])
        super().__init__(base.alphas_cumprod[idx], base.prediction_type)

    def sigma_to_t(self, sigma: torch.Tensor | float, quantize: bool = True) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        dists = sigma.log().reshape(1, -1) - self.log_sigmas.to(sigma.device)[:, None]
        idx = dists.abs().argmin(dim=0).view(sigma.shape)
        return idx * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t)
        t = torch.clamp(((t - (self.skip_steps - 1)) / self.skip_steps).float(), min=0, max=len(self.sigmas) - 1)
        return super().t_to_sigma(t)

    def get_sigmas(self, n: int) -> torch.Tensor:
        start = self.sigma_to_t(self.sigmas[-1])
        end = self.sigma_to_t(self.sigmas[0])
        return append_zero(self.t_to_sigma(torch.linspace(float(start), float(end), n)))

    def boundary_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LCM consistency-model (c_skip, c_out) for denoised = c_out * x0_pred + c_skip * x."""
        sigma_data = 0.5
        scaled_t = self.sigma_to_t(sigma).float() * 10.0
        c_skip = sigma_data ** 2 / (scaled_t ** 2 + sigma_data ** 2)
        c_out = scaled_t / (scaled_t ** 2 + sigma_data ** 2) ** 0.5
        return c_skip, c_out


# --- sigma schedules: each returns float32 sigmas, descending, normally ending with 0 ---------------

def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5: interpolate sigma**(1/rho) linearly between the ends."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    ramp = torch.linspace(1, 0, n) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, inner: ModelSchedule) -> torch.Tensor:
    """Uniform in t from t(sigma_max) to t(sigma_min) over n+1 points, last one dropped (SGM/SDXL style)."""
    start = inner.sigma_to_t(torch.tensor(sigma_max))
    end = inner.sigma_to_t(torch.tensor(sigma_min))
    ts = torch.linspace(float(start), float(end), n + 1)[:-1]
    return append_zero(inner.t_to_sigma(ts).float())


def normal(n: int, sigma_min: float, sigma_max: float, inner: ModelSchedule) -> torch.Tensor:
    start = inner.sigma_to_t(torch.tensor(sigma_max))
    end = inner.sigma_to_t(torch.tensor(sigma_min))
    return append_zero(inner.t_to_sigma(torch.linspace(float(start), float(end), n)).float())


def kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """A1111's KL Optimal: tan of a linear ramp in arctan(sigma). Like A1111 it ends at sigma_min, not 0."""
    alpha_min = torch.arctan(torch.tensor(sigma_min))
    alpha_max = torch.arctan(torch.tensor(sigma_max))
    step = torch.arange(n + 1) / n
    return torch.tan(step * alpha_min + (1.0 - step) * alpha_max)


_AYS = {  # NVIDIA "Align Your Steps" 10-step tables, as shipped in A1111 v1.10
    "sd15": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def align_your_steps(n: int, is_sdxl: bool = False) -> torch.Tensor:
    table = _AYS["sdxl" if is_sdxl else "sd15"]
    if n == len(table):  # A1111 quirk: n == 11 uses the table as-is (11 sigmas + 0)
        return torch.tensor(table + [0.0], dtype=torch.float32)
    # log-linear resampling of the table to n points
    xs = np.linspace(0, 1, len(table))
    ys = np.log(table[::-1])
    new = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1]
    return torch.tensor(np.append(new, [0.0]), dtype=torch.float32)


def simple(n: int, inner: ModelSchedule) -> torch.Tensor:
    ss = len(inner.sigmas) / n
    sigs = [float(inner.sigmas[-(1 + int(x * ss))]) for x in range(n)]
    return torch.tensor(sigs + [0.0], dtype=torch.float32)


def ddim_uniform(n: int, inner: ModelSchedule) -> torch.Tensor:
    """A1111's "DDIM" schedule type: every (T // n)-th table sigma from index 1; may yield != n steps."""
    ss = max(len(inner.sigmas) // n, 1)
    sigs = [float(inner.sigmas[x]) for x in range(1, len(inner.sigmas), ss)][::-1]
    return torch.tensor(sigs + [0.0], dtype=torch.float32)


def beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Lee et al. 2024 "Beta Sampling is All You Need": beta-distribution quantiles mapped onto [min, max]."""
    from scipy import stats  # scipy ships with torchsde; imported lazily as only this schedule needs it

    ts = [stats.beta.ppf(x, alpha, beta_) for x in 1 - np.linspace(0, 1, n)]
    return torch.tensor([sigma_min + x * (sigma_max - sigma_min) for x in ts] + [0.0], dtype=torch.float32)
