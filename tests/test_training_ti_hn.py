"""Textual-inversion and hypernetwork training (webui/training/{embedding,hypernetwork}_train.py) with
real torch on the built-in shapes model, datasets drawn by tools/shapes_data.py and images judged on
pixels (bench/shape_judge.py); no server: a TrainRun is built directly, previews go through the
real txt2img service."""
from __future__ import annotations

import csv
import datetime
import json
import random
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.memory.manager import MemoryManager
from webui.models.registry import CheckpointRegistry
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.txt2img import Txt2ImgService
from webui.settings import Settings
from webui.training import embedding_files as ef
from webui.training import hypernetwork_files as hf
from webui.training.embedding_train import train_embedding
from webui.training.hypernetwork_train import train_hypernetwork
from webui.training.image_embedding import CHUNK_KEY, embedding_from_b64, read_image_embedding, save_image_embedding
from webui.training.logdir import read_loss_csv
from webui.training.params import EmbeddingTrainParams, HypernetworkTrainParams
from webui.training.run import TrainPaths, TrainRun

sys.path.insert(0, str(ROOT))
from bench.shape_judge import judge  # noqa: E402
from tools.shapes_data import Scene, caption, render  # noqa: E402

BUILTIN = ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors"
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------ setup

def _stack(root: Path, ckpt: Path, memory: MemoryManager | None = None) -> SimpleNamespace:
    """Registry -> model service (with embeddings and hypernetwork folders) -> txt2img, as the app wires them."""
    for d in ("embeddings", "hypernetworks", "empty"):
        (root / d).mkdir(parents=True, exist_ok=True)
    reg = CheckpointRegistry(root / "empty", root / "cache", builtin=[ckpt])
    reg.refresh()
    models = ModelService(reg, DevicePolicy.from_flags([], None, "autocast", False, False),
                          embeddings_dir=root / "embeddings", hypernetwork_dir=root / "hypernetworks", memory=memory)
    model = models.load(ckpt.name)
    settings = Settings.load(root / "config.json")
    for key, value in (("live_previews_enable", False), ("training_write_csv_every", 1)):
        settings.set(key, value, save=False)
    return SimpleNamespace(root=root, models=models, model=model, settings=settings,
                           txt2img=Txt2ImgService(models, settings, root / "out"))


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread: None) -> None:
    """Every test here trains the tiny model: one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return _stack(tmp_path_factory.mktemp("ti-hn"), BUILTIN)


def _generate(env: SimpleNamespace, prompt: str, seed: int, steps: int = 10, width: int = 64,
              height: int = 64, **kw: Any) -> tuple[Image.Image, str]:
    req = Txt2ImgRequest(prompt=prompt, steps=steps, seed=seed, width=width, height=height, sampler_name=kw.pop(
        "sampler_name", "DPM++ 2M"), save_images=False, do_not_save_grid=True, do_not_save_samples=True, **kw)
    res = env.txt2img.run(req, JobState("gen", "gen"), save=False)
    # the networks a prompt named stay hooked in until the next job: the training service clears
    # them before training steps, so must a test that trains after generating with <hypernet:...>
    env.models.activate_networks(env.model, {})
    return res.images[0], res.infotexts[0]


def _preview(env: SimpleNamespace):
    def preview(prompt: str, negative_prompt: str, steps: int, sampler_name: str, cfg_scale: float, seed: int,
                width: int, height: int) -> tuple[Image.Image, str]:
        return _generate(env, prompt, seed, min(steps, 6), width, height, negative_prompt=negative_prompt,
                         sampler_name=sampler_name, cfg_scale=cfg_scale)
    return preview


def _run(env: SimpleNamespace, *, preview: bool = False, progress: JobState | None = None,
         embeddings_dir: Path | None = None, hypernetwork_dir: Path | None = None, pause_point=None) -> TrainRun:
    paths = TrainPaths(env.root, embeddings_dir or env.root / "embeddings",
                       hypernetwork_dir or env.root / "hypernetworks", env.root / "Lora")
    run = TrainRun(env.model, env.settings, paths, progress or JobState("train", "train"),
                   preview=_preview(env) if preview else None)
    if pause_point is not None:
        run.pause_point = pause_point
    return run


def _draw(folder: Path, scenes: list[Scene], captions: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        Image.fromarray(render(scene)).save(folder / f"{i:02d}.png")
        if captions is not None:
            (folder / f"{i:02d}.txt").write_text(captions[i], encoding="utf-8")
    return folder


def _template(root: Path, *lines: str) -> str:
    path = root / f"tpl-{abs(hash(lines))}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _jitter(scene: Scene, n: int, seed: int = 0) -> list[Scene]:
    rng = random.Random(seed)
    return [Scene(scene.color, scene.shape, scene.background, scene.position, dx=rng.uniform(-2, 2),
                  dy=rng.uniform(-2, 2), radius=rng.uniform(9, 11)) for _ in range(n)]


def _weights_digest(model) -> float:
    sd = model.sd
    return float(sum(p.double().sum() for m in (sd.unet, sd.vae, *sd.text_encoders) for p in m.parameters()))


def _tally(verdicts: list[dict[str, bool]]) -> dict[str, int]:
    return {k: sum(v[k] for v in verdicts) for k in verdicts[0]}


# ------------------------------------------------------------------------------------------ learning proofs

SUBJECT = Scene("yellow", "star", "purple", "top")
SEEDS = (1, 2, 3, 4)


@pytest.mark.slow
def test_embedding_learns_a_subject_its_name_alone_draws(env: SimpleNamespace, tmp_path: Path) -> None:
    """A yellow star at the top on a purple background: before training the name draws none of
    it; after training the name alone draws colour, shape, background and place."""
    data = _draw(tmp_path / "subject", _jitter(SUBJECT, 8))
    ef.create_embedding(env.model, env.root / "embeddings", "zqvx", 4, init_text="shape")
    before = _tally([judge(_generate(env, "zqvx", s)[0]).score(SUBJECT) for s in SEEDS])
    t0 = time.perf_counter()
    out = train_embedding(_run(env), EmbeddingTrainParams(
        embedding_name="zqvx", learn_rate="0.1", batch_size=4, data_root=str(data), log_directory=str(tmp_path / "log"),
        training_width=64, training_height=64, steps=150, template_filename=_template(tmp_path, "[name]", "a [name]"),
        create_image_every=0, save_embedding_every=0))
    took = time.perf_counter() - t0
    after = _tally([judge(_generate(env, "zqvx", s)[0]).score(SUBJECT) for s in SEEDS])
    rows = read_loss_csv(out.loss_csv)
    print(f"embedding: before {before}, after {after}, {took:.1f}s, loss {rows[0].loss:.3f} -> "
          f"{np.mean([r.loss for r in rows[-10:]]):.3f}")
    assert out.step == 150 and not out.interrupted and ef.read_embedding(out.path).step == 150
    assert before["all_three"] == 0 and before["position"] == 0
    assert after["all_three"] >= 3 and after["position"] >= 3, after


@pytest.mark.slow
def test_hypernetwork_learns_a_background_the_captions_do_not_name(env: SimpleNamespace, tmp_path: Path) -> None:
    """Every training image sits on purple; no caption says so.  With the hypernetwork at strength 1
    the same prompts and seeds draw purple backgrounds, still with the shape colours the prompts ask for."""
    rng = random.Random(3)
    scenes = [Scene(c, s, "purple", p) for c, s, p in
              [(rng.choice(["red", "yellow", "white", "green"]), rng.choice(["circle", "square", "star"]),
                rng.choice(["left", "right", "center"])) for _ in range(12)]]
    data = _draw(tmp_path / "style", scenes, [caption(s, with_background=False) for s in scenes])
    torch.manual_seed(0)  # creation draws the MLPs' start weights from the global generator
    hf.create_hypernetwork(env.root / "hypernetworks", "purpleish", [64], layer_structure="1, 2, 1")
    asked = [Scene(c, s, "purple", p) for c, s, p in
             (("red", "circle", "left"), ("yellow", "star", "center"), ("green", "square", "right"))]
    cases = [(caption(sc, with_background=False), sc.color, seed) for sc in asked for seed in SEEDS[:2]]
    before = [judge(_generate(env, prompt, seed)[0]).background for prompt, _, seed in cases]
    t0 = time.perf_counter()
    out = train_hypernetwork(_run(env), HypernetworkTrainParams(
        hypernetwork_name="purpleish", learn_rate="0.003", batch_size=4, data_root=str(data),
        log_directory=str(tmp_path / "log"), training_width=64, training_height=64, steps=100,
        template_filename=_template(tmp_path, "[filewords]"), create_image_every=0, save_hypernetwork_every=0))
    took = time.perf_counter() - t0
    env.models.hypernetworks.refresh()
    after = [judge(_generate(env, f"{prompt} <hypernet:purpleish:1>", seed)[0]) for prompt, _, seed in cases]
    rows = read_loss_csv(out.loss_csv)
    print(f"hypernetwork: backgrounds before {before}, after {[v.background for v in after]}, {took:.1f}s, "
          f"loss {np.mean([r.loss for r in rows[:10]]):.3f} -> {np.mean([r.loss for r in rows[-10:]]):.3f}")
    assert out.step == 100 and before.count("purple") == 0
    assert [v.background for v in after].count("purple") >= 4, after  # measured 5 of 6
    assert sum(v.color == color for v, (_, color, _) in zip(after, cases)) >= 5, after


# ------------------------------------------------------------------------------------------ resume, interrupt

def _small_embedding_params(data: Path, log: Path, tpl: str, steps: int, name: str = "resumer",
                            **kw: Any) -> EmbeddingTrainParams:
    return EmbeddingTrainParams(embedding_name=name, learn_rate="0.02:3, 0.01", batch_size=2, gradient_step=2,
                                data_root=str(data), log_directory=str(log), training_width=64, training_height=64,
                                steps=steps, template_filename=tpl, create_image_every=0, save_embedding_every=0,
                                clip_grad_mode="norm", clip_grad_value="1.0", latent_sampling_method="random", **kw)


def test_embedding_resume_continues_the_same_run(env: SimpleNamespace, tmp_path: Path) -> None:
    """6 steps in one go vs 3 + 3 resumed from the file and its .optim: same vectors, same losses."""
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 5))
    tpl = _template(tmp_path, "[name]", "a [name] [filewords]")
    env.settings.set("save_optimizer_state", True, save=False)
    try:
        finals, losses = [], []
        for split in ((6,), (3, 6)):
            folder = tmp_path / f"emb-{len(split)}"
            ef.create_embedding(env.model, folder, "resumer", 2, init_text="star")
            log = tmp_path / f"log-{len(split)}"
            for steps in split:
                out = train_embedding(_run(env, embeddings_dir=folder), _small_embedding_params(data, log, tpl, steps))
                assert out.step == steps
            finals.append(ef.read_embedding(out.path).vectors[""])
            losses.append([r.loss for r in read_loss_csv(out.loss_csv)])
        assert Path(f"{out.path}.optim").is_file()
    finally:
        env.settings.set("save_optimizer_state", False, save=False)
    assert [len(x) for x in losses] == [6, 6]
    assert np.allclose(losses[0], losses[1], rtol=0, atol=1e-6), losses
    assert torch.allclose(finals[0], finals[1], atol=1e-6)
    with pytest.raises(ValueError, match="already been trained beyond specified max steps"):
        train_embedding(_run(env, embeddings_dir=tmp_path / "emb-1"), _small_embedding_params(data, log, tpl, 6))


def test_hypernetwork_resume_with_dropout_continues_the_same_run(env: SimpleNamespace, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 4), ["a star"] * 4)
    tpl = _template(tmp_path, "[filewords]")
    finals, losses = [], []
    env.settings.set("save_optimizer_state", True, save=False)
    request.addfinalizer(lambda: env.settings.set("save_optimizer_state", False, save=False))
    first = hf.create_hypernetwork(tmp_path / "hn-0", "resumable", [64], layer_structure="1, 2, 1",
                                   activation_func="relu", use_dropout=True, dropout_structure="0, 0.3, 0")
    for split in ((4,), (2, 4)):
        folder = tmp_path / f"hn-{len(split)}"
        folder.mkdir()
        shutil.copy(first, folder / first.name)  # the same start (creation draws random weights)
        for steps in split:
            out = train_hypernetwork(_run(env, hypernetwork_dir=folder), HypernetworkTrainParams(
                hypernetwork_name="resumable", learn_rate="0.001", batch_size=2, data_root=str(data),
                log_directory=str(tmp_path / f"log-{len(split)}"), training_width=64, training_height=64, steps=steps,
                template_filename=tpl, create_image_every=0, save_hypernetwork_every=0))
        assert Path(f"{out.path}.optim").is_file()
        data_pt = torch.load(out.path, weights_only=True)
        assert data_pt["step"] == 4 and data_pt["name"] == "resumable"
        finals.append(data_pt[64][0]["linear.0.weight"])
        losses.append([r.loss for r in read_loss_csv(out.loss_csv)])
    assert np.allclose(losses[0], losses[1], rtol=0, atol=1e-6), losses
    assert torch.allclose(finals[0], finals[1], atol=1e-6)
    assert not torch.equal(finals[0], torch.load(first, weights_only=True)[64][0]["linear.0.weight"])


def test_interrupt_saves_the_step_reached(env: SimpleNamespace, tmp_path: Path) -> None:
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 3))
    folder = tmp_path / "emb"
    ef.create_embedding(env.model, folder, "stopper", 1)
    state = JobState("train", "train")
    seen = []

    def pause_point(hidden) -> None:
        seen.append(state.sampling_step)
        if len(seen) == 3:
            state.interrupt()

    out = train_embedding(_run(env, progress=state, embeddings_dir=folder, pause_point=pause_point),
                          _small_embedding_params(data, tmp_path / "log", _template(tmp_path, "[name]"), 50, "stopper"))
    assert out.interrupted and out.step == 3 and seen == [1, 2, 3]
    assert ef.read_embedding(folder / "stopper.pt").step == 3
    assert "interrupted at 3 steps" in out.info
    assert [r.step for r in read_loss_csv(out.loss_csv)] == [1, 2, 3]


# ------------------------------------------------------------------------------------------ files and layout

def test_log_dir_layout_previews_and_image_embeddings(env: SimpleNamespace, tmp_path: Path) -> None:
    """A1111's layout with snapshots and previews every 2 steps; the model's weights unchanged and
    frozen again afterwards; generation between steps (the pause point) sees the untrained model."""
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 3))
    folder = tmp_path / "emb"
    ef.create_embedding(env.model, folder, "layout", 2, init_text="circle")
    digest = _weights_digest(env.model)
    flags = {id(p): p.requires_grad for p in env.model.sd.unet.parameters()}
    state = JobState("train", "train")
    out = train_embedding(_run(env, preview=True, progress=state, embeddings_dir=folder), EmbeddingTrainParams(
        embedding_name="layout", learn_rate="0.01", batch_size=2, data_root=str(data), log_directory="ti_logs",
        training_width=64, training_height=64, steps=4, template_filename="subject_filewords.txt",
        create_image_every=2, save_embedding_every=2, use_weight=True, shuffle_tags=True, tag_drop_out=0.1))
    root = env.root / "ti_logs" / datetime.date.today().strftime("%Y-%m-%d") / "layout"
    assert out.log_dir == root and out.path == folder / "layout.pt"
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    settings = [n for n in names if n.startswith("settings-")]
    assert names == sorted(["embeddings/layout-2.pt", "embeddings/layout-4.pt", "images/layout-2.png",
                            "images/layout-4.png", "image_embeddings/layout-2.png", "image_embeddings/layout-4.png",
                            "textual_inversion_loss.csv", *settings]) and len(settings) == 1
    with (root / "textual_inversion_loss.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "epoch", "epoch_step", "loss", "learn_rate"]
    # 3 images, batch 2: one batch per epoch, so every step is a new epoch
    assert [r[:3] for r in rows[1:]] == [["1", "0", "0"], ["2", "1", "0"], ["3", "2", "0"], ["4", "3", "0"]]
    assert all(float(r[3]) > 0 and float(r[4]) == 0.01 for r in rows[1:])
    cfg = json.loads((root / settings[0]).read_text())
    assert cfg["embedding_name"] == "layout" and cfg["num_of_dataset_images"] == 3 and cfg["model_name"]
    with Image.open(root / "images" / "layout-2.png") as im:
        assert "Steps: " in im.text["parameters"]
    snap = ef.read_embedding(root / "embeddings" / "layout-2.pt")
    assert snap.step == 2 and snap.name == "layout-2"
    stored = read_image_embedding(root / "image_embeddings" / "layout-2.png")
    assert stored["name"] == "layout-2" and stored["step"] == 2
    assert torch.allclose(stored["string_to_param"]["*"], snap.vectors[""], atol=1e-7)
    assert ef.read_embedding(out.path).step == 4 and state.current_image is not None
    assert state.sampling_step == 4 and state.sampling_steps == 4 and "loss" in state.textinfo
    assert _weights_digest(env.model) == digest
    assert all(p.requires_grad == flags[id(p)] for p in env.model.sd.unet.parameters())


def test_hypernetwork_hooks_leave_for_generation_between_steps(env: SimpleNamespace, tmp_path: Path) -> None:
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 2), ["a star"] * 2)
    folder = tmp_path / "hn"
    hf.create_hypernetwork(folder, "pausing", [64], weight_init="XavierNormal")
    plain, _ = _generate(env, "a red circle", 7, steps=4)
    during = []

    def pause_point(hidden) -> None:
        with hidden():
            during.append(_generate(env, "a red circle", 7, steps=4)[0])

    digest = _weights_digest(env.model)
    out = train_hypernetwork(_run(env, hypernetwork_dir=folder, pause_point=pause_point, preview=True),
                             HypernetworkTrainParams(
        hypernetwork_name="pausing", learn_rate="0.01", batch_size=2, data_root=str(data),
        log_directory=str(tmp_path / "log"), training_width=64, training_height=64, steps=2,
        template_filename=_template(tmp_path, "[filewords]"), create_image_every=1, save_hypernetwork_every=1,
        clip_grad_mode="value",
        clip_grad_value="0.05"))
    assert len(during) == 2 and all(np.array_equal(np.asarray(im), np.asarray(plain)) for im in during)
    hooks = [h.__qualname__ for m in env.model.sd.unet.modules() if getattr(m, "is_cross_attention", False)
             for h in (*m.to_k._forward_pre_hooks.values(), *m.to_v._forward_pre_hooks.values())]
    assert not [h for h in hooks if "HypernetworkTrainee" in h]  # the trainer's hooks are gone (the loader's stay)
    assert _weights_digest(env.model) == digest
    snaps = sorted(p.name for p in (out.log_dir / "hypernetworks").iterdir())
    assert snaps == ["pausing-1.pt", "pausing-2.pt"] and (out.log_dir / "hypernetwork_loss.csv").is_file()
    assert len(out.previews) == 2 and not (out.log_dir / "image_embeddings").exists()
    data_pt = torch.load(out.path, weights_only=True)
    assert data_pt["step"] == 2 and data_pt["weight_initialization"] == "XavierNormal"


def test_image_embedding_round_trip(tmp_path: Path) -> None:
    vec = torch.randn(3, 64)
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "rt-5", "step": 5,
            "sd_checkpoint": "abc", "sd_checkpoint_name": "m"}
    path = save_image_embedding(tmp_path / "x.png", Image.new("RGB", (64, 64), "navy"), data, model_name="m",
                                model_hash="abc", step=5)
    with Image.open(path) as im:
        assert im.width >= 256 and CHUNK_KEY in im.text
        raw = json.loads(__import__("base64").b64decode(im.text[CHUNK_KEY]))
    assert list(raw["string_to_param"]["*"]) == ["TORCHTENSOR"]  # A1111's tensor encoding
    back = read_image_embedding(path)
    assert torch.allclose(back["string_to_param"]["*"], vec) and back["step"] == 5 and back["name"] == "rt-5"
    sdxl = {"clip_l": torch.randn(2, 8), "clip_g": torch.randn(2, 12), "name": "x", "step": 1}
    path2 = save_image_embedding(tmp_path / "y.png", Image.new("RGB", (300, 300)), sdxl, model_name="m",
                                 model_hash=None, step=1)
    back2 = read_image_embedding(path2)
    assert torch.allclose(back2["clip_g"], sdxl["clip_g"]) and back2["clip_l"].shape == (2, 8)
    assert read_image_embedding(_draw(tmp_path / "plain", [SUBJECT]) / "00.png") is None
    assert embedding_from_b64(__import__("base64").b64encode(b'{"a": 1}')) == {"a": 1}


def test_bad_input_is_refused_before_training(env: SimpleNamespace, tmp_path: Path) -> None:
    data = _draw(tmp_path / "d", [SUBJECT])
    with pytest.raises(ValueError, match="not found"):
        train_embedding(_run(env), EmbeddingTrainParams(embedding_name="nope", data_root=str(data)))
    with pytest.raises(ValueError, match="does not exist"):
        train_hypernetwork(_run(env), HypernetworkTrainParams(hypernetwork_name="x", data_root=str(tmp_path / "no")))
    hf.create_hypernetwork(tmp_path / "hn", "wide", [768])
    with pytest.raises(ValueError, match="context widths"):
        train_hypernetwork(_run(env, hypernetwork_dir=tmp_path / "hn"),
                           HypernetworkTrainParams(hypernetwork_name="wide", data_root=str(data)))


# ------------------------------------------------------------------------------------------ memory modes, SDXL

def test_medvram_training_swaps_parts_and_stays_within_budget(tmp_path: Path) -> None:
    memory = MemoryManager(CPU, "medvram", budget_mb=400)
    env = _stack(tmp_path, BUILTIN, memory)
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 2), ["a star"] * 2)
    ef.create_embedding(env.model, tmp_path / "embeddings", "mv", 1)
    hf.create_hypernetwork(tmp_path / "hypernetworks", "mvh", [64])
    common = dict(data_root=str(data), log_directory=str(tmp_path / "log"), training_width=64, training_height=64,
                  steps=2, batch_size=2, template_filename=_template(tmp_path, "[name] [filewords]"),
                  create_image_every=0)
    assert train_embedding(_run(env), EmbeddingTrainParams(embedding_name="mv", save_embedding_every=0, **common)).step == 2
    assert train_hypernetwork(_run(env), HypernetworkTrainParams(hypernetwork_name="mvh", save_hypernetwork_every=0,
                                                                 **common)).step == 2
    loads = {e.part.split(": ")[-1] for e in memory.events if e.action == "load"}
    assert {"UNet", "VAE", "text encoder 1"} <= loads
    assert any(e.action == "evict" for e in memory.events)  # medvram: parts took turns
    assert memory.device_bytes() <= memory.budget


def test_sdxl_embedding_and_hypernetwork_train_with_pooled_conditioning(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt" / "xl.safetensors", family="sdxl", seed=5)
    env = _stack(tmp_path, ckpt)
    data = _draw(tmp_path / "d", _jitter(SUBJECT, 2), ["a star"] * 2)
    path = ef.create_embedding(env.model, tmp_path / "embeddings", "xlemb", 2, init_text="star")
    start = ef.read_embedding(path).vectors
    common = dict(data_root=str(data), log_directory=str(tmp_path / "log"), training_width=64, training_height=64,
                  steps=3, batch_size=2, template_filename=_template(tmp_path, "[name] [filewords]"),
                  create_image_every=0)
    out = train_embedding(_run(env), EmbeddingTrainParams(embedding_name="xlemb", learn_rate="0.05",
                                                          save_embedding_every=3, **common))
    trained = ef.read_embedding(out.path)
    assert out.path.suffix == ".safetensors" and trained.step == 3
    assert (out.log_dir / "embeddings" / "xlemb-3.safetensors").is_file()
    for key in ("clip_l", "clip_g"):  # both encoders' vectors learn (clip_g also through the pooled embedding)
        assert not torch.allclose(trained.vectors[key], start[key])
    width = env.model.sd.unet.config.cross_attention_dim
    hf.create_hypernetwork(tmp_path / "hypernetworks", "xlhn", [width])
    out = train_hypernetwork(_run(env), HypernetworkTrainParams(hypernetwork_name="xlhn", learn_rate="0.01",
                                                                save_hypernetwork_every=0, **common))
    assert out.step == 3 and all(np.isfinite(r.loss) for r in read_loss_csv(out.loss_csv))
    shutil.rmtree(tmp_path / "log")
