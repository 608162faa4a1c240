"""Benchmark: training speed and peak memory of the Train tab's trainers, and our LoRA trainer's
overhead against a minimal plain-PyTorch loop training the same adapters on the same data.

    python bench/bench_train.py [--steps 40] [--batch 4] [--rounds 2] [--threads N] [--cuda-sizes] [--skip-ti-hn]

CPU: the built-in shapes model (64×64).  CUDA (when available, with --cuda-sizes): SD1.5-size and
SDXL-size UNets with random weights built from diffusers configs (no downloads) around the tiny
text encoders / VAE, written in the real single-file layout and loaded through our loader.
Step times are the median interval between optimizer steps (taken at the trainer's pause point, so
dataset preparation and saving are not counted); peak memory is the device's max allocated bytes
on CUDA, the process's peak RSS above its level before the run on the CPU.  The LoRA ratio is
ours / plain (goal ≤ 1.05); both use the same adapters (build_lora, same seed), the same latents
and captions, AdamW, clip-norm 1.0, fp32 (CPU) or the model's dtype (CUDA).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BUILTIN = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"


class PeakMemory:
    """Peak device bytes (CUDA) or peak RSS growth (CPU, sampled every 2 ms) inside a ``with``."""

    def __init__(self, device) -> None:
        self.device, self.peak = device, 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self._stop = self._rss(), False
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop = True
            self._thread.join()


def build_checkpoint(path: Path, size: str):
    """SD1.5-size or SDXL-size UNet (random weights, real configs) with tiny text encoders / VAE."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from tiny_models import TINY_CLIP_L, TINY_OPEN_CLIP, TINY_VAE
    from webui.models.ldm_writer import save_ldm_checkpoint

    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_VAE, scaling_factor=0.18215)
    if size == "sd15":
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64)  # diffusers' defaults = SD1.5
        tes = [CLIPTextModel(CLIPTextConfig(**dict(TINY_CLIP_L, hidden_size=768, intermediate_size=3072,
                                                   num_attention_heads=12, num_hidden_layers=2)))]
        family = "sd1"
    else:
        unet = UNet2DConditionModel(
            sample_size=128, cross_attention_dim=2048, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        tes = [CLIPTextModel(CLIPTextConfig(**dict(TINY_CLIP_L, hidden_size=768, intermediate_size=3072,
                                                   num_attention_heads=12))),
               CLIPTextModelWithProjection(CLIPTextConfig(**dict(TINY_OPEN_CLIP, hidden_size=1280,
                                                                 intermediate_size=5120, num_attention_heads=20,
                                                                 projection_dim=1280)))]
        family = "sdxl"
    save_ldm_checkpoint(path, unet=unet, vae=vae, text_encoders=tes, family=family, metadata={}, dtype=torch.float16)
    return path


def make_env(ckpt: Path, work: Path, cuda: bool):
    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.jobs import JobState
    from webui.services.model_service import ModelService
    from webui.settings import Settings
    from webui.training.run import TrainPaths, TrainRun

    reg = CheckpointRegistry(work / "ckpts", work / "cache", builtin=[ckpt])
    (work / "ckpts").mkdir(parents=True, exist_ok=True)
    reg.refresh()
    policy = DevicePolicy.from_flags([] if cuda else ["all"], None, "autocast" if cuda else "full", False, False)
    models = ModelService(reg, policy, lora_dirs=[work / "Lora"], embeddings_dir=work / "embeddings",
                          hypernetwork_dir=work / "hypernetworks")
    loaded = models.load(ckpt.name)
    settings = Settings.load(work / "config.json")
    settings.set("training_write_csv_every", 0, save=False)
    (work / "textual_inversion_templates").mkdir(exist_ok=True)
    (work / "textual_inversion_templates" / "name_caption.txt").write_text("[name], [filewords]\n")

    def new_run(times: list[float]) -> TrainRun:
        run = TrainRun(model=loaded, options=settings, progress=JobState("bench", "bench"),
                       paths=TrainPaths(work, work / "embeddings", work / "hypernetworks", work / "Lora"))
        run.pause_point = lambda hidden: times.append(time.perf_counter())
        return run
    return models, loaded, new_run


def make_data(folder: Path, n: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    from tools.shapes_data import Scene, caption, render
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        s = Scene(rng.choice(["red", "blue", "green"]), rng.choice(["circle", "square"]), "white", "center")
        Image.fromarray(np.asarray(render(s))).resize((size, size)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(caption(s, with_position=False))
    return folder


def step_time(times: list[float], skip: int = 3) -> float:
    gaps = [b - a for a, b in zip(times, times[1:])][skip:]
    return statistics.median(gaps) if gaps else float("nan")


def plain_lora_loop(loaded, params, data: Path, steps: int) -> float:
    """The same adapters and data through a minimal loop: pre-encoded latents and captions,
    noise + timesteps, UNet forward, MSE against the target, backward, clip, AdamW."""
    import torch

    from webui.training.dataset import TrainingDataset
    from webui.training.lora_adapters import LoraSpec, build_lora
    sd, dev = loaded.sd, loaded.policy.device
    unet = sd.unet
    udtype = next(unet.parameters()).dtype
    vae = sd.vae

    def encode(px):
        p = next(vae.parameters())
        return vae.encode(px.to(p.device, p.dtype)).latent_dist
    ds = TrainingDataset(data, encode, width=params.training_width, height=params.training_height,
                         latent_scale=sd.scaling_factor)
    lat = torch.stack([e.latent for e in ds.entries]).to(dev)
    cond = loaded.encoder.encode([e.caption for e in ds.entries])
    cross, pooled = cond.cross_attn.to(dev, udtype), cond.pooled
    net = build_lora(sd, LoraSpec(rank=params.network_dim, alpha=params.network_alpha), seed=1, device=dev)
    net.apply_to()
    for p in unet.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(net.param_groups(1e-4))
    alphas = sd.alphas_cumprod.to(dev)
    b = params.batch_size
    gen = torch.Generator(dev).manual_seed(0)
    times = []
    unet.train()
    try:
        for i in range(steps):
            idx = torch.randint(0, len(ds), (b,), device=dev, generator=gen)
            x0 = lat[idx]
            t = torch.randint(0, alphas.shape[0], (b,), device=dev, generator=gen)
            noise = torch.randn(x0.shape, device=dev, generator=gen)
            a = alphas[t].view(b, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            kw = {}
            if sd.family == "sdxl":
                h, w = params.training_height, params.training_width
                ids = torch.tensor([h, w, 0, 0, h, w], device=dev, dtype=udtype).repeat(b, 1)
                kw["added_cond_kwargs"] = {"text_embeds": pooled[idx.cpu()].to(dev, udtype), "time_ids": ids}
            with torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" and udtype != torch.float32 \
                    else torch.autocast("cpu", enabled=False):
                out = unet(noisy.to(udtype), t, encoder_hidden_states=cross[idx.cpu()].to(dev), return_dict=False,
                           **kw)[0]
            target = noise if sd.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
            loss = torch.nn.functional.mse_loss(out.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())
    finally:
        net.remove()
        unet.eval()
    return step_time(times)


def bench_model(label: str, ckpt: Path, size: int, steps: int, batch: int, cuda: bool, ti_hn: bool,
                rounds: int = 2) -> list[tuple]:
    import torch

    from webui.training.params import EmbeddingTrainParams, HypernetworkTrainParams, LoraTrainParams
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    models, loaded, new_run = make_env(ckpt, work, cuda)
    dev = loaded.policy.device
    data = make_data(work / "data", 16, size)
    common = dict(data_root=str(data), training_width=size, training_height=size, batch_size=batch, steps=steps,
                  template_filename="name_caption.txt", create_image_every=0, preview_prompt="")
    rows = []
    if ti_hn:
        for kind in ("embedding", "hypernetwork"):
            try:
                if kind == "embedding":
                    from webui.training import embedding_files as ef
                    from webui.training.embedding_train import train_embedding as train
                    ef.create_embedding(loaded, work / "embeddings", "benchemb", 1, True, "shape")
                    prm = EmbeddingTrainParams(embedding_name="benchemb", save_embedding_every=0, **common)
                else:
                    from webui.training import hypernetwork_files as hf
                    from webui.training.hypernetwork_train import train_hypernetwork as train
                    width = loaded.sd.unet.config.cross_attention_dim
                    hf.create_hypernetwork(work / "hypernetworks", "benchhn", [width], True)
                    models.hypernetworks.refresh()
                    prm = HypernetworkTrainParams(hypernetwork_name="benchhn", save_hypernetwork_every=0, **common)
            except ImportError as e:
                print(f"  {label} {kind}: skipped ({e})")
                continue
            times: list[float] = []
            with PeakMemory(dev) as mem:
                train(new_run(times), prm)
            rows.append((label, kind, step_time(times), mem.peak, None))
    from webui.training.lora_train import train_lora
    lp = LoraTrainParams(name="benchlora", save_every=0, preview_every=0, seed=1, network_dim=8, network_alpha=8,
                         learn_rate="1e-4", **common)
    ours_t, plain_t, peaks = [], [], [0, 0]
    for _ in range(rounds):  # interleaved rounds, best of each: a shared machine's load hits both alike
        times: list[float] = []
        with PeakMemory(dev) as mem:
            train_lora(new_run(times), lp)
        ours_t.append(step_time(times))
        with PeakMemory(dev) as pmem:
            plain_t.append(plain_lora_loop(loaded, lp, data, steps))
        peaks = [max(peaks[0], mem.peak), max(peaks[1], pmem.peak)]
    rows.append((label, "lora", min(ours_t), peaks[0], (min(plain_t), peaks[1])))
    if cuda:
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    import torch
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2, help="LoRA ours/plain rounds (best of each)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cuda-sizes", action="store_true", help="also SD1.5- and SDXL-size UNets on CUDA")
    ap.add_argument("--skip-ti-hn", action="store_true", help="LoRA only")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{torch.cuda.get_device_name() if cuda else 'no CUDA'}")
    rows = bench_model("builtin 64px", BUILTIN, 64, args.steps, args.batch, cuda, not args.skip_ti_hn, args.rounds)
    if cuda and args.cuda_sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench-train-ckpt-"))
        for size_name, px in (("sd15", 512), ("sdxl", 1024)):
            ckpt = build_checkpoint(tmp / f"{size_name}.safetensors", size_name)
            rows += bench_model(f"{size_name} {px}px", ckpt, px, args.steps, 1, cuda, not args.skip_ti_hn, args.rounds)
    mib = 1024 * 1024
    print(f"\n{'model':<14} {'trainer':<13} {'steps/s':>8} {'s/step':>8} {'peak MiB':>9}   "
          f"{'plain steps/s':>13} {'plain MiB':>9} {'ours/plain':>10}")
    for label, kind, st, peak, plain in rows:
        line = f"{label:<14} {kind:<13} {1 / st:8.2f} {st:8.3f} {peak / mib:9.0f}"
        if plain is not None:
            line += f"   {1 / plain[0]:13.2f} {plain[1] / mib:9.0f} {st / plain[0]:10.3f}"
        print(line)


if __name__ == "__main__":
    main()
