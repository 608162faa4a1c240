"""Samplers on problems whose exact denoiser is known, sampler naming, and seeded noise.

Data x0 ~ N(mu, v) per element: the exact denoiser is D(x, s) = mu + v / (v + s^2) * (x - mu), and the
probability-flow ODE has the closed form x(s) - mu = sqrt((v + s^2) / (v + s0^2)) * (x(s0) - mu).
"""
from __future__ import annotations

import pytest
import torch

from webui.engine.model_schedule import ModelSchedule, sd_alphas_cumprod
from webui.engine.noise import NoiseSource, brownian_noise_sampler, slerp
from webui.engine.samplers import (SAMPLERS, StepInfo, UnknownSamplerError, default_eta, find_sampler,
                                   find_schedule, get_sigmas, is_timesteps_sampler, resolve_sampler, sample,
                                   txt2img_noise_scale)

MS = ModelSchedule(sd_alphas_cumprod())
MU, V = 0.5, 0.25
ODE = ["DPM++ 2M", "Euler", "LMS", "Heun", "DPM2", "DDIM", "PLMS", "UniPC", "DPM fast", "DPM adaptive", "Restart",
       # with eta = 0 the ancestral/SDE samplers are ODE solvers too
       "Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"]
# Max abs error allowed at 30 Karras steps (first-order methods and uniform-in-t grids converge slowly).
TOL = {"Euler": 0.2, "Euler a": 0.2, "DDIM": 0.2, "UniPC": 0.1, "PLMS": 0.05, "DPM adaptive": 0.08}


def gaussian_denoiser(mu: float = MU, v: float = V):
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        assert sigma.shape == (x.shape[0],)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return mu + v / (v + s ** 2) * (x - mu)
    return denoise


def ode_solution(x_start: torch.Tensor, s0: torch.Tensor, s: torch.Tensor, v: float = V) -> torch.Tensor:
    return MU + ((v + s.double() ** 2) / (v + s0.double() ** 2)) ** 0.5 * (x_start.double() - MU)


def expected_end(sampler, x_start: torch.Tensor, sigmas: torch.Tensor, v: float = V) -> torch.Tensor:
    """Where each sampler stops: sigma 0, except DPM fast/adaptive (smallest nonzero sigma) and A1111's
    timestep samplers (last level, returned as a VP latent)."""
    if is_timesteps_sampler(sampler):
        last = sigmas[-2]
        return ode_solution(x_start, sigmas[0], last, v) / (1 + last.double() ** 2) ** 0.5
    if sampler.name in ("DPM fast", "DPM adaptive"):
        return ode_solution(x_start, sigmas[0], sigmas[sigmas > 0].min(), v)
    return ode_solution(x_start, sigmas[0], torch.tensor(0.0), v)


def run(sampler, sigmas, x, seeds, **kw):
    noise = NoiseSource(tuple(x.shape[1:]), seeds)
    noise.first()
    return sample(sampler, gaussian_denoiser(kw.pop("mu", MU), kw.pop("v", V)), x, sigmas, ms=MS, noise=noise, **kw)


@pytest.mark.parametrize("name", ODE)
def test_deterministic_converges_to_exact_ode_solution(name):
    s = find_sampler(name)
    # Restart only restarts (re-noises) from 20 steps on; below that it is plain Heun
    sigmas = get_sigmas(s, find_schedule("karras"), 19 if name == "Restart" else 30, MS)
    x = NoiseSource((4, 8, 8), [1, 2]).first() * sigmas[0]
    steps: list[StepInfo] = []
    out = run(s, sigmas, x.clone(), [1, 2], eta=0.0, callback=steps.append)
    err = (out.double() - expected_end(s, x, sigmas)).abs().max().item()
    assert err < TOL.get(name, 0.03), err
    assert out.shape == x.shape and out.dtype == x.dtype
    if name != "DPM adaptive":  # adaptive picks its own step count
        assert [st.i for st in steps] == list(range(steps[0].total)) and steps[-1].total > 0
    if name not in ("DPM fast", "DPM adaptive"):
        assert steps[-1].total == len(sigmas) - 1


