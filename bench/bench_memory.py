"""Memory manager figures on a GPU: UNet step speed and peak VRAM per memory mode, and the smallest
VRAM budget each model runs in.

    python bench/bench_memory.py                      # CUDA: SD1.5- and SDXL-size UNets, fp16
    python bench/bench_memory.py --device cpu --tiny  # smoke run of the same code on the CPU

For an SD1.5-size and an SDXL-size UNet (diffusers' layouts of those models, random weights,
fp16) and each size (512², 1024²), it runs classifier-free-guidance steps (batch of 2 rows)
through our MemoryManager in each mode: everything resident (highvram), automatic on a card with
room, medvram, lowvram (every block streamed), and automatic under a budget that forces partial
streaming.  It prints it/s, the ratio to the resident step time and the peak VRAM, all measured
side by side in one run.  Then it finds, by bisection, the smallest `--vram-budget-mb` at which a
step completes: the budget is made real with `torch.cuda.set_per_process_memory_fraction`, so an
activation that does not fit raises a genuine out-of-memory error.

Goals (issue 7): SD1.5 at 512² within 2048 MB, SDXL at 1024² within 4096 MB; automatic with room
to spare no slower than resident (ratio <= 1.0 within noise); lowvram at most 2x resident.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from webui.memory.estimates import MB, unet_activation_bytes  # noqa: E402
from webui.memory.manager import MemoryManager  # noqa: E402

SD15 = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
SDXL = dict(sample_size=128, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
            block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)


def build_unet(kind: str, dtype: torch.dtype) -> tuple[torch.nn.Module, str, int]:
    from diffusers import UNet2DConditionModel

    if kind == "tiny":
        from tiny_models import build_tiny_models
        return build_tiny_models("sd1").unet, "sd1", 768
    cfg = SD15 if kind == "sd15" else SDXL
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**cfg)
    return unet.to(dtype).eval().requires_grad_(False), ("sdxl" if kind == "sdxl" else "sd1"), cfg["cross_attention_dim"]


def step_inputs(unet: torch.nn.Module, family: str, size: int, device: torch.device, dtype: torch.dtype) -> dict:
    rows = 2
    lat = size // 8
    x = torch.randn(rows, 4, lat, lat, device=device, dtype=dtype)
    ctx = torch.randn(rows, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    kw = {"sample": x, "timestep": torch.tensor([500.0] * rows, device=device), "encoder_hidden_states": ctx}
    if family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(rows, 1280, device=device, dtype=dtype),
                                   "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * rows,
                                                            device=device, dtype=dtype)}
    return kw


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(mm: MemoryManager, unet: torch.nn.Module, family: str, size: int, device: torch.device,
                dtype: torch.dtype, steps: int) -> tuple[float, float]:
    """(seconds per step, peak MB allocated) for `steps` steps after one warm-up step."""
    part = mm.register(unet, f"{family} UNet", "unet", family)
    try:
        kw = step_inputs(unet, family, size, device, dtype)
        act = unet_activation_bytes(2, size, size, dtype.itemsize, family)
        with torch.inference_mode():
            with mm.use(part, activations=act):
                unet(**kw)
            sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                with mm.use(part, activations=act):
                    unet(**kw)
            sync(device)
            dt = (time.perf_counter() - t0) / steps
        peak = torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else mm.device_bytes() / MB
        return dt, peak
    finally:
        mm.forget(part)
        del kw
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def fits(unet, family: str, size: int, device: torch.device, dtype: torch.dtype, budget_mb: int) -> bool:
    """One step under a budget that is real: the process may not allocate more than it."""
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device)[1]
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget_mb * MB / total), device)
    try:
        timed_steps(MemoryManager(device, "auto", budget_mb=budget_mb), unet, family, size, device, dtype, 1)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()


def smallest_budget(unet, family: str, size: int, device: torch.device, dtype: torch.dtype, hi: int) -> int | None:
    lo = 0
    if not fits(unet, family, size, device, dtype, hi):
        return None
    while hi - lo > max(1, hi // 50):  # to 2 %
        mid = (lo + hi) // 2
        if fits(unet, family, size, device, dtype, mid):
            hi = mid
        else:
            lo = mid
    return hi


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny UNet (CPU smoke run)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--models", default="sd15,sdxl")
    p.add_argument("--sizes", default="512,1024")
    p.add_argument("--no-search", action="store_true", help="skip the smallest-budget search")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    models = ["tiny"] if args.tiny else args.models.split(",")
    sizes = [64] if args.tiny else [int(s) for s in args.sizes.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, dtype {dtype}")
    for kind in models:
        unet, family, _ = build_unet(kind, dtype)
        wmb = sum(t.numel() * t.element_size() for t in unet.parameters()) / MB
        for size in sizes:
            act_mb = unet_activation_bytes(2, size, size, dtype.itemsize, family) / MB
            # a budget that holds about half the weights beside the activations: partial streaming
            half = wmb / 2 + act_mb + (256 if device.type == "cuda" else 0)
            big = None if device.type == "cuda" else 10 * (wmb + act_mb)  # the CPU needs a simulated card
            runs = [("resident (highvram)", "highvram", big), ("auto, room to spare", "auto", big),
                    ("medvram", "medvram", big), ("lowvram (all blocks streamed)", "lowvram", big),
                    (f"auto, budget {half:.0f} MB", "auto", half)]
            print(f"\n{kind} UNet ({wmb:.0f} MB weights), {size}x{size}, CFG batch of 2 rows, "
                  f"activation reserve {act_mb:.0f} MB")
            base = None
            for label, mode, budget in runs:
                mm = MemoryManager(device, mode, budget_mb=budget)
                try:
                    dt, peak = timed_steps(mm, unet, family, size, device, dtype, args.steps)
                except torch.OutOfMemoryError as e:
                    print(f"  {label:34s} out of memory ({str(e).splitlines()[0][:80]})")
                    continue
                base = base or dt
                print(f"  {label:34s} {1 / dt:7.2f} it/s  x{dt / base:5.2f} of resident  peak {peak:8.0f} MB")
            if not args.no_search:
                least = smallest_budget(unet, family, size, device, dtype,
                                        int(2 * (wmb + act_mb)) + 1024 if device.type == "cuda" else int(wmb * 4) + 64)
                print(f"  smallest --vram-budget-mb that completes a step: "
                      f"{least if least is not None else 'none tried'} MB")
        del unet
        gc.collect()


if __name__ == "__main__":
    main()
