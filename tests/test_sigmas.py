"""Sigma tables for SD's schedule, checked against the published formulas written out here in float64
(independently of webui.engine.model_schedule) and against values A1111 prints for SD1.5."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from webui.engine.model_schedule import ModelSchedule
from webui.engine.samplers import (SAMPLERS, SCHEDULE_TYPES, effective_schedule, find_sampler, find_schedule,
                                   get_sigmas)

STEPS = [1, 2, 10, 20, 30]


def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


MS = ModelSchedule(sd_alphas_cumprod())
# Reference table: the model's float32 sigmas, then everything else in float64 numpy.
TABLE = (((1 - sd_alphas_cumprod().float()) / sd_alphas_cumprod().float()) ** 0.5).double().numpy()
SMIN, SMAX = TABLE[0], TABLE[-1]
LOG = np.log(TABLE)


def sigma_at(t) -> np.ndarray:
    """Sigma at fractional timestep t: log-sigma interpolated linearly between integer timesteps."""
    return np.exp(np.interp(np.asarray(t, dtype=np.float64), np.arange(len(TABLE)), LOG))


def t_at(sigma: float) -> float:
    return float(np.interp(np.log(sigma), LOG, np.arange(len(TABLE))))


def z(a) -> np.ndarray:
    return np.append(np.asarray(a, dtype=np.float64), 0.0)


def ref_karras(n, smin=SMIN, smax=SMAX, rho=7.0):  # Karras et al. 2022, eq. 5
    i = np.arange(n)
    ramp = i / (n - 1) if n > 1 else np.zeros(1)
    return z((smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho)


def ref_exponential(n, smin=SMIN, smax=SMAX):
    return z(np.exp(np.linspace(math.log(smax), math.log(smin), n)))


def ref_uniform(n):
    return z(sigma_at(np.linspace(999, 0, n)))


def ref_sgm_uniform(n):
    return z(sigma_at(np.linspace(t_at(SMAX), t_at(SMIN), n + 1)[:-1]))


REFERENCES = {
    "automatic": ref_uniform,  # Euler has no default schedule: A1111 falls back to the model's own spacing
    "uniform": ref_uniform,
    "karras": ref_karras,
    "exponential": ref_exponential,
    "polyexponential": ref_exponential,  # rho = 1 makes it exponential
    "sgm_uniform": ref_sgm_uniform,
    "normal": ref_uniform,
    "kl_optimal": lambda n: np.tan(np.arange(n + 1) / n * np.arctan(SMIN) + (1 - np.arange(n + 1) / n) * np.arctan(SMAX)),
    "simple": lambda n: z([TABLE[-(1 + int(x * 1000 / n))] for x in range(n)]),
    "ddim": lambda n: z(TABLE[1::max(1000 // n, 1)][::-1]),
}


def test_model_table_ends():
    assert MS.sigmas.dtype == torch.float32 and MS.sigmas.shape == (1000,)
    assert MS.sigma_max == pytest.approx(14.6146, abs=1e-4)
    assert MS.sigma_min == pytest.approx(0.0292, abs=1e-4)
    assert bool((MS.sigmas[1:] > MS.sigmas[:-1]).all())


def test_sigma_t_round_trip():
    t = torch.tensor([0.0, 0.5, 17.25, 500.0, 998.9, 999.0])
    assert torch.allclose(MS.sigma_to_t(MS.t_to_sigma(t)), t, atol=2e-3)
    assert torch.allclose(MS.t_to_sigma(t).double(), torch.from_numpy(sigma_at(t.numpy())), rtol=1e-5)
    # Clamped outside the table, like k-diffusion.
    assert MS.sigma_to_t(torch.tensor(100.0)).item() == pytest.approx(999.0)
    assert MS.sigma_to_t(torch.tensor(0.001)).item() == pytest.approx(0.0)
    assert MS.sigma_to_t(torch.tensor([1.0, 2.0]), quantize=True).dtype == torch.int64


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_schedule_matches_formula(name, steps):
    sigmas = get_sigmas(find_sampler("Euler"), find_schedule(name), steps, MS)
    ref = REFERENCES[name](steps)
    assert sigmas.dtype == torch.float32
    assert sigmas.shape == (len(ref),)
    np.testing.assert_allclose(sigmas.double().numpy(), ref, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("steps", STEPS)
def test_beta_schedule(steps):
    from scipy import stats

    q = stats.beta.ppf(1 - np.linspace(0, 1, steps), 0.6, 0.6)  # quantiles of Beta(0.6, 0.6), reversed
    sigmas = get_sigmas(find_sampler("Euler"), find_schedule("Beta"), steps, MS)
    np.testing.assert_allclose(sigmas.double().numpy(), z(SMIN + q * (SMAX - SMIN)), rtol=2e-5)


def test_align_your_steps():
    sd15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
    np.testing.assert_allclose(get_sigmas(find_sampler("Euler"), find_schedule("align_your_steps"), 11, MS).numpy(),
                               z(sd15), rtol=1e-6)
    s10 = get_sigmas(find_sampler("Euler"), find_schedule("Align Your Steps"), 10, MS).double().numpy()
    assert len(s10) == 11 and s10[-1] == 0
    assert s10[0] == pytest.approx(14.615, rel=1e-6) and s10[-2] == pytest.approx(0.029, rel=1e-6)
    assert np.all(np.diff(np.log(s10[:-1])) < 0)
    sdxl = get_sigmas(find_sampler("Euler"), find_schedule("align_your_steps"), 11, MS, is_sdxl=True)
    assert sdxl[1].item() == pytest.approx(6.315, rel=1e-6)


@pytest.mark.parametrize("steps", STEPS)
def test_every_schedule_every_steps_is_sane(steps):
    for st in SCHEDULE_TYPES:
        s = get_sigmas(find_sampler("Euler"), st, steps, MS)
        assert s.dtype == torch.float32 and s.device.type == "cpu"
        assert bool(torch.isfinite(s).all()) and bool((s[:-1] > s[1:]).all()), st.name
        if st.name not in ("kl_optimal", "ddim"):
            assert len(s) == steps + 1 and s[-1] == 0, st.name


def test_known_a1111_values_sd15():
    karras = get_sigmas(find_sampler("DPM++ 2M"), find_schedule("Automatic"), 20, MS)
    assert karras[:3].tolist() == pytest.approx([14.6146, 11.7254, 9.3402], abs=1e-4)
    assert karras[-2].item() == pytest.approx(0.0292, abs=1e-4)
    uniform = get_sigmas(find_sampler("Euler a"), find_schedule("Automatic"), 20, MS)
    assert uniform[:4].tolist() == pytest.approx([14.6146, 10.7468, 8.0815, 6.2049], abs=1e-4)
    assert uniform[-3:].tolist() == pytest.approx([0.2322, 0.0292, 0.0], abs=1e-4)


@pytest.mark.parametrize("steps", STEPS)
def test_sampler_defaults(steps):
    """Automatic resolves to each sampler's default schedule; DPM2/DPM++ 3M SDE drop the penultimate sigma."""
    for s in SAMPLERS:
        if s.name in ("DDIM", "PLMS", "UniPC", "LCM"):
            continue
        got = get_sigmas(s, find_schedule("automatic"), steps, MS).double().numpy()
        default = s.options.get("scheduler")
        discard = s.options.get("discard_next_to_last_sigma", False)
        ref_fn = REFERENCES[default] if default else ref_uniform
        ref = ref_fn(steps + 1) if discard else ref_fn(steps)
        if discard:
            ref = np.append(ref[:-2], 0.0)
        assert len(got) == steps + 1, s.name
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6, err_msg=s.name)