@pytest.mark.parametrize("name", ["DPM++ 2M", "Heun", "LMS", "DPM2", "UniPC", "PLMS"])
def test_higher_order_samplers_converge_faster_than_euler(name):
    s = find_sampler(name)
    errs = []
    for steps in (10, 40):
        sigmas = get_sigmas(s, find_schedule("exponential"), steps, MS)
        x = NoiseSource((4, 8, 8), [3]).first() * sigmas[0]
        errs.append((run(s, sigmas, x.clone(), [3], eta=0.0).double() - expected_end(s, x, sigmas)).abs().max())
    assert errs[1] < errs[0] / 3


@pytest.mark.parametrize("name", [s.name for s in SAMPLERS])
def test_fixed_point_data(name):
    """Data is a single point: D(x, s) = mu everywhere, so samplers ending at sigma 0 return mu exactly."""
    s = find_sampler(name)
    sigmas = get_sigmas(s, find_schedule("automatic"), 12, MS)
    x = NoiseSource((4, 8, 8), [5, 6]).first() * sigmas[0]
    out = run(s, sigmas, x.clone(), [5, 6], v=0.0)
    if s.name in ("DPM fast", "DPM adaptive") or is_timesteps_sampler(s):
        last = sigmas[sigmas > 0].min()
        ref = ode_solution(x, sigmas[0], last, v=0.0)  # = mu + last/sigma0 * (x - mu) for deterministic paths
        if is_timesteps_sampler(s):
            ref = ref / (1 + last.double() ** 2) ** 0.5
        if s.name in ("DPM fast", "DPM adaptive"):  # default eta 1 adds noise at the end: only the mean is fixed
            assert out.double().mean().item() == pytest.approx(MU, abs=0.02)
            return
        assert torch.allclose(out.double(), ref, atol=2e-3)
    else:
        assert torch.allclose(out, torch.full_like(out, MU), atol=1e-5)


STOCHASTIC = ["Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE",
              "DPM fast", "DPM adaptive", "Restart", "LCM", "DDIM"]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_reach_the_data_distribution(name):
    s = find_sampler(name)
    # first-order ancestral steps under-disperse at low step counts; Restart only restarts from 20 steps on
    steps = {"Euler a": 60, "DDIM": 60, "Restart": 24}.get(name, 20)
    sigmas = get_sigmas(s, find_schedule("karras"), steps, MS)
    seeds = [11, 12, 13, 14]
    noise = NoiseSource((4, 32, 32), seeds)
    x = MU + noise.first() * (V + sigmas[0] ** 2) ** 0.5  # exact marginal at sigmas[0]
    out = sample(s, gaussian_denoiser(), x, sigmas, ms=MS, noise=noise, eta=1.0).double()
    if is_timesteps_sampler(s):
        out = out * (1 + sigmas[-2].double() ** 2) ** 0.5
    assert out.mean().item() == pytest.approx(MU, abs=0.02)
    if name != "LCM":  # LCM re-noises around the posterior *mean*, which shrinks the spread by design
        assert out.std().item() == pytest.approx(V ** 0.5, rel=0.15)


def test_stochastic_samplers_are_seeded_and_batch_independent():
    for name in ["Euler a", "DPM++ 2M SDE", "DPM++ SDE"]:
        s = find_sampler(name)
        sigmas = get_sigmas(s, find_schedule("automatic"), 8, MS)
        both = NoiseSource((4, 8, 8), [7, 8])
        alone = NoiseSource((4, 8, 8), [8])
        a = sample(s, gaussian_denoiser(), both.first() * sigmas[0], sigmas, ms=MS, noise=both)
        b = sample(s, gaussian_denoiser(), alone.first() * sigmas[0], sigmas, ms=MS, noise=alone)
        assert torch.allclose(a[1:], b, atol=1e-6), name
        again = NoiseSource((4, 8, 8), [7, 8])
        c = sample(s, gaussian_denoiser(), again.first() * sigmas[0], sigmas, ms=MS, noise=again)
        assert torch.equal(a, c), name


