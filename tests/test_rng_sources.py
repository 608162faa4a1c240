"""A1111's random number sources (randn_source = GPU / CPU / NV) in NoiseSource, and the NV generator.

Reference values used here, and where they come from:

* Philox 4x32 known-answer vectors: Random123's `kat_vectors` file (the reference distribution of Salmon,
  Moraes, Dror & Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3", SC 2011), as cut-and-pasted into
  DEShawResearch/Random123-Boost libs/random/test/test_philox.cpp (test_kat_philox4x32).
  Format: counter[4] key[2] -> output[4].
* torch.randn on CUDA, as published:
  - seed 0, (3, 4): the expected output in the docstring of A1111's modules/rng_philox.py (printed to 8
    decimals; those are CUDA's own numbers, within ~2e-7 of NV: curand uses fast float32 log/sincos).
  - seed 0, (6, 8): a Triton tutorial notebook printing an 8-column torch.randn CUDA input (4 decimals;
    its first 12 values are the A1111 docstring's).
  - seed 42, (2, 5) then a second (2, 2) draw: the docstrings of flashinfer-ai/flashinfer's
    flashinfer.logits_processor (Sample: `torch.manual_seed(42); torch.randn(2, 5, device="cuda")`;
    TopK: two successive `torch.randn(2, 2, device="cuda")`, the second printed row-normalised).
  - seed 42, six successive 4-element draws: the six CUDA tensors printed in a public torch._foreach_sub
    compile repro (they begin with the flashinfer values above).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from webui.engine import noise as noise_mod
from webui.engine import rng_philox
from webui.engine.noise import NoiseSource, brownian_noise_sampler, slerp

HAS_CUDA = torch.cuda.is_available()


# --- Philox 4x32 block function --------------------------------------------------------------------------------

KAT_PHILOX4X32 = [  # rounds, counter, key, expected
    (10, "00000000 00000000 00000000 00000000", "00000000 00000000", "6627e8d5 e169c58d bc57ac4c 9b00dbd8"),
    (10, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "408f276d 41c83b0e a20bc7c6 6d5451fd"),
    (10, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "d16cfe09 94fdcceb 5001e420 24126ea1"),
    (7, "00000000 00000000 00000000 00000000", "00000000 00000000", "5f6fb709 0d893f64 4f121f81 4f730a48"),
    (7, "ffffffff ffffffff ffffffff ffffffff", "ffffffff ffffffff", "5207ddc2 45165e59 4d8ee751 8c52f662"),
    (7, "243f6a88 85a308d3 13198a2e 03707344", "a4093822 299f31d0", "4dfccaba 190a87f0 c47362ba b6b5242a"),
]


def _words(s: str) -> list[np.ndarray]:
    return [np.array([int(w, 16)], dtype=np.uint32) for w in s.split()]


@pytest.mark.parametrize("rounds,ctr,key,expected", KAT_PHILOX4X32)
def test_philox4x32_known_answers(rounds, ctr, key, expected):
    out = rng_philox.philox4x32(_words(ctr), _words(key), rounds=rounds)
    assert [int(w[0]) for w in out] == [int(w, 16) for w in expected.split()]


def test_philox4x32_is_vectorised():
    ctrs = [KAT_PHILOX4X32[i][1] for i in range(3)]
    keys = [KAT_PHILOX4X32[i][2] for i in range(3)]
    counter = [np.array([int(c.split()[j], 16) for c in ctrs], dtype=np.uint32) for j in range(4)]
    key = [np.array([int(k.split()[j], 16) for k in keys], dtype=np.uint32) for j in range(2)]
    out = rng_philox.philox4x32(counter, key)
    for i in range(3):
        assert [int(w[i]) for w in out] == [int(w, 16) for w in KAT_PHILOX4X32[i][3].split()]


# --- NV: torch.randn as CUDA computes it ------------------------------------------------------------------------

A1111_DOC_SEED0 = [[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                   [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                   [-1.07454231, -0.36314407, -1.67105067, 2.26550497]]

CUDA_SEED0_6x8 = [[-0.9247, -0.4253, -2.6438, 0.1452, -0.1209, -0.5797, -0.6229, -0.3284],
                  [-1.0745, -0.3631, -1.6711, 2.2655, 0.3117, -0.1842, 1.2866, 1.1820],
                  [-0.1271, 1.2169, 1.4353, 1.0605, -0.4941, -1.4244, -0.7244, -1.2973],
                  [0.0697, -0.0074, 1.8969, 0.6878, -0.0779, -0.8373, 1.3506, -0.2879],
                  [-0.5965, -0.3283, -0.9086, -0.8059, -0.7407, -0.0504, 0.5435, 1.5150]]

CUDA_SEED42_2x5 = [[0.1940, 2.1614, -0.1721, 0.8491, -1.9244],
                   [0.6530, -0.6494, -0.8175, 0.5280, -1.2753]]

CUDA_SEED42_SIX_DRAWS_OF_4 = [[0.1940, 2.1614, -0.1721, 0.8491], [0.1391, -0.1082, -0.7174, 0.7566],
                              [-0.5187, 1.2268, 0.6255, -0.9117], [-0.6974, -1.8688, -0.8832, -1.6627],
                              [-1.2682, -0.0383, -0.1029, 1.4400], [1.4640, -0.3238, 0.7740, 1.5892]]

PRINTED_4DP = 5.1e-5  # half a unit in the 4th decimal, and a little float slack


def test_nv_seed0_matches_a1111_documented_output():
    out = rng_philox.Generator(0).randn((3, 4))
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_allclose(out, np.array(A1111_DOC_SEED0), rtol=0, atol=1e-6)


def test_nv_first_draws_match_published_cuda_randn():
    np.testing.assert_allclose(rng_philox.randn(0, (6, 8))[:5], CUDA_SEED0_6x8, rtol=0, atol=PRINTED_4DP)
    np.testing.assert_allclose(rng_philox.randn(42, (2, 5)), CUDA_SEED42_2x5, rtol=0, atol=PRINTED_4DP)


def test_nv_successive_draws_continue_the_cuda_stream():
    g = rng_philox.Generator(42)
    first, second = g.randn((2, 2)), g.randn((2, 2))
    np.testing.assert_allclose(first.ravel(), CUDA_SEED42_2x5[0][:4], atol=PRINTED_4DP)
    # flashinfer's TopK docstring prints the second draw divided by its row sums
    np.testing.assert_allclose(second / second.sum(-1, keepdims=True), [[4.4998, -3.4998], [-18.2893, 19.2893]],
                               rtol=0, atol=2e-4)
    g = rng_philox.Generator(42)
    for expected in CUDA_SEED42_SIX_DRAWS_OF_4:
        np.testing.assert_allclose(g.randn((4,)), expected, rtol=0, atol=PRINTED_4DP)
    assert g.offset == 6


@pytest.mark.parametrize("seed", [0, 1, 42, 1234567, 4294967294])
@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 64, 64), (16, 7)])
def test_nv_element_i_is_counter_i(seed, shape):
    """Element i of a draw is Philox(counter = (call, 0, i, 0), key = seed), whatever the shape."""
    out = rng_philox.randn(seed, shape)
    n = out.size
    flat = rng_philox.randn(seed, (n,))
    assert np.array_equal(out.ravel(), flat)
    assert np.array_equal(rng_philox.randn(seed, (n // 2,)), flat[:n // 2])
    idx = np.array([0, 1, n // 3, n - 1], dtype=np.uint32)
    z = np.zeros_like(idx)
    w = rng_philox.philox4x32((z, z, idx, z), (np.uint32(seed & 0xFFFFFFFF), np.uint32(seed >> 32)))
    assert np.array_equal(flat[idx], rng_philox.box_muller(w[0], w[1]))
    if n >= 1024:  # standard normal moments, 5 standard errors
        assert abs(float(flat.mean())) < 5 / n ** 0.5 and abs(float(flat.std()) - 1) < 5 / (2 * n) ** 0.5


def test_nv_box_muller_is_curands_first_output():
    x = np.array([0, 1 << 31, 0xFFFFFFFF, 123456789], dtype=np.uint32)
    y = np.array([0, 1 << 30, 0xFFFFFFFF, 987654321], dtype=np.uint32)
    inv = float(np.float32(2.3283064e-10))
    inv2pi = float(np.float32(2.3283064e-10 * 6.2831855))
    u, v = x * inv + inv / 2, y * inv2pi + inv2pi / 2
    ref = (np.sqrt(-2 * np.log(u)) * np.sin(v)).astype(np.float32)
    assert np.array_equal(rng_philox.box_muller(x, y), ref)
    assert np.all(np.isfinite(rng_philox.box_muller(x, y)))


def test_nv_generator_offsets_and_state():
    g = rng_philox.Generator(7)
    a = g.randn((4, 4))
    state = g.get_state()
    b, c = g.randn((4, 4)), g.randn((4, 4))
    assert np.array_equal(a, rng_philox.randn(7, (4, 4)))
    assert np.array_equal(b, rng_philox.randn(7, (4, 4), offset=1))
    assert np.array_equal(c, rng_philox.randn(7, (4, 4), offset=2))
    assert not np.array_equal(a, b)
    g.set_state(state)
    assert np.array_equal(g.randn((4, 4)), b)
    # the counter is per call, not per number: a different shape continues at the next call index
    g = rng_philox.Generator(7)
    g.randn((3,))
    assert np.array_equal(g.randn((4, 4)), b)


def test_nv_seed_uses_all_64_bits_like_torch_manual_seed():
    assert not np.array_equal(rng_philox.randn(5 + (1 << 32), (8,)), rng_philox.randn(5, (8,)))
    # seed + ENSD can pass 2**32; negative seeds wrap mod 2**64 as torch.manual_seed does
    assert np.array_equal(rng_philox.randn(-1, (8,)), rng_philox.randn(2 ** 64 - 1, (8,)))
    big = 4294967294 + 31337
    w = rng_philox.philox4x32([np.zeros(1, np.uint32)] * 4, (np.uint32(big & 0xFFFFFFFF), np.uint32(big >> 32)))
    assert rng_philox.randn(big, (1,))[0] == rng_philox.box_muller(w[0], w[1])[0]


# --- NoiseSource with each source ------------------------------------------------------------------------------

def _nv(seed: int, shape, draw: int = 0) -> torch.Tensor:
    return torch.from_numpy(rng_philox.randn(seed, shape, offset=draw))


def _cpu(seed: int, shape, draw: int = 0) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(seed)
    for _ in range(draw):
        torch.randn(shape, generator=g)
    return torch.randn(shape, generator=g)


def test_rng_names_and_infotext():
    assert NoiseSource((4, 2, 2), [1]).rng == "CPU"  # default unchanged
    assert NoiseSource((4, 2, 2), [1], rng="nv").rng == "NV"
    assert NoiseSource((4, 2, 2), [1], rng="CPU").infotext_rng == "CPU"
    assert NoiseSource((4, 2, 2), [1], rng="NV").infotext_rng == "NV"
    assert NoiseSource((4, 2, 2), [1], rng="GPU").infotext_rng is None  # A1111 omits its default
    assert NoiseSource((4, 2, 2), [1], rng="CPU").note is None and NoiseSource((4, 2, 2), [1], rng="NV").note is None
    with pytest.raises(ValueError):
        NoiseSource((4, 2, 2), [1], rng="MPS")


def test_nv_noise_source_draw_order():
    shape = (4, 8, 8)
    ns = NoiseSource(shape, [123, 456], rng="NV")
    first = ns.first()
    assert first.dtype == torch.float32 and first.device.type == "cpu"
    assert torch.equal(first[0], _nv(123, shape)) and torch.equal(first[1], _nv(456, shape))
    x = torch.zeros(2, *shape, dtype=torch.float64)
    nxt = ns.next_like(x)
    assert nxt.dtype == torch.float64
    assert torch.equal(nxt[1].float(), _nv(456, shape, 1))
    # rewind after an out-of-memory retry
    rewind = ns.checkpoint()
    a = ns.next_like(x)
    rewind()
    assert torch.equal(ns.next_like(x), a)
    assert torch.equal(a[0].float(), _nv(123, shape, 2))
    # next_like before first() is first()
    assert torch.equal(NoiseSource(shape, [9], rng="NV").next_like(torch.zeros(1, *shape)), _nv(9, shape)[None])


def test_nv_ensd_restarts_the_stream_at_seed_plus_delta():
    shape = (4, 4, 4)
    ns = NoiseSource(shape, [100], eta_noise_seed_delta=31337, rng="NV")
    assert torch.equal(ns.first()[0], _nv(100, shape))
    x = torch.zeros(1, *shape)
    assert torch.equal(ns.next_like(x)[0], _nv(100 + 31337, shape))
    assert torch.equal(ns.next_like(x)[0], _nv(100 + 31337, shape, 1))


def test_nv_variation_seed_and_seed_resize():
    shape = (4, 8, 8)
    ns = NoiseSource(shape, [1, 2], subseeds=[10, 20], subseed_strength=0.3, rng="NV")
    first = ns.first()
    for i, (seed, sub) in enumerate([(1, 10), (2, 20)]):
        assert torch.equal(first[i], slerp(0.3, _nv(seed, shape), _nv(sub, shape)))
    assert torch.equal(ns.next_like(first)[0], _nv(1, shape, 1))  # one draw of the image's stream used

    shape = (4, 16, 16)
    ns = NoiseSource(shape, [5], seed_resize_from_h=64, seed_resize_from_w=96, rng="NV")  # old latent 8 x 12
    x = ns.first()[0]
    assert torch.equal(x[:, 4:12, 2:14], _nv(5, (4, 8, 12)))  # a fresh generator's first draw at the old size
    mask = torch.ones(shape, dtype=torch.bool)
    mask[:, 4:12, 2:14] = False
    assert torch.equal(x[mask], _nv(5, shape)[mask])  # the image generator's first draw around it
    assert torch.equal(ns.next_like(x[None])[0], _nv(5, shape, 1))


def test_cpu_source_is_torch_cpu_generator():
    shape = (4, 8, 8)
    ns = NoiseSource(shape, [3, 4], subseeds=[7, 8], subseed_strength=0.5, eta_noise_seed_delta=11, rng="CPU")
    first = ns.first()
    assert torch.equal(first[1], slerp(0.5, _cpu(4, shape), _cpu(8, shape)))
    assert torch.equal(ns.next_like(first)[0], _cpu(3 + 11, shape))


def test_sources_differ():
    shape = (4, 8, 8)
    cpu, nv = NoiseSource(shape, [1], rng="CPU").first(), NoiseSource(shape, [1], rng="NV").first()
    assert not torch.allclose(cpu, nv)


def test_gpu_without_cuda_falls_back_to_nv_with_a_note(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shape = (4, 8, 8)
    ns = NoiseSource(shape, [1, 2], subseeds=[3], subseed_strength=0.2, eta_noise_seed_delta=9, rng="GPU")
    assert ns.rng_requested == "GPU" and ns.rng == "NV"
    assert ns.note and "GPU" in ns.note and "NV" in ns.note and "no CUDA device" in ns.note
    assert ns.infotext_rng is None  # the numbers are CUDA's: A1111 on an NVIDIA GPU reproduces them
    nv = NoiseSource(shape, [1, 2], subseeds=[3], subseed_strength=0.2, eta_noise_seed_delta=9, rng="NV")
    a, b = ns.first(), nv.first()
    assert torch.equal(a, b)
    assert torch.equal(ns.next_like(a), nv.next_like(b))
    assert ns.seeds.brownian == "philox"


def test_gpu_on_a_non_cuda_device_falls_back_to_nv(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ns = NoiseSource((4, 2, 2), [1], rng="GPU", device="cpu")
    assert ns.rng == "NV" and "runs on cpu" in ns.note


# --- Brownian trees for the SDE samplers ------------------------------------------------------------------------

SIGMAS = torch.tensor([14.6, 7.0, 3.0, 1.0, 0.3, 0.03, 0.0])


def test_brownian_tree_per_source():
    x = torch.zeros(2, 4, 8, 8)
    plain = brownian_noise_sampler(x, SIGMAS, [1, 2])
    cpu = NoiseSource((4, 8, 8), [1, 2], rng="CPU").brownian_sampler(x, SIGMAS)
    nv = NoiseSource((4, 8, 8), [1, 2], rng="NV").brownian_sampler(x, SIGMAS)
    assert plain.tree == cpu.tree == "cpu" and nv.tree == "philox"
    for i in range(len(SIGMAS) - 2):
        a, b, c = plain(SIGMAS[i], SIGMAS[i + 1]), cpu(SIGMAS[i], SIGMAS[i + 1]), nv(SIGMAS[i], SIGMAS[i + 1])
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
        assert c.shape == x.shape and torch.isfinite(c).all()
    # callers passing noise.seeds (as the samplers do) get the source's tree too
    assert brownian_noise_sampler(x, SIGMAS, NoiseSource((4, 8, 8), [1, 2], rng="NV").seeds).tree == "philox"


def test_nv_brownian_tree_draws_through_philox():
    """The tree's top-level increment is torchsde's first node draw: randn(seed from its SeedSequence)."""
    x = torch.zeros(1, 4, 8, 8)
    seed = 77
    s = NoiseSource((4, 8, 8), [seed], rng="NV").brownian_sampler(x, SIGMAS)
    w_seed = np.random.SeedSequence(entropy=seed, pool_size=24).generate_state(3)[0]
    # from sigma_max down to sigma_min: the whole interval, walked backwards
    out = s(SIGMAS.max(), SIGMAS[SIGMAS > 0].min())
    torch.testing.assert_close(out[0], -_nv(int(w_seed), (4, 8, 8)), rtol=0, atol=2e-6)
    # the switch is scoped: a CPU tree built afterwards is torchsde's own
    again = brownian_noise_sampler(x, SIGMAS, [seed])(SIGMAS.max(), SIGMAS[SIGMAS > 0].min())
    g = torch.Generator("cpu").manual_seed(int(w_seed))
    torch.testing.assert_close(again[0], -torch.randn((4, 8, 8), generator=g), rtol=0, atol=2e-6)


def test_nv_brownian_tree_is_deterministic_and_batch_independent():
    x2 = torch.zeros(2, 4, 8, 8)
    both = NoiseSource((4, 8, 8), [5, 6], rng="NV").brownian_sampler(x2, SIGMAS)
    alone = NoiseSource((4, 8, 8), [6], rng="NV").brownian_sampler(x2[:1], SIGMAS)
    for i in range(3):
        assert torch.equal(both(SIGMAS[i], SIGMAS[i + 1])[1], alone(SIGMAS[i], SIGMAS[i + 1])[0])


# --- on a CUDA machine: GPU and NV against torch.randn on the device --------------------------------------------

@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("seed", [0, 42, 3306215427])
@pytest.mark.parametrize("shape", [(4, 64, 64), (4, 128, 128)])
def test_cuda_nv_equals_torch_randn(seed, shape):
    n = int(np.prod(shape))
    props = torch.cuda.get_device_properties(0)
    threads = 256 * min((n + 255) // 256,
                        props.multi_processor_count * getattr(props, "max_threads_per_multi_processor", 2048) // 256)
    if n > threads:
        pytest.skip(f"{n} elements > {threads} randn threads on this GPU: CUDA hands out several per thread")
    g = torch.Generator("cuda").manual_seed(seed)
    ref = [torch.randn(shape, device="cuda", generator=g).cpu() for _ in range(3)]
    gen = rng_philox.Generator(seed)
    for r in ref:
        torch.testing.assert_close(torch.from_numpy(gen.randn(shape)), r, rtol=0, atol=1e-5)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_gpu_source_and_tree():
    shape = (4, 16, 16)
    ns = NoiseSource(shape, [11, 12], eta_noise_seed_delta=3, rng="GPU")
    assert ns.rng == "GPU" and ns.note is None and ns.seeds.brownian.startswith("cuda")
    first = ns.first()
    g = torch.Generator("cuda").manual_seed(12)
    assert torch.equal(first[1], torch.randn(shape, device="cuda", generator=g).cpu())
    g = torch.Generator("cuda").manual_seed(11 + 3)
    assert torch.equal(ns.next_like(first)[0], torch.randn(shape, device="cuda", generator=g).cpu())
    nv = NoiseSource(shape, [11, 12], eta_noise_seed_delta=3, rng="NV")
    torch.testing.assert_close(nv.first(), first, rtol=0, atol=1e-5)
    x = torch.zeros(2, *shape)
    t_gpu, t_nv = ns.brownian_sampler(x, SIGMAS), nv.brownian_sampler(x, SIGMAS)
    for i in range(3):
        torch.testing.assert_close(t_nv(SIGMAS[i], SIGMAS[i + 1]), t_gpu(SIGMAS[i], SIGMAS[i + 1]), rtol=0, atol=1e-4)


def test_module_exports():
    assert set(noise_mod.RNG_SOURCES) == {"GPU", "CPU", "NV"}


@pytest.mark.parametrize("name", ["Euler a", "DPM++ SDE", "DPM++ 2M SDE"])
def test_samplers_draw_from_the_chosen_source(name):
    """The samplers' extra noise (ancestral draws, Brownian trees via noise.seeds) follows the source."""
    from webui.engine.model_schedule import ModelSchedule, sd_alphas_cumprod
    from webui.engine.samplers import find_sampler, find_schedule, get_sigmas, sample

    ms = ModelSchedule(sd_alphas_cumprod())
    s = find_sampler(name)
    sigmas = get_sigmas(s, find_schedule("karras"), 8, ms)

    def denoise(x, sigma):
        return 0.5 + 0.25 / (0.25 + sigma.reshape(-1, 1, 1, 1) ** 2) * (x - 0.5)

    def run(rng, seeds=(3, 4)):
        ns = NoiseSource((4, 8, 8), list(seeds), rng=rng)
        return sample(s, denoise, ns.first() * sigmas[0], sigmas, ms=ms, noise=ns)

    cpu, nv = run("CPU"), run("NV")
    assert torch.isfinite(nv).all() and not torch.allclose(cpu, nv)
    assert torch.equal(run("NV"), nv)
    assert torch.allclose(run("NV", (4,))[0], nv[1], atol=1e-5)  # batch-independent
    # the same initial noise with NV's later draws differs from CPU's later draws: not only first() follows
    ns_cpu, ns_nv = NoiseSource((4, 8, 8), [3, 4], rng="CPU"), NoiseSource((4, 8, 8), [3, 4], rng="NV")
    x0 = ns_cpu.first() * sigmas[0]
    ns_nv.first()
    a = sample(s, denoise, x0, sigmas, ms=ms, noise=ns_cpu)
    b = sample(s, denoise, x0, sigmas, ms=ms, noise=ns_nv)
    assert not torch.allclose(a, b)
