"""Check the NV random source (webui/engine/rng_philox.py) against torch.randn on a CUDA device.

    python bench/check_rng_cuda.py [--seeds 0 42 1234567 3306215427] [--draws 3]

For each seed and latent shape, draws `--draws` successive tensors from
torch.Generator("cuda").manual_seed(seed) and from rng_philox.Generator(seed) and prints the largest
absolute difference of each draw. Also checks NoiseSource(rng="GPU") against NoiseSource(rng="NV") (initial
noise, variation seed, ENSD stream, SDE Brownian tree).

Equality is expected (to ~1e-6: curand's fast float32 log/sincos against numpy) while a tensor has no more
elements than the randn kernel has threads (256 x min(ceil(n / 256), SMs x maxThreadsPerSM / 256)); past that
PyTorch gives each thread several elements and both A1111's NV source and this one diverge. Such shapes are
printed with "(over the thread count: divergence expected)" and do not fail the check.
Exit status 1 when an in-range difference exceeds --tol (default 1e-5), 2 without a CUDA device.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from webui.engine import rng_philox  # noqa: E402
from webui.engine.noise import NoiseSource  # noqa: E402

SHAPES = [(4, 8, 8), (4, 64, 64), (4, 96, 64), (4, 128, 128), (16, 128, 128), (4, 256, 256), (4, 512, 512)]


def thread_count(n: int) -> int:
    p = torch.cuda.get_device_properties(0)
    per_sm = getattr(p, "max_threads_per_multi_processor", 2048) // 256
    return 256 * min((n + 255) // 256, p.multi_processor_count * per_sm)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 42, 1234567, 3306215427])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to compare")
        return 2
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}")
    bad = 0
    for shape in SHAPES:
        n = math.prod(shape)
        over = n > thread_count(n)
        for seed in args.seeds:
            g = torch.Generator("cuda").manual_seed(seed)
            nv = rng_philox.Generator(seed)
            diffs = []
            t_nv = 0.0
            for _ in range(args.draws):
                ref = torch.randn(shape, device="cuda", generator=g).cpu()
                t = time.perf_counter()
                ours = torch.from_numpy(nv.randn(shape))
                t_nv += time.perf_counter() - t
                diffs.append(float((ours - ref).abs().max()))
            fail = not over and max(diffs) > args.tol
            bad += fail
            tag = "  (over the thread count: divergence expected)" if over else ("  FAIL" if fail else "")
            print(f"shape {str(shape):16s} n={n:8d} seed {seed:10d}: max |NV - cuda| per draw "
                  + " ".join(f"{d:.2e}" for d in diffs) + f"  (NV {t_nv / args.draws * 1e3:.1f} ms/draw){tag}")

    shape = (4, 64, 64)
    kw = dict(subseeds=[7, 8], subseed_strength=0.3, eta_noise_seed_delta=31337)
    gpu = NoiseSource(shape, [1, 2], rng="GPU", **kw)
    nvs = NoiseSource(shape, [1, 2], rng="NV", **kw)
    a, b = gpu.first(), nvs.first()
    d_first = float((a - b).abs().max())
    d_next = max(float((gpu.next_like(a) - nvs.next_like(b)).abs().max()) for _ in range(3))
    sig = torch.tensor([14.6, 7.0, 3.0, 1.0, 0.3, 0.03, 0.0])
    x = torch.zeros(2, *shape)
    tg, tn = gpu.brownian_sampler(x, sig), nvs.brownian_sampler(x, sig)
    d_tree = max(float((tg(sig[i], sig[i + 1]) - tn(sig[i], sig[i + 1])).abs().max()) for i in range(5))
    print(f"NoiseSource GPU vs NV (variation seed 0.3, ENSD): first {d_first:.2e}, ENSD draws {d_next:.2e}, "
          f"Brownian tree increments {d_tree:.2e}; GPU source used: {gpu.rng}, tree on {gpu.seeds.brownian}")
    bad += d_first > 10 * args.tol or d_next > args.tol or d_tree > 100 * args.tol
    print("OK" if not bad else f"{bad} comparison(s) over tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
