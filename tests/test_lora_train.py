"""Train LoRA (issue 17, point 3 and the LoRA parts of 7): the built-in shapes model learns a shape it
cannot draw (a cross, drawn here, captioned with a word the model never saw), judged on pixels before
and after with the same prompts and seeds through the real txt2img service and a `<lora:…>` tag; the
saved file's kohya keys and ss_* values; snapshots, state, loss CSV, previews, settings; resume
continues the same run (same losses and adapters as one uninterrupted run); interrupt saves; the
base weights never change; SDXL with the text encoders trained gives lora_te1_/lora_te2_ keys.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from conftest import ROOT
from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.txt2img import Txt2ImgService
from webui.settings import Settings
from webui.training.logdir import read_loss_csv
from webui.training.lora_train import STATE_SUFFIX, find_resume_state, train_lora
from webui.training.params import LoraTrainParams
from webui.training.run import TrainPaths, TrainRun

sys.path.insert(0, str(ROOT))
from tools.shapes_data import COLORS  # noqa: E402

BUILTIN = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
PAIRS = [("red", "white"), ("yellow", "blue")]  # (shape colour, background) of the training crosses


# ------------------------------------------------------------------------------ data and judging

def draw_cross(fg: str, bg: str, dx: float, dy: float, r: float, size: int = 64, ss: int = 4) -> np.ndarray:
    """A plus-shaped cross (arms a third of its width) centred near the middle, anti-aliased."""
    big = size * ss
    img = np.empty((big, big, 3), np.uint8)
    img[:] = COLORS[bg]
    cx, cy, R = (size / 2 + dx) * ss, (size / 2 + dy) * ss, r * ss
    w, c = R / 3, tuple(int(v) for v in COLORS[fg])
    cv2.rectangle(img, (round(cx - R), round(cy - w)), (round(cx + R), round(cy + w)), c, -1)
    cv2.rectangle(img, (round(cx - w), round(cy - R)), (round(cx + w), round(cy + R)), c, -1)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def make_dataset(folder: Path, n: int = 16, seed: int = 0, pairs: list[tuple[str, str]] = PAIRS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        fg, bg = pairs[i % len(pairs)]
        img = draw_cross(fg, bg, rng.uniform(-2, 2), rng.uniform(-2, 2), rng.uniform(11, 14))
        Image.fromarray(img).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"a {fg} cross, on a {bg} background")
    return folder


def cross_score(image: Image.Image) -> float:
    """How much the largest non-background blob looks like a plus: its bounding box cut 3×3, the
    mean fill of the centre and the four edge cells minus the mean fill of the four corners
    (a drawn cross ≈ 0.9–1, a circle ≈ 0.5, a five-point star ≈ 0.4, a square 0, nothing 0)."""
    img = np.asarray(image.convert("RGB"), np.uint8)
    h, w = img.shape[:2]
    border = np.concatenate([img[:3].reshape(-1, 3), img[-3:].reshape(-1, 3), img[:, :3].reshape(-1, 3),
                             img[:, -3:].reshape(-1, 3)])
    bg = np.median(border, axis=0).astype(np.uint8)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    bg_lab = cv2.cvtColor(bg.reshape(1, 1, 3), cv2.COLOR_RGB2LAB)[0, 0].astype(np.float32)
    mask = (np.sqrt(((lab - bg_lab) ** 2).sum(2)) > 30).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return 0.0
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < 0.01 * h * w:
        return 0.0
    x, y, bw, bh = stats[best, :4]
    blob = (labels == best)[y:y + bh, x:x + bw].astype(np.float32)
    rows, cols = np.array_split(np.arange(bh), 3), np.array_split(np.arange(bw), 3)
    fill = np.array([[blob[np.ix_(r, c)].mean() for c in cols] for r in rows])
    return float(fill[[0, 1, 1, 1, 2], [1, 0, 1, 2, 1]].mean() - fill[[0, 0, 2, 2], [0, 2, 0, 2]].mean())


def test_cross_score_tells_a_cross_from_the_shapes_the_model_knows() -> None:
    from tools.shapes_data import Scene, render
    assert cross_score(Image.fromarray(draw_cross("red", "white", 0, 0, 12))) > 0.85
    for shape in ("circle", "square", "triangle", "star"):
        assert cross_score(Image.fromarray(render(Scene("red", shape, "white", "center")))) < 0.6, shape


# ------------------------------------------------------------------------------ the stack

def make_env(root: Path, ckpt: Path, *, builtin: bool = True) -> SimpleNamespace:
    """Our real services on one checkpoint, a Lora folder, and a TrainRun factory."""
    reg = CheckpointRegistry(root / "ckpts", root / "cache", builtin=[ckpt] if builtin else [])
    (root / "ckpts").mkdir(parents=True, exist_ok=True)
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags(["all"], None, "full", True, True), lora_dirs=[root / "Lora"])
    loaded = models.load(ckpt.name)
    settings = Settings.load(root / "config.json")
    settings.set("live_previews_enable", False, save=False)
    settings.set("training_write_csv_every", 1, save=False)
    txt2img = Txt2ImgService(models, settings, root / "out")
    # a template of the caption alone: the built-in model knows only caption-like prompts
    (root / "textual_inversion_templates").mkdir(exist_ok=True)
    (root / "textual_inversion_templates" / "caption_only.txt").write_text("[filewords]\n")

    def generate(prompt: str, seed: int, steps: int = 20) -> Image.Image:
        req = Txt2ImgRequest(prompt=prompt, steps=steps, seed=seed, sampler_name="DPM++ 2M", cfg_scale=7.0,
                             width=64, height=64)
        return txt2img.run(req, JobState("gen", "gen"), save=False).images[0]

    def preview(prompt: str, negative_prompt: str, steps: int, sampler_name: str, cfg_scale: float, seed: int,
                width: int, height: int) -> tuple[Image.Image, str]:
        req = Txt2ImgRequest(prompt=prompt, negative_prompt=negative_prompt, steps=steps, sampler_name=sampler_name,
                             cfg_scale=cfg_scale, seed=seed, width=width, height=height)
        res = txt2img.run(req, JobState("preview", "preview"), save=False)
        return res.images[0], res.infotexts[0]

    def make_run(pause_point=None, with_preview: bool = True) -> TrainRun:
        run = TrainRun(model=loaded, options=settings, progress=JobState("train", "train"),
                       paths=TrainPaths(root, root / "embeddings", root / "hypernetworks", root / "Lora"),
                       preview=preview if with_preview else None)
        if pause_point is not None:
            run.pause_point = pause_point
        return run

    return SimpleNamespace(root=root, models=models, model=loaded, settings=settings, generate=generate,
                           make_run=make_run)


def params(data: Path, **kw) -> LoraTrainParams:
    base = dict(name="crossy", data_root=str(data), training_width=64, training_height=64, batch_size=4,
                template_filename="caption_only.txt", network_dim=8, network_alpha=8.0, learn_rate="1e-3",
                save_every=0, preview_every=0, seed=7)
    base.update(kw)
    return LoraTrainParams(**base)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread: None) -> None:
    """Every test here trains the tiny model: one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("lora-train")
    e = make_env(root, BUILTIN)
    e.data = make_dataset(root / "crosses")
    return e