def test_euler_a_uses_the_image_generators():
    """Euler a's noise is the next draw of each image's generator (A1111 rng.next())."""
    s = find_sampler("Euler a")
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    noise = NoiseSource((1, 4, 4), [42])
    x = noise.first() * 2.0
    out = sample(s, lambda x, sig: torch.zeros_like(x), x, sigmas[:2], ms=MS, noise=noise)  # one step 2 -> 1
    g = torch.Generator().manual_seed(42)
    first = torch.randn((1, 4, 4), generator=g)
    second = torch.randn((1, 4, 4), generator=g)
    sigma_up = (1.0 * (4 - 1) / 4) ** 0.5
    sigma_down = (1 - sigma_up ** 2) ** 0.5
    assert torch.allclose(out[0], first * 2.0 * sigma_down / 2.0 + second * sigma_up, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy-2 notice from inside diffusers
def test_unipc_matches_diffusers():
    """Our sigma-space UniPC equals diffusers' UniPCMultistepScheduler run on the same noise levels."""
    from diffusers import UniPCMultistepScheduler

    den = gaussian_denoiser()
    levels = get_sigmas(find_sampler("UniPC"), find_schedule("automatic"), 10, MS).double()
    x_k = NoiseSource((4, 8, 8), [9]).first().double() * levels[0]
    for variant in ("bh1", "bh2"):
        sch = UniPCMultistepScheduler(solver_order=3, solver_type=variant, prediction_type="sample")
        sch.set_timesteps(10)
        sch.sigmas = levels[:-1].clone()  # the 11 UniPC levels; diffusers steps between consecutive ones
        x_vp = x_k / (1 + levels[0] ** 2) ** 0.5
        for k, t in enumerate(sch.timesteps):
            s = levels[k].reshape(1)
            x_vp = sch.step(den(x_vp * (1 + s ** 2) ** 0.5, s), t, x_vp).prev_sample
        ours = run(find_sampler("UniPC"), levels, x_k.clone(), [9], unipc_variant=variant)
        assert torch.allclose(ours, x_vp, atol=1e-10), variant


def test_ddim_eta_matches_the_ddim_formula():
    """One DDIM step with eta = 1, written in the VP parameterisation of Song et al."""
    s = find_sampler("DDIM")
    sigmas = torch.tensor([3.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    noise = NoiseSource((1, 4, 4), [3])
    x = noise.first().double() * 3.0
    infos: list[StepInfo] = []
    sample(s, gaussian_denoiser(), x.clone(), sigmas, ms=MS, noise=noise, eta=1.0, callback=infos.append)
    g = torch.Generator().manual_seed(3)
    torch.randn((1, 4, 4), generator=g)
    z = torch.randn((1, 4, 4), generator=g).double()
    a_t, a_prev = 1 / (1 + 9.0), 1 / (1 + 1.0)
    x0 = gaussian_denoiser()(x, torch.tensor([3.0], dtype=torch.float64))
    e = (x * a_t ** 0.5 - a_t ** 0.5 * x0) / (1 - a_t) ** 0.5
    sig = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    x_prev_vp = a_prev ** 0.5 * x0 + (1 - a_prev - sig ** 2) ** 0.5 * e + sig * z
    assert torch.allclose(infos[0].x, x_prev_vp / a_prev ** 0.5, atol=1e-10)
    assert len(infos) == 3 and infos[-1].total == 3


def test_callback_can_stop_sampling():
    class Stop(Exception):
        pass

    def cb(info: StepInfo) -> None:
        if info.i == 2:
            raise Stop

    sigmas = get_sigmas(find_sampler("Euler"), find_schedule("automatic"), 10, MS)
    with pytest.raises(Stop):
        run(find_sampler("Euler"), sigmas, torch.randn(1, 4, 8, 8) * sigmas[0], [1], callback=cb)


def test_second_order_and_options():
    flagged = {s.name for s in SAMPLERS if s.options.get("second_order")}
    assert flagged == {"DPM++ SDE", "DPM++ 2S a", "Heun", "DPM2", "DPM2 a", "Restart"}
    assert {s.name for s in SAMPLERS if s.options.get("brownian_noise")} == {
        "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"}
    assert find_sampler("DPM++ 2M").options == {"scheduler": "karras"}
    assert find_sampler("Euler a").options.get("uses_ensd") is True
    assert default_eta(find_sampler("DDIM")) == 0.0 and default_eta(find_sampler("Euler a")) == 1.0
    sig = torch.tensor([14.0, 1.0, 0.0])
    assert txt2img_noise_scale(find_sampler("Euler"), sig) == 14.0
    assert txt2img_noise_scale(find_sampler("DDIM"), sig) == pytest.approx((1 + 14.0 ** 2) ** 0.5)


def test_sampler_names_and_aliases():
    names = [s.name for s in SAMPLERS]
    required = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler", "LMS",
                "Heun", "DPM2", "DPM2 a", "DDIM", "PLMS", "UniPC", "LCM"]
    assert names[0] == "DPM++ 2M"
    assert [n for n in names if n in required] == required  # A1111 UI order
    assert find_sampler("k_euler_a").name == "Euler a"
    assert find_sampler("K_DPMPP_2M").name == "DPM++ 2M"
    assert find_sampler("ddim").name == "DDIM" and find_sampler("plms").name == "PLMS"
    assert find_sampler("euler A").name == "Euler a"


def test_unknown_sampler():
    with pytest.raises(UnknownSamplerError) as e:
        find_sampler("Euler b")
    assert "DPM++ 2M" in str(e.value) and "Euler a" in str(e.value)
    with pytest.raises(ValueError):
        resolve_sampler("Nope Karras", None)


@pytest.mark.parametrize("given, sched, want", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
    ("DPM++ SDE Karras", "", ("DPM++ SDE", "Karras")),
    ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Exponential")),
    ("DPM++ 2M SDE Karras", "Automatic", ("DPM++ 2M SDE", "Karras")),
    ("DPM++ 2M SDE Heun", None, ("DPM++ 2M SDE Heun", "Automatic")),
    ("Euler a", None, ("Euler a", "Automatic")),
    ("Euler SGMUniform", None, ("Euler", "SGM Uniform")),
    ("LMS Karras", None, ("LMS", "Karras")),
    ("Euler", "karras", ("Euler", "Karras")),
    ("Euler", "SGMUniform", ("Euler", "SGM Uniform")),
    ("Euler", "not a schedule", ("Euler", "Automatic")),
    ("k_dpmpp_2m", "Exponential", ("DPM++ 2M", "Exponential")),
    ("DDIM", None, ("DDIM", "Automatic")),
    (None, None, ("DPM++ 2M", "Automatic")),
])
def test_resolve_sampler(given, sched, want):
    sampler, schedule = resolve_sampler(given, sched)
    assert (sampler.name, schedule.label) == want


def test_resolve_convert_automatic():
    assert resolve_sampler("DPM++ 2M Karras", None, convert_automatic=True)[1].label == "Automatic"
    assert resolve_sampler("DPM++ 2M Exponential", None, convert_automatic=True)[1].label == "Exponential"


# --- noise -----------------------------------------------------------------------------------------

def _randn(seed: int, shape, draws: int = 1) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(seed)
    out = None
    for _ in range(draws):
        out = torch.randn(shape, generator=g)
    return out


def test_first_noise_is_per_image_seeded_randn():
    ns = NoiseSource((4, 8, 8), [123, 456])
    first = ns.first()
    assert first.shape == (2, 4, 8, 8)
    assert torch.equal(first[0], _randn(123, (4, 8, 8))) and torch.equal(first[1], _randn(456, (4, 8, 8)))
    assert torch.equal(ns.first(), first)  # memoised
    nxt = ns.next_like(first)
    assert torch.equal(nxt[1], _randn(456, (4, 8, 8), draws=2))
    assert torch.equal(NoiseSource((4, 8, 8), [123, 456]).first(), first)


def test_next_like_before_first_is_first():
    ns = NoiseSource((4, 4, 4), [9])
    assert torch.equal(ns.next_like(torch.zeros(1, 4, 4, 4)), _randn(9, (4, 4, 4))[None])


def test_eta_noise_seed_delta():
    ns = NoiseSource((4, 4, 4), [100], eta_noise_seed_delta=31337)
    assert torch.equal(ns.first()[0], _randn(100, (4, 4, 4)))
    assert torch.equal(ns.next_like(torch.zeros(1, 4, 4, 4))[0], _randn(100 + 31337, (4, 4, 4)))


def _slerp_ref(val, low, high):  # the formula, written out per (channel, column)
    lo, hi = low / low.norm(dim=1, keepdim=True), high / high.norm(dim=1, keepdim=True)
    omega = torch.acos((lo * hi).sum(1)).unsqueeze(1)
    return torch.sin((1 - val) * omega) / torch.sin(omega) * low + torch.sin(val * omega) / torch.sin(omega) * high


def test_variation_seed_slerp():
    ns = NoiseSource((4, 8, 8), [1, 2], subseeds=[10, 20], subseed_strength=0.3)
    first = ns.first()
    for i, (seed, sub) in enumerate([(1, 10), (2, 20)]):
        ref = _slerp_ref(0.3, _randn(seed, (4, 8, 8)), _randn(sub, (4, 8, 8)))
        assert torch.allclose(first[i], ref, atol=1e-5)
    # the generator still advanced by exactly one draw
    assert torch.equal(ns.next_like(first)[0], _randn(1, (4, 8, 8), draws=2))
    # strength 0 ignores the subseed; strength 1 gives the subseed's noise
    assert torch.equal(NoiseSource((4, 8, 8), [1], [10], 0.0).first()[0], _randn(1, (4, 8, 8)))
    assert torch.allclose(NoiseSource((4, 8, 8), [1], [10], 1.0).first()[0], _randn(10, (4, 8, 8)), atol=1e-5)


def test_slerp_parallel_quirk():
    """A1111 quirk: nearly parallel inputs fall back to a lerp with the weights swapped."""
    a = _randn(1, (4, 8, 8))
    b = a + 1e-4 * _randn(2, (4, 8, 8))
    assert torch.allclose(slerp(0.2, a, b), a * 0.2 + b * 0.8)


def test_seed_resize_from():
    shape = (4, 16, 16)
    ns = NoiseSource(shape, [5], seed_resize_from_h=64, seed_resize_from_w=96)  # old latent 8 x 12
    x = ns.first()[0]
    small = _randn(5, (4, 8, 12))
    assert torch.equal(x[:, 4:12, 2:14], small)
    full = _randn(5, shape)
    mask = torch.ones(shape, dtype=torch.bool)
    mask[:, 4:12, 2:14] = False
    assert torch.equal(x[mask], full[mask])
    bigger = NoiseSource((4, 8, 8), [5], seed_resize_from_h=128, seed_resize_from_w=128).first()[0]  # crop
    assert torch.equal(bigger, _randn(5, (4, 16, 16))[:, 4:12, 4:12])


def test_brownian_noise_sampler():
    import torchsde

    x = torch.zeros(2, 4, 8, 8)
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.1, 0.0])
    ns = brownian_noise_sampler(x, sigmas, [7, 8])
    n1 = ns(torch.tensor(3.0), torch.tensor(1.0))
    assert n1.shape == x.shape
    assert torch.equal(n1, brownian_noise_sampler(x, sigmas, [7, 8])(3.0, 1.0))  # deterministic
    assert torch.equal(n1[1:], brownian_noise_sampler(x[1:], sigmas, [8])(3.0, 1.0))  # per-image
    tree = torchsde.BrownianTree(0.1, torch.zeros(4, 8, 8), 10.0, entropy=7)
    assert torch.allclose(n1[0], -tree(1.0, 3.0) / 2.0 ** 0.5)  # decreasing sigma: sign flipped, unit variance
    big = brownian_noise_sampler(torch.zeros(2, 4, 32, 32), sigmas, [1, 2])(10.0, 0.1)
    assert big.std().item() == pytest.approx(1.0, abs=0.05)
