"""Benchmark: our txt2img loop vs a plain diffusers StableDiffusionPipeline, and launch time.

    python bench/bench_txt2img.py [--ckpt FILE] [--steps 20] [--size 256] [--repeats 3]

Without --ckpt a mid-size SD1-architecture checkpoint is built (real single-file layout) so the
UNet dominates the time as it does for real models. Both sides use the same weights, Euler, the same
steps, seed and CFG; the figure that matters is the ratio ours / diffusers (goal ≤ 1.02).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_bench_checkpoint(path: Path) -> Path:
    """A mid-size SD1-architecture model (UNet ~40M params) written in the original single-file layout."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tiny_models import TINY_CLIP_L, TINY_VAE
    from webui.models.ldm_writer import save_ldm_checkpoint

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(128, 256, 256), layers_per_block=2,
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=256, attention_head_dim=8, sample_size=32)
    vae = AutoencoderKL(**TINY_VAE, sample_size=256, scaling_factor=0.18215)
    te = CLIPTextModel(CLIPTextConfig(**dict(TINY_CLIP_L, hidden_size=256, intermediate_size=1024,
                                             num_attention_heads=4)))
    save_ldm_checkpoint(path, unet=unet, vae=vae, text_encoders=[te], family="sd1", metadata={}, dtype=torch.float16)
    return path


def bench_loop(ckpt: Path, steps: int, size: int, repeats: int) -> tuple[float, float]:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.jobs import JobState
    from webui.services.model_service import ModelService
    from webui.services.requests import Txt2ImgRequest
    from webui.services.txt2img import Txt2ImgService
    from webui.settings import Settings

    tmp = Path(tempfile.mkdtemp())
    reg = CheckpointRegistry(ckpt.parent, tmp / "cache")
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags([], None, "autocast", False, False))
    loaded = models.load(ckpt.name)
    settings = Settings.load(tmp / "config.json")
    settings.set("live_previews_enable", False, save=False)
    svc = Txt2ImgService(models, settings, tmp / "out")
    sd = loaded.sd
    req = Txt2ImgRequest(prompt="a red circle at the left on a blue background", negative_prompt="",
                         steps=steps, width=size, height=size, seed=1, sampler_name="Euler", cfg_scale=7)

    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", timestep_spacing="linspace",
                                   prediction_type=sd.prediction_type)
    pipe = StableDiffusionPipeline(vae=sd.vae, text_encoder=sd.text_encoders[0], tokenizer=sd.tokenizers[0],
                                   unet=sd.unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    dev = loaded.policy.device

    def ours() -> None:
        svc.run(req, JobState("b", "bench"), save=False)

    def theirs() -> None:
        g = torch.Generator("cpu").manual_seed(1)
        pipe(req.prompt, negative_prompt="", num_inference_steps=steps, guidance_scale=7, height=size,
             width=size, generator=g, output_type="pil")

    ours(), theirs()  # warm-up (allocator, kernels)
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for _ in range(repeats):  # interleaved so background load hits both sides alike
        for fn, acc in ((ours, t_ours), (theirs, t_theirs)):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            acc.append(time.perf_counter() - t0)
    return statistics.median(t_ours), statistics.median(t_theirs)


def bench_launch(repeats: int) -> list[tuple[float, float]]:
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--exit", "--skip-load-model-at-start",
                                "--data-dir", d, "--port", "0" if False else str(7890)],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
            text = p.stdout + p.stderr
            a = re.search(r"answering after ([\d.]+)s", text)
            b = re.search(r"ready at \S+ in ([\d.]+)s", text)
            if not (a and b):
                raise RuntimeError(text[-2000:])
            out.append((float(a.group(1)), float(b.group(1))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ckpt = args.ckpt
    if ckpt is None:
        ckpt = build_bench_checkpoint(Path(tempfile.mkdtemp()) / "bench-sd1.safetensors")
    ours, theirs = bench_loop(ckpt, args.steps, args.size, args.repeats)
    print(f"txt2img {args.size}x{args.size}, {args.steps} steps, Euler, CFG 7 on {ckpt.name}")
    print(f"  our loop:               {ours:.3f} s/image")
    print(f"  diffusers pipeline:     {theirs:.3f} s/image")
    print(f"  ratio ours/diffusers:   {ours / theirs:.3f}  (goal <= 1.02)")
    launches = bench_launch(3)
    print("launch.py --skip-load-model-at-start (3 runs):")
    print(f"  address answering:      {statistics.median(a for a, _ in launches):.2f} s")
    print(f"  UI ready (start→ready): {statistics.median(b for _, b in launches):.2f} s  (goal <= 4 s)")


if __name__ == "__main__":
    main()