def unet_fingerprint(model) -> str:
    import hashlib
    h = hashlib.sha256()
    for m in [model.sd.unet, *model.sd.text_encoders]:
        for k, v in m.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def forward_hook_count(model) -> int:
    return sum(len(m._forward_hooks) for part in [model.sd.unet, *model.sd.text_encoders] for m in part.modules())


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


# ------------------------------------------------------------------------------ outputs

def test_file_metadata_outputs_and_pause_points(env) -> None:
    """A short run: kohya's layout and ss_* values from the run, snapshots + state + loss CSV +
    previews + settings in the log dir, progress text; generation at a pause point sees the model
    without the adapters; afterwards the base is bit-identical, no hooks remain, and the new file
    is in our Lora list."""
    model = env.model
    prompt = "a red cross, on a white background"
    baseline = np.asarray(env.generate(prompt, 5, steps=6))
    before, hooks, grads = unet_fingerprint(model), forward_hook_count(model), \
        [p.requires_grad for p in model.sd.unet.parameters()]
    paused: list[int] = []

    def pause_point(hidden) -> None:
        paused.append(len(paused) + 1)
        if len(paused) == 2:  # a generation served between training steps: the adapters are off
            with hidden():
                assert np.array_equal(np.asarray(env.generate(prompt, 5, steps=6)), baseline)

    run = env.make_run(pause_point)
    p = params(env.data, name="crossy-meta", steps=4, batch_size=2, save_every=2, preview_every=2, preview_steps=4,
               preview_prompt=prompt, preview_seed=3, mixed_precision="fp16")
    out = train_lora(run, p)
    assert not out.interrupted and out.step == 4 and paused == [1, 2, 3, 4]
    assert out.path == env.root / "Lora" / "crossy-meta.safetensors"
    assert "full precision" in out.message  # fp16 asked for on the CPU: trained in fp32, said so
    assert run.progress.sampling_step == 4 and run.progress.sampling_steps == 4
    assert run.progress.textinfo.startswith("[crossy-meta] step 4/4, loss ") and run.progress.textinfo.endswith("lr 0.001")

    tensors, meta = read_file(out.path)
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert all(m.startswith("lora_unet_") for m in modules) and len(modules) > 20
    assert set(tensors) == {f"{m}.{s}" for m in modules for s in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert {t.dtype for t in tensors.values()} == {torch.float16}
    assert any(float(t.abs().max()) > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))  # it trained
    expected = {"ss_output_name": "crossy-meta", "ss_network_module": "networks.lora", "ss_network_dim": "8",
                "ss_network_alpha": "8.0", "ss_steps": "4", "ss_max_train_steps": "4", "ss_num_train_images": "16",
                "ss_batch_size_per_device": "2", "ss_resolution": "(64, 64)", "ss_learning_rate": "0.001",
                "ss_unet_lr": "0.001", "ss_text_encoder_lr": "0.0", "ss_seed": "7", "ss_mixed_precision": "no",
                "ss_optimizer": "torch.optim.adamw.AdamW", "ss_lr_scheduler": "constant", "ss_epoch": "1",
                "ss_num_epochs": "1", "ss_gradient_checkpointing": "False", "ss_enable_bucket": "False",
                "ss_sd_model_name": BUILTIN.name, "ss_base_model_version": "sd_v1_v", "ss_v2": "False"}
    assert {k: meta.get(k) for k in expected} == expected
    from webui.hashes import legacy_model_hash
    assert meta["ss_sd_model_hash"] == legacy_model_hash(BUILTIN)
    assert len(meta["ss_new_sd_model_hash"]) == 64 and len(meta["sshs_model_hash"]) == 64
    assert json.loads(meta["ss_tag_frequency"]) == {"crosses": {"a red cross": 8, "on a white background": 8,
                                                                "a yellow cross": 8, "on a blue background": 8}}

    log_root = out.log_dir
    assert log_root.parent.parent == env.root / "lora_training"  # relative log dir: under the data dir
    assert sorted(q.name for q in (log_root / "loras").iterdir()) == ["crossy-meta-2.safetensors",
                                                                      "crossy-meta-4.safetensors"]
    assert read_file(log_root / "loras" / "crossy-meta-2.safetensors")[1]["ss_steps"] == "2"
    assert (log_root / f"crossy-meta{STATE_SUFFIX}").is_file()
    assert find_resume_state(env.root / "lora_training", "crossy-meta") == log_root / f"crossy-meta{STATE_SUFFIX}"
    rows = read_loss_csv(out.loss_csv)
    assert [r.step for r in rows] == [1, 2, 3, 4] and all(r.learn_rate == 1e-3 and r.loss > 0 for r in rows)
    assert [q.name for q in out.previews] == ["crossy-meta-2.png", "crossy-meta-4.png"]
    with Image.open(out.previews[0]) as im:
        assert im.size == (64, 64) and im.info["parameters"].startswith(prompt)
    settings = json.loads(next(log_root.glob("settings-*.json")).read_text())
    assert settings["seed"] == 7 and settings["network_dim"] == 8

    assert unet_fingerprint(model) == before and forward_hook_count(model) == hooks
    assert [p.requires_grad for p in model.sd.unet.parameters()] == grads and not model.sd.unet.training
    env.models.loras.refresh()  # what the service calls after a run (GET /loras does it too)
    assert "crossy-meta" in env.models.loras.files


