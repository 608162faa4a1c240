"""Quality and speed of the built-in shapes demo model (and its canny ControlNet), judged on pixels.

    python bench/bench_default_model.py [--ckpt FILE] [--controlnet FILE] [--seeds 2] [--prompts 24]

Generates every prompt through our own txt2img service (the UI's default sampler DPM++ 2M with
its automatic Karras schedule, 20 steps, CFG 7, the model's native size), once per seed, for
combinations seen in training and for the held-out ones; bench/shape_judge.py scores background
colour, shape colour, shape class, all three together, and the position word.  The ControlNet is
driven with diffusers' ControlNet pipeline on canny edge maps whose position contradicts the
prompt.  Prints the scores and the seconds per image, and writes a contact sheet PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.shape_judge import judge  # noqa: E402
from tools.shapes_data import POSITIONS, Scene, caption, edge_map, evaluation_scenes, render  # noqa: E402

DEFAULT_CKPT = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
DEFAULT_CN = ROOT / "models" / "ControlNet" / "control_shapes-demo-v4_canny.safetensors"
KEYS = ("background", "color", "shape", "all_three", "position")
TARGETS = {"background": 0.90, "color": 0.90, "shape": 0.80, "all_three": 0.70, "position": 0.75}


def make_service(ckpt: Path):
    """Our real service stack on one checkpoint (no server): registry -> model service -> txt2img."""
    from webui.memory.devices import DevicePolicy
    from webui.models.registry import CheckpointRegistry
    from webui.services.model_service import ModelService
    from webui.services.txt2img import Txt2ImgService
    from webui.settings import Settings

    tmp = Path(tempfile.mkdtemp())
    reg = CheckpointRegistry(tmp / "empty", tmp / "cache", builtin=[ckpt])
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags([], None, "autocast", False, False))
    loaded = models.load(ckpt.name)
    settings = Settings.load(tmp / "config.json")
    settings.set("live_previews_enable", False, save=False)
    return Txt2ImgService(models, settings, tmp / "out"), loaded


def generate(svc, prompt: str, seed: int, steps: int, cfg: float, sampler: str):
    from webui.services.jobs import JobState
    from webui.services.requests import Txt2ImgRequest

    req = Txt2ImgRequest(prompt=prompt, negative_prompt="", steps=steps, seed=seed, sampler_name=sampler,
                         cfg_scale=cfg, save_images=False, do_not_save_grid=True, do_not_save_samples=True)
    return svc.run(req, JobState("bench", "bench"), save=False).images[0]


def tally(rows: list[dict[str, bool]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / max(1, len(rows)) for k in KEYS}


def controlnet_eval(loaded, cn_path: Path, scenes: list[Scene], seeds: list[int], steps: int, cfg: float):
    """Edge map of the scene at its position; the prompt names a different position."""
    import numpy as np
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionControlNetPipeline
    from PIL import Image

    from webui.models.controlnet_io import load_controlnet

    sd = loaded.sd
    cn = load_controlnet(cn_path)
    # the checkpoint's own noise schedule (it may carry one, as A1111 reads it) as diffusers' betas
    ac = sd.alphas_cumprod.double()
    betas = (1 - ac / torch.cat([ac.new_ones(1), ac[:-1]])).float().numpy()
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=betas, use_karras_sigmas=True,
                                        prediction_type=sd.prediction_type)
    pipe = StableDiffusionControlNetPipeline(vae=sd.vae, text_encoder=sd.text_encoders[0], tokenizer=sd.tokenizers[0],
                                             unet=sd.unet, controlnet=cn, scheduler=sched, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    positions = list(POSITIONS)
    rows, cells = [], []
    for i, scene in enumerate(scenes):
        other = positions[(positions.index(scene.position) + 1 + i % 4) % len(positions)]
        prompt = caption(scene, position_word=other)
        edges = Image.fromarray(edge_map(render(scene)))
        for seed in seeds:
            img = pipe(prompt, image=edges, num_inference_steps=steps, guidance_scale=cfg, height=sd.default_size,
                       width=sd.default_size, generator=torch.Generator().manual_seed(seed)).images[0]
            v = judge(np.asarray(img))
            rows.append({"position": v.position == scene.position, "shape": v.shape == scene.shape,
                         "prompt_position": v.position == other})
            cells.append((edges, img, f"{prompt} (edges: {scene.position})", v.position == scene.position))
    return rows, cells


def launch_to_first_image() -> tuple[float, float]:
    """Fresh data folder, empty models folder: seconds from starting launch.py to (a) the UI
    answering, (b) the first txt2img image back from the API (the built-in model loads meanwhile)."""
    import socket
    import subprocess

    import requests

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = Path(tempfile.mkdtemp())
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--data-dir", str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ui = None
        while True:
            try:
                r = requests.get(url + "/", timeout=2)
                if r.status_code == 200 and "Starting" not in r.text[:2000] and ui is None:
                    ui = time.perf_counter() - t0
                r = requests.post(url + "/sdapi/v1/txt2img", json={"prompt": "a red circle on a blue background"},
                                  timeout=300)
                if r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json") \
                        and r.json().get("images"):
                    return ui or time.perf_counter() - t0, time.perf_counter() - t0
            except requests.ConnectionError:
                pass
            if time.perf_counter() - t0 > 300:
                raise RuntimeError("no image within 300 s")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def contact_sheet(groups: list[tuple[str, list[tuple]]], path: Path, scale: int = 2) -> Path:
    """One row per prompt: reference drawing, then each seed's image; a green/red bar says whether
    background, shape colour and shape were all judged right (ControlNet rows: the position)."""
    from PIL import Image, ImageDraw

    cell = 64 * scale
    label_w = 360
    rows = sum(len(g[1]) for g in groups) + len(groups)
    ncols = max(len(r[1]) for _, g in groups for r in g) + 1
    sheet = Image.new("RGB", (label_w + ncols * (cell + 4), rows * (cell + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, items in groups:
        draw.text((4, y + cell // 2), title, fill="black")
        y += cell + 4
        for ref, images, text, oks in items:
            draw.text((4, y + 4), text[:58], fill="black")
            if len(text) > 58:
                draw.text((4, y + 18), text[58:116], fill="black")
            x = label_w
            sheet.paste(ref.resize((cell, cell), Image.NEAREST), (x, y))
            x += cell + 4
            for img, ok in zip(images, oks):
                sheet.paste(img.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
                draw.rectangle([x, y + cell - 6, x + cell - 1, y + cell - 1], fill=(0, 170, 0) if ok else (210, 0, 0))
                x += cell + 4
            y += cell + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=DEFAULT_CKPT)
    p.add_argument("--controlnet", type=Path, default=DEFAULT_CN)
    p.add_argument("--prompts", type=int, default=24, help="prompts per group (seen / held out)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--sampler", default="DPM++ 2M")
    p.add_argument("--sheet", type=Path, default=ROOT / "bench" / "out" / "default_model_sheet.png")
    p.add_argument("--controlnet-prompts", type=int, default=12)
    p.add_argument("--launch", action="store_true", help="also time launch.py -> first image on a fresh folder")
    args = p.parse_args(argv)
    if args.launch:
        ui, first = launch_to_first_image()
        print(f"fresh install: UI answers after {ui:.1f} s, first image after {first:.1f} s")

    svc, loaded = make_service(args.ckpt)
    seeds = list(range(1, args.seeds + 1))
    print(f"model {args.ckpt.name}: {loaded.sd.description}, native size {loaded.sd.default_size}px, "
          f"{args.sampler} (Automatic schedule), {args.steps} steps, CFG {args.cfg}")
    generate(svc, "a red circle", 0, args.steps, args.cfg, args.sampler)  # warm-up
    groups, results, times = [], {}, []
    for held in (False, True):
        name = "held-out" if held else "seen"
        rows, items = [], []
        for scene in evaluation_scenes(args.prompts, held_out=held):
            prompt = caption(scene)
            imgs, oks = [], []
            for seed in seeds:
                t0 = time.perf_counter()
                img = generate(svc, prompt, seed, args.steps, args.cfg, args.sampler)
                times.append(time.perf_counter() - t0)
                s = judge(img).score(scene)
                rows.append(s)
                imgs.append(img)
                oks.append(s["all_three"] and s["position"])
            items.append((Image.fromarray(render(scene)), imgs, prompt, oks))
        results[name] = tally(rows)
        groups.append((f"{name} combinations", items))

    print(f"\n{'':10}" + "".join(f"{k:>12}" for k in KEYS))
    for name, r in results.items():
        print(f"{name:10}" + "".join(f"{100 * r[k]:>11.0f}%" for k in KEYS))
    print(f"{'target':10}" + "".join(f"{100 * TARGETS[k]:>11.0f}%" for k in KEYS) + "   (held-out)")
    held = results["held-out"]
    print("held-out targets met: " + ", ".join(f"{k} {'yes' if held[k] >= TARGETS[k] else 'NO'}" for k in KEYS))
    times.sort()
    print(f"\nspeed: median {times[len(times) // 2]:.3f} s per {loaded.sd.default_size}px image "
          f"({args.steps} steps, batch 1, {len(times)} images, torch threads {__import__('torch').get_num_threads()})")

    if args.controlnet and args.controlnet.is_file() and args.controlnet_prompts:
        scenes = evaluation_scenes(args.controlnet_prompts, held_out=False, seed=11)
        rows, cells = controlnet_eval(loaded, args.controlnet, scenes, seeds, args.steps, args.cfg)
        n = len(rows)
        print(f"\nControlNet (edges at one position, prompt names another; {n} images): "
              f"shape drawn where the edges are {100 * sum(r['position'] for r in rows) / n:.0f}%, "
              f"where the prompt says {100 * sum(r['prompt_position'] for r in rows) / n:.0f}%, "
              f"shape class right {100 * sum(r['shape'] for r in rows) / n:.0f}%")
        per = len(seeds)
        items = [(cells[i][0], [c[1] for c in cells[i:i + per]], cells[i][2], [c[3] for c in cells[i:i + per]])
                 for i in range(0, len(cells), per)]
        groups.append(("ControlNet (first column: edge map)", items))
    print(f"contact sheet: {contact_sheet(groups, args.sheet)}")


if __name__ == "__main__":
    main()