def test_forced_discard_and_overrides():
    s = get_sigmas(find_sampler("Euler"), find_schedule("karras"), 10, MS, discard_next_to_last=True)
    np.testing.assert_allclose(s.double().numpy(), np.append(ref_karras(11)[:-2], 0), rtol=2e-5)
    s = get_sigmas(find_sampler("Euler"), find_schedule("karras"), 10, MS, sigma_min=0.1, sigma_max=10, rho=3)
    np.testing.assert_allclose(s.double().numpy(), ref_karras(10, 0.1, 10, 3), rtol=2e-5)
    # rho only applies to schedules that have one
    assert torch.equal(get_sigmas(find_sampler("Euler"), find_schedule("exponential"), 10, MS, rho=3),
                       get_sigmas(find_sampler("Euler"), find_schedule("exponential"), 10, MS))


@pytest.mark.parametrize("steps", STEPS)
def test_ddim_plms_timesteps(steps):
    """A1111 v1.10: timesteps arange(0, 1000, 1000 // steps) + 1, run from high to low, then 0."""
    for name in ("DDIM", "PLMS"):
        s = get_sigmas(find_sampler(name), find_schedule("karras"), steps, MS)  # schedule type is ignored
        ts = np.arange(0, 1000, 1000 // steps) + 1
        np.testing.assert_allclose(s.double().numpy(), z(TABLE[ts][::-1]), rtol=1e-6)
    assert len(get_sigmas(find_sampler("DDIM"), find_schedule("automatic"), 20, MS)) == 21
    assert len(get_sigmas(find_sampler("DDIM"), find_schedule("automatic"), 30, MS)) == 32  # 1000 // 30 = 33


@pytest.mark.parametrize("steps", STEPS)
def test_unipc_levels(steps):
    """DPM-Solver's discrete-time VP schedule: t in [1e-3, 1] uniform, log(alpha) piecewise linear."""
    ac = sd_alphas_cumprod().float().double().numpy()
    t = np.linspace(1.0, 1e-3, steps + 1)
    log_alpha = np.interp(t, np.arange(1, 1001) / 1000, 0.5 * np.log(ac))
    ref = z(np.sqrt(np.exp(-2 * log_alpha) - 1))
    s = get_sigmas(find_sampler("UniPC"), find_schedule("automatic"), steps, MS)
    np.testing.assert_allclose(s.double().numpy(), ref, rtol=2e-5)
    assert s[0].item() == pytest.approx(SMAX, rel=1e-5) and s[-2].item() == pytest.approx(SMIN, rel=1e-5)


@pytest.mark.parametrize("steps", STEPS)
def test_lcm_sigmas(steps):
    """LCM sees only timesteps 19, 39, ..., 999; sigmas are uniform in that 50-entry table's index."""
    lcm_table = np.log(TABLE[19::20])
    ref = z(np.exp(np.interp(np.linspace(49, 0, steps), np.arange(50), lcm_table)))
    s = get_sigmas(find_sampler("LCM"), find_schedule("automatic"), steps, MS)
    np.testing.assert_allclose(s.double().numpy(), ref, rtol=2e-5)
    assert MS.lcm.sigma_to_t(torch.tensor([SMAX, 1.0, SMIN])).tolist()[0] == 999
    assert MS.lcm.sigma_to_t(torch.tensor(float(TABLE[19]))).item() == 19
    k = get_sigmas(find_sampler("LCM"), find_schedule("karras"), steps, MS)
    np.testing.assert_allclose(k.double().numpy(), ref_karras(steps, TABLE[19], TABLE[999]), rtol=2e-5)


def test_effective_schedule():
    auto = find_schedule("Automatic")
    assert effective_schedule(find_sampler("DPM++ 2M"), auto).label == "Karras"
    assert effective_schedule(find_sampler("DPM++ 2M SDE"), auto).label == "Exponential"
    assert effective_schedule(find_sampler("Euler a"), auto).label == "Automatic"
    assert effective_schedule(find_sampler("DDIM"), auto).label == "Automatic"
    assert effective_schedule(find_sampler("DPM++ 2M"), find_schedule("sgm_uniform")).label == "SGM Uniform"


def test_schedule_type_table():
    names = [s.name for s in SCHEDULE_TYPES]
    assert names[:6] == ["automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform"]
    assert {"kl_optimal", "align_your_steps", "simple", "normal", "ddim", "beta"} <= set(names)
    assert find_schedule("SGMUniform").label == "SGM Uniform"
    assert find_schedule("karras").default_rho == 7.0 and find_schedule("polyexponential").default_rho == 1.0
    assert find_schedule("exponential").default_rho == -1
    assert find_schedule("uniform").need_inner_model and not find_schedule("karras").need_inner_model
    assert find_schedule("nope") is None