def test_resume_continues_the_same_run_and_interrupt_saves(env) -> None:
    """Interrupted after step 3 (file + state saved), then resumed to step 6: the losses of every
    step and the final adapters equal one uninterrupted 6-step run with the same seed."""
    whole = train_lora(env.make_run(with_preview=False), params(env.data, name="whole", steps=6, batch_size=2,
                                                                  gradient_step=2, lr_warmup_steps=2, seed=11))
    calls: list[int] = []
    run = env.make_run(with_preview=False)

    def stop_after_three(hidden) -> None:
        calls.append(1)
        if len(calls) == 3:
            run.progress.interrupt()

    run.pause_point = stop_after_three
    p = params(env.data, name="parts", steps=6, batch_size=2, gradient_step=2, lr_warmup_steps=2, seed=11)
    first = train_lora(run, p)
    assert first.interrupted and first.step == 3 and "interrupted at 3 steps" in first.info
    assert read_file(first.path)[1]["ss_steps"] == "3"
    assert (first.log_dir / f"parts{STATE_SUFFIX}").is_file()
    p.resume, p.seed = True, -1  # the saved run's seed is used
    second = train_lora(env.make_run(with_preview=False), p)
    assert not second.interrupted and second.step == 6
    a, b = read_loss_csv(whole.loss_csv), read_loss_csv(second.loss_csv)
    assert [r.step for r in b] == [1, 2, 3, 4, 5, 6]
    assert [(r.loss, r.learn_rate) for r in a] == [(r.loss, r.learn_rate) for r in b]
    ta, ma = read_file(whole.path)
    tb, mb = read_file(second.path)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert mb["ss_seed"] == "11" and mb["ss_steps"] == "6"
    with pytest.raises(ValueError, match="already been trained beyond specified max steps"):
        train_lora(env.make_run(with_preview=False), p)  # resumed at its max: nothing to train (A1111)


def test_refusals(env) -> None:
    with pytest.raises(ValueError, match="AdamW8bit"):
        train_lora(env.make_run(), params(env.data, steps=2, optimizer_type="AdamW8bit"))
    with pytest.raises(ValueError, match="no saved training state"):
        train_lora(env.make_run(), params(env.data, name="never-trained", steps=2, resume=True))
    with pytest.raises(ValueError, match="'1e-3:x'"):
        train_lora(env.make_run(), params(env.data, steps=2, learn_rate="1e-3:x, 1e-4"))
    with pytest.raises(ValueError, match="does not exist"):
        train_lora(env.make_run(), params(env.root / "missing", steps=2))


def test_sdxl_with_text_encoders_writes_te1_te2_keys(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpts" / "tiny-sdxl.safetensors", "sdxl")
    e = make_env(tmp_path, ckpt, builtin=False)
    data = make_dataset(tmp_path / "data", n=4)
    before = unet_fingerprint(e.model)
    out = train_lora(e.make_run(with_preview=False),
                     params(data, name="xl", steps=2, batch_size=2, network_dim=4, network_alpha=1.0,
                            text_encoder_lr=1e-3, gradient_checkpointing=True))
    assert out.step == 2
    tensors, meta = read_file(out.path)
    prefixes = {k.split("_")[0] + "_" + k.split("_")[1] for k in tensors}
    assert prefixes == {"lora_te1", "lora_te2", "lora_unet"}
    for te in ("lora_te1_", "lora_te2_"):  # the text-encoder adapters were trained, not just saved
        assert any(float(t.abs().max()) > 0 for k, t in tensors.items() if k.startswith(te) and "lora_up" in k)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_text_encoder_lr"] == "0.001"
    assert meta["ss_gradient_checkpointing"] == "True" and meta["ss_network_alpha"] == "1.0"
    assert unet_fingerprint(e.model) == before and not e.model.sd.unet.is_gradient_checkpointing
    # our loader applies every module of it to the model it was trained on
    from webui.prompts.extra_networks import ExtraNetworkParams
    report = e.models.loras.activate(e.model, [ExtraNetworkParams(items=["xl", "1"])])
    assert not report.warnings and "xl" in report.infotext.get("Lora hashes", "")
    e.models.loras.activate(e.model, [])


# ------------------------------------------------------------------------------ it learns

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lora_learns_a_shape_the_model_cannot_draw(env) -> None:
    """Before: "a red cross" draws the model's nearest shape (a five-point star), judged on pixels.
    After 300 steps on 16 drawn red crosses (LoCon: the shape lives in the ResNet convs too), the
    same prompts and seeds with `<lora:crosses:1>` draw a four-armed shape that scores as a cross;
    without the tag the images are exactly the untrained ones (the base is untouched)."""
    seeds, prompt = (1, 2, 3), "a red cross, on a white background"
    data = make_dataset(env.root / "red-crosses", pairs=[("red", "white")])
    before = [env.generate(prompt, s) for s in seeds]
    # 300 steps at 3e-3 leave a margin: a 200-step run moved by float rounding alone (BLAS results
    # depend on memory alignment, so a long test process differs from a fresh one) once ended at 0.55
    out = train_lora(env.make_run(with_preview=False), params(data, name="crosses", steps=300, learn_rate="3e-3",
                                                                network_target="locon", seed=3))
    assert out.path == env.root / "Lora" / "crosses.safetensors"
    after = [env.generate(prompt + " <lora:crosses:1>", s) for s in seeds]
    again = [env.generate(prompt, s) for s in seeds]
    sb, sa = [cross_score(i) for i in before], [cross_score(i) for i in after]
    print(f"cross score before {sb}, after {sa}")
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, before))
    assert max(sb) < 0.62  # the model cannot draw it (measured 0.49, 0.59, 0.52)
    # measured 0.79, 0.78, 0.80 (training seeds 4 and 5: 0.80, 0.71, 0.79 and above)
    assert min(sa) > 0.65 and sum(sa) / 3 > sum(sb) / 3 + 0.15, (sb, sa)
    from bench.shape_judge import judge
    verdicts = [judge(i) for i in after]
    assert all(v.background == "white" and v.color == "red" for v in verdicts), verdicts
