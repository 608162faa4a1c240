"""Training as a job (issue 17, points 4-6): the train routes and their 4xx answers, progress and
interrupt, generation served between training steps with the trained weights hidden, the new
files listed at once, the memory check, and the Train tab in a browser.

Two halves: the queue/service plumbing in-process with a small trainer of our own that follows the
TrainRun contract (a real torch loop whose weights change the UNet's output through a hook), and
the real trainers through a real server on the suite's tiny SD1 checkpoint.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from conftest import Server, start_server, stop_server, wait_for_model
from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.memory.estimates import MB, training_activation_bytes
from webui.memory.manager import MemoryManager
from webui.models.registry import CheckpointRegistry
from webui.processing.pipeline import Pipeline
from webui.services import training_jobs as tj
from webui.services.jobs import Interrupted, JobQueue
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.training import TrainingService
from webui.settings import Settings
from webui.training.params import EmbeddingTrainParams, LoraTrainParams
from webui.training.run import TrainOutcome, TrainRun

GEN = dict(prompt="a red circle", seed=7, steps=4, width=64, height=64, sampler_name="Euler", cfg_scale=5.0)


def write_dataset(folder: Path, n: int = 3, size: int = 64) -> Path:
    """A few coloured squares with captions (real PNG files)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[:] = rng.integers(0, 255, 3)
        img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (200, 30, 30)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text("a red square", encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------ in-process plumbing

class HookTrainer:
    """A small trainer on the TrainRun contract: a bias added to the UNet's output (through a forward
    hook, so generation sees it unless `hidden()` removes it), trained towards a target with AdamW."""

    def __init__(self, step_delay: float = 0.05) -> None:
        self.step_delay = step_delay
        self.seen_during_pause: list[str] = []
        self.previews: list[Image.Image] = []

    def __call__(self, run: TrainRun, p: EmbeddingTrainParams) -> TrainOutcome:
        unet = run.model.sd.unet
        bias = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([bias], lr=0.5, weight_decay=0.0)
        hook = [unet.register_forward_hook(lambda _m, _a, out: _shift(out, bias.detach()))]

        @contextlib.contextmanager
        def hidden() -> Iterator[None]:
            hook.pop().remove()
            self.seen_during_pause.append("hidden")
            try:
                yield
            finally:
                hook.append(unet.register_forward_hook(lambda _m, _a, out: _shift(out, bias.detach())))

        step, interrupted = 0, False
        out = Path(run.paths.embeddings_dir) / f"{p.embedding_name}-trained.pt"
        try:
            for step in range(1, p.steps + 1):
                run.progress.check()
                loss = ((bias - 3.0) ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.progress.sampling_step, run.progress.sampling_steps = step, p.steps
                run.progress.textinfo = f"[{p.embedding_name}] step {step}, loss {loss.item():.4f}"
                if p.create_image_every and step % p.create_image_every == 0 and run.preview is not None:
                    self.previews.append(run.preview(**{k: v for k, v in GEN.items()})[0])
                time.sleep(self.step_delay)
                run.pause_point(hidden)
        except Interrupted:
            interrupted, step = True, step - 1
        finally:
            hook.pop().remove()
        torch.save({"bias": bias.detach(), "step": step}, out)
        return TrainOutcome(out, step, interrupted)


def _shift(out: Any, bias: torch.Tensor) -> Any:
    if hasattr(out, "sample"):
        out.sample = out.sample + bias
        return out
    if isinstance(out, tuple):
        return (out[0] + bias, *out[1:])
    return out + bias


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("train-jobs")
    make_tiny_checkpoint(root / "models" / "sd1.safetensors", family="sd1", seed=51)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True),
                          embeddings_dir=root / "embeddings", hypernetwork_dir=root / "hypernetworks",
                          lora_dirs=[root / "Lora"])
    models.load("sd1.safetensors")
    (root / "embeddings").mkdir()
    settings = Settings.load(root / "config.json")
    pipeline = Pipeline(models, settings, root / "outputs")
    queue = JobQueue()
    training = TrainingService(models, queue, root / "embeddings", root / "hypernetworks", lora_dir=root / "Lora",
                               data_dir=root, settings=settings, pipeline=pipeline)
    data = write_dataset(root / "data")
    yield SimpleNamespace(root=root, models=models, queue=queue, pipeline=pipeline, training=training, data=data)
    queue.close()


def generate(env: SimpleNamespace, **kw: Any) -> Any:
    req = Txt2ImgRequest(**(GEN | kw))
    return env.queue.submit(lambda s: env.pipeline.run(req, s, save=False), label="txt2img")


def wait_until(cond: Any, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_generation_is_served_between_steps_with_the_trained_weights_hidden(env) -> None:
    baseline = np.asarray(generate(env).result(60).images[0])
    trainer = HookTrainer()
    params = EmbeddingTrainParams(embedding_name="t1", data_root=str(env.data), steps=60, create_image_every=0)
    job = tj.submit_training(env.training.context(), "train-embedding", params, trainer)
    wait_until(lambda: job.state.sampling_step >= 3)
    gen = generate(env)
    result = gen.result(60)
    assert not job.future.done(), "the generation had to wait for the whole training run"
    assert np.array_equal(np.asarray(result.images[0]), baseline), "trained weights leaked into generation"
    assert trainer.seen_during_pause == ["hidden"]
    outcome = job.result(120)
    assert outcome.step == 60 and not outcome.interrupted
    # the trained bias does change the UNet's output (so equality above proves it was hidden)
    assert abs(torch.load(outcome.path)["bias"].item()) > 0.5


def test_fifo_a_checkpoint_load_waits_for_training_and_everything_behind_it_too(env) -> None:
    order: list[str] = []
    trainer = HookTrainer(step_delay=0.02)
    params = EmbeddingTrainParams(embedding_name="t2", data_root=str(env.data), steps=40, create_image_every=0)
    job = tj.submit_training(env.training.context(), "train-embedding", params, trainer)
    wait_until(lambda: job.state.sampling_step >= 2)
    load = env.queue.submit(lambda s: order.append("load"), label="load checkpoint")
    gen = env.queue.submit(lambda s: order.append("gen"), label="txt2img")
    job.result(60)
    load.result(10), gen.result(10)
    assert order == ["load", "gen"] and trainer.seen_during_pause == []


def test_training_jobs_at_once_limit_and_stopping_only_ones_own_runs(env, monkeypatch) -> None:
    """max_training_jobs (Settings → Server): a run over the limit is a 429 LimitError naming it; a user
    who is no admin stops only their own runs (the Train tab's Interrupt passes their name)."""
    import webui.training.embedding_train as et
    from webui.services.limits import LimitError
    monkeypatch.setattr(et, "train_embedding", HookTrainer(step_delay=0.02))
    (env.root / "embeddings" / "t9.pt").write_bytes(b"x")  # the name must exist (the trainer is the hook above)
    env.training.settings.update({"max_training_jobs": 1})
    try:
        params = EmbeddingTrainParams(embedding_name="t9", data_root=str(env.data), steps=400, create_image_every=0)
        from webui.serving.caller import Caller
        # admins, so that t9 (there before anybody claimed it) may be trained by either
        job = env.training.submit_train_embedding(params, Caller(owner="alice", admin=True, accounts=True))
        with pytest.raises(LimitError) as e:
            env.training.submit_train_embedding(params, Caller(owner="bob", admin=True, accounts=True))
        assert e.value.status == 429 and "limit of training jobs at once is 1" in str(e.value)
        wait_until(lambda: job.state.sampling_step >= 2)
        assert job.owner == "alice" and not env.training.interrupt_training("bob")  # bob has no run to stop
        assert not job.state.interrupted
        assert env.training.interrupt_training("alice")
        outcome = job.result(60)
        assert outcome.interrupted and outcome.step < 400
    finally:
        env.training.settings.update({"max_training_jobs": 0})


def test_interrupting_a_served_generation_does_not_stop_training(env) -> None:
    trainer = HookTrainer(step_delay=0.02)
    params = EmbeddingTrainParams(embedding_name="t3", data_root=str(env.data), steps=30, create_image_every=0)
    job = tj.submit_training(env.training.context(), "train-embedding", params, trainer)
    wait_until(lambda: job.state.sampling_step >= 2)
    gen = generate(env, steps=200)
    wait_until(lambda: env.queue.current is gen.state and gen.state.sampling_step >= 1)
    assert env.queue.current.label == "txt2img"
    env.queue.interrupt()
    gen.result(60)
    assert env.queue.current is job.state  # the training job is current again
    outcome = job.result(60)
    assert outcome.step == 30 and not outcome.interrupted


def test_interrupt_saves_and_preview_runs_the_real_pipeline_without_saving(env) -> None:
    trainer = HookTrainer(step_delay=0.05)
    params = EmbeddingTrainParams(embedding_name="t4", data_root=str(env.data), steps=10_000, create_image_every=2)
    job = tj.submit_training(env.training.context(), "train-embedding", params, trainer)
    wait_until(lambda: job.state.sampling_step >= 4)
    assert env.queue.current.label == "train-embedding" and "loss" in env.queue.current.textinfo
    env.queue.skip()  # Skip is for images: the run goes on
    time.sleep(0.2)
    assert not job.future.done()
    env.queue.interrupt()
    outcome = job.result(60)
    assert outcome.interrupted and 4 <= outcome.step < 10_000 and outcome.path.is_file()
    assert outcome.info.startswith(f"Training interrupted at {outcome.step} steps")
    assert trainer.previews and trainer.previews[0].size == (64, 64)
    shown = np.asarray(job.state.current_image.convert("RGB"), dtype=np.float32)  # the tab's latest picture
    assert shown.shape == (64, 64, 3) and shown.std() > 1.0  # a drawn 64×64 preview, not a blank
    assert not (env.root / "outputs").exists() or not any((env.root / "outputs").rglob("*.png"))


def test_checks_before_queueing(env, tmp_path: Path) -> None:
    ctx = env.training.context()
    (env.root / "embeddings" / "known.pt").write_bytes(b"x")
    ok = EmbeddingTrainParams(embedding_name="known", data_root=str(env.data), steps=1)
    tj.check_embedding(ctx, ok)
    with pytest.raises(tj.TrainInputNotFound, match="does not exist"):
        tj.check_embedding(ctx, EmbeddingTrainParams(embedding_name="known", data_root=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(ValueError, match="no images"):
        tj.check_embedding(ctx, EmbeddingTrainParams(embedding_name="known", data_root=str(tmp_path / "empty")))
    with pytest.raises(tj.TrainInputNotFound, match="embedding 'ghost' not found"):
        tj.check_embedding(ctx, EmbeddingTrainParams(embedding_name="ghost", data_root=str(env.data)))
    bad = {"learn_rate": "0.005:100, oops", "steps": 0, "batch_size": 0, "training_width": 100,
           "template_filename": "missing.txt", "clip_grad_mode": "sometimes", "tag_drop_out": 1.5}
    for key, value in bad.items():
        with pytest.raises(ValueError):
            tj.check_embedding(ctx, EmbeddingTrainParams(embedding_name="known", data_root=str(env.data),
                                                         **{key: value}))
    lora = tj.check_lora(ctx, LoraTrainParams(name="my/lora*", data_root=str(env.data)))
    assert lora.name == "mylora"
    with pytest.raises(ValueError):
        tj.check_lora(ctx, LoraTrainParams(name="x", data_root=str(env.data), network_target="everything"))


def test_network_exposed_server_confines_dataset_and_log_folders_to_the_data_dir(env, tmp_path: Path) -> None:
    """With --listen (or --server-name / --share) a request may not read a dataset or write logs
    outside the data dir; on localhost any folder of the machine is fine, as in A1111."""
    import dataclasses

    from webui.cli import network_exposure, parse_args
    from webui.serving.path_guard import guard_from_args

    (env.root / "embeddings" / "known.pt").write_bytes(b"x")
    outside = tmp_path / "outside-data"
    outside.mkdir()
    Image.new("RGB", (64, 64), "red").save(outside / "a.png")
    assert network_exposure(parse_args(["--listen"])) == ["--listen"] and network_exposure(parse_args([])) == []
    local = env.training.context()
    exposed = dataclasses.replace(local, path_guard=guard_from_args(parse_args(["--listen"]), local.paths.data_dir))
    tj.check_embedding(local, EmbeddingTrainParams(embedding_name="known", data_root=str(outside)))
    tj.check_embedding(exposed, EmbeddingTrainParams(embedding_name="known", data_root=str(env.data)))  # inside
    with pytest.raises(ValueError, match="dataset directory .* outside the data dir.*--listen"):
        tj.check_embedding(exposed, EmbeddingTrainParams(embedding_name="known", data_root=str(outside)))
    for log_dir in (str(outside), "../escape", str(env.root / ".." / "x")):
        with pytest.raises(ValueError, match="log directory .* outside the data dir"):
            tj.check_embedding(exposed, EmbeddingTrainParams(embedding_name="known", data_root=str(env.data),
                                                             log_directory=log_dir))
    with pytest.raises(ValueError, match="outside the data dir"):
        tj.check_lora(exposed, LoraTrainParams(name="x", data_root=str(outside)))


def test_memory_check_refuses_what_cannot_fit_and_streams_under_lowvram(env) -> None:
    model = env.models.current
    p = EmbeddingTrainParams(batch_size=4, training_width=512, training_height=512)
    channels = model.sd.unet.config.block_out_channels[0]  # the tiny UNet is narrower than SD's 320
    need = training_activation_bytes(4, 512, 512, 4, "sd1", channels=channels)
    assert training_activation_bytes(4, 512, 512, 4, "sd1", gradient_checkpointing=True, channels=channels) < need
    assert training_activation_bytes(1, 512, 512, 2, "sd1") > 2 ** 30  # SD1.5 at 512: gigabytes, not megabytes
    weights = max(part.nbytes for part in model.parts() if part.kind in ("unet", "text_encoder")) if \
        model.parts() else 0
    for mode, budget, fits in (("auto", (need + weights) / MB + 64, True), ("auto", need / MB / 2, False),
                               ("lowvram", need / MB + 16, True), ("medvram", need / MB / 2, False)):
        ctx = env.training.context()
        ctx.memory = MemoryManager(torch.device("cpu"), mode, budget_mb=budget)
        if fits:
            tj.check_memory(ctx, model, p)
        else:
            with pytest.raises(tj.TrainDoesNotFit, match="lower the batch size"):
                tj.check_memory(ctx, model, p)



def test_trains_under_lowvram_on_a_simulated_card(env) -> None:
    """A1111 refuses --lowvram; here the UNet streams through a small budget and both trainers run
    (previews included) with the real trainers."""
    root = env.root / "lowvram"
    registry = CheckpointRegistry(env.root / "models", root / "cache")
    registry.refresh()
    memory = MemoryManager(torch.device("cpu"), "lowvram", budget_mb=64)
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True),
                          embeddings_dir=root / "embeddings", hypernetwork_dir=root / "hn", lora_dirs=[root / "Lora"],
                          memory=memory)
    models.load("sd1.safetensors")
    settings = Settings.load(root / "config.json")
    queue = JobQueue()
    try:
        training = TrainingService(models, queue, root / "embeddings", root / "hn", lora_dir=root / "Lora",
                                   data_dir=root, settings=settings, memory=memory,
                                   pipeline=Pipeline(models, settings, root / "out"))
        training.create_embedding("lowemb")
        small = dict(data_root=str(env.data), steps=2, training_width=64, training_height=64, create_image_every=2,
                     preview_steps=2, preview_width=64, preview_height=64)
        assert training.train_embedding(EmbeddingTrainParams(embedding_name="lowemb", **small)).step == 2
        assert training.train_lora(LoraTrainParams(name="lowlora", **small)).path.is_file()
        assert any(part.state == "streamed" for part in memory.parts)
    finally:
        queue.close()

A1111_TRAIN_IDS = {"train_embedding", "refresh_train_embedding_name", "train_hypernetwork",
                   "refresh_train_hypernetwork_name", "train_embedding_learn_rate", "train_hypernetwork_learn_rate",
                   "train_batch_size", "train_gradient_step", "train_dataset_directory", "train_log_directory",
                   "train_template_file", "refrsh_train_template_file", "train_training_width",
                   "train_training_height", "train_varsize", "train_steps", "train_create_image_every",
                   "train_save_embedding_every", "use_weight", "train_save_image_with_stored_embedding",
                   "train_preview_from_txt2img", "train_shuffle_tags", "train_tag_drop_out",
                   "train_latent_sampling_method", "train_train_embedding", "train_interrupt_training",
                   "train_train_hypernetwork", "ti_output", "ti_gallery", "ti_progress", "ti_error"}


def test_train_tab_starts_a_run_polls_its_progress_and_loss_and_stops_polling(env, monkeypatch) -> None:
    import gradio as gr

    import webui.training.embedding_train as et
    from webui.ui.train_tab import create_train_tab

    trainer = HookTrainer(step_delay=0.03)
    monkeypatch.setattr(et, "train_embedding", trainer)
    from webui.serving.accounts import NO_ACCOUNTS
    svc = SimpleNamespace(training=env.training, paths=SimpleNamespace(data_dir=env.root), queue=env.queue,
                          accounts=NO_ACCOUNTS)
    (env.root / "embeddings" / "uiemb.pt").write_bytes(b"x")
    with gr.Blocks() as demo:
        tab = create_train_tab(svc)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert A1111_TRAIN_IDS <= ids and {"train_train_lora", "train_lora_network_dim", "ti_loss_plot"} <= ids
    assert tab.timer.active is False  # nothing polls while nothing runs
    by_trigger = {(block, event): f.fn for f in demo.fns.values() for block, event in f.targets}
    start = functools.partial(by_trigger[(tab.train["train_embedding"]._id, "click")], None)  # no gr.Request here
    poll = by_trigger[(tab.timer._id, "tick")]
    common = ["disabled", "0.1", 1, 1, str(env.data), "ti_logs", "style_filewords.txt", 512, 512, False, 40, 0, 0,
              False, True, False, False, 0, "once"]
    with pytest.warns(UserWarning, match="does not exist"):
        # the handler's first argument, the event's gr.Request, is bound to None above (no accounts)
        wid, info, err, shown, timer = start("uiemb", "0.5", *common[:4], str(env.root / "nope"), *common[5:])
    assert wid == "" and "does not exist" in err and timer.active is False
    wid, info, err, shown, timer = start("uiemb", "0.5", *common)
    assert wid and err == "" and timer.active is True
    texts, plots = [], []
    deadline = time.time() + 60
    while True:
        progress, info, gallery, plot, shown, timer = poll(wid, shown)
        texts.append(progress)
        if not isinstance(plot, dict):
            plots.append(plot)
        if not timer.active:
            break
        assert time.time() < deadline
        time.sleep(0.2)
    assert info.startswith("Training finished at 40 steps")
    assert any("loss" in t and "s/it" in t and "ETA" in t for t in texts)
    assert len(plots[-1]) >= 2 and list(plots[-1].columns) == ["step", "loss"]
    # an unknown id (a finished run, another server) turns polling off
    assert poll("task(999)", "")[-1].active is False
    # a run started elsewhere (the API, another page) is followed when the sub-tab is opened
    follow = by_trigger[(tab.train["tab"]._id, "select")]
    assert follow(wid) == (gr.update(), gr.update(), gr.update())  # nothing runs
    job = env.training.submit_train_embedding(EmbeddingTrainParams(embedding_name="uiemb", data_root=str(env.data),
                                                                   steps=20, create_image_every=0))
    wid2, shown, timer = follow("")
    assert wid2 == job.state.job_id and timer.active is True
    while timer.active:
        progress, info, gallery, plot, shown, timer = poll(wid2, shown)
        time.sleep(0.1)
    assert info.startswith("Training finished at 20 steps")


# ------------------------------------------------------------------------------ the real server

SMALL = {"training_width": 64, "training_height": 64, "create_image_every": 0, "preview_steps": 2,
         "preview_width": 64, "preview_height": 64}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("train-server")
    ckpt = data / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    make_tiny_checkpoint(ckpt / "tiny-sd1.safetensors", family="sd1", seed=1)
    srv = start_server(data, ckpt, "--ckpt", str(ckpt / "tiny-sd1.safetensors"))
    wait_for_model(srv)
    write_dataset(data / "shapes")
    (data / "empty").mkdir()
    (data / "empty" / "readme.txt").write_text("captions without images")
    r = requests.post(srv.api("create/embedding"), json={"name": "apiemb", "num_vectors_per_token": 2,
                                                        "init_text": "red"}, timeout=60)
    assert r.status_code == 200, r.text
    yield srv
    stop_server(srv)


def post(server: Server, route: str, body: dict[str, Any], timeout: float = 300) -> requests.Response:
    return requests.post(server.api(route), json=body, timeout=timeout)


def test_api_minimal_requests_train_and_the_new_files_are_listed_at_once(server) -> None:
    """Only the name, the dataset and (to keep it short) steps and size: everything else defaults."""
    data_root = str(server.data_dir / "shapes")
    small = {"steps": 3, "training_width": 64, "training_height": 64}
    r = post(server, "train/embedding", {"embedding_name": "apiemb", "data_root": data_root, "id_task": "x"} | small)
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info.startswith("Training finished at 3 steps") and "apiemb.pt" in info, info
    assert requests.get(server.api("embeddings"), timeout=10).json()["loaded"]["apiemb"]["step"] == 3
    assert (server.data_dir / "textual_inversion").is_dir()  # A1111's default log directory, under the data dir
    r = post(server, "create/hypernetwork", {"name": "apihn", "enable_sizes": [32]}, timeout=60)  # tiny: width 32
    assert r.status_code == 200, r.text
    r = post(server, "train/hypernetwork", {"hypernetwork_name": "apihn", "data_root": data_root} | small)
    assert r.status_code == 200, r.text
    assert r.json()["info"].startswith("Training finished at 3 steps") and "apihn.pt" in r.json()["info"]
    r = post(server, "train/lora", {"name": "api/lora*", "data_root": data_root} | small)
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert "Training finished at 3 steps" in info and str(server.data_dir / "models" / "Lora" / "apilora") in info
    assert "apilora" in {x["name"] for x in requests.get(server.api("loras"), timeout=10).json()}


def test_api_errors_are_4xx_with_the_message(server, tmp_path: Path) -> None:
    data_root = str(server.data_dir / "shapes")
    emb = {"embedding_name": "apiemb", "data_root": data_root, "steps": 2}
    cases = [
        ("train/embedding", emb | {"data_root": str(tmp_path / "missing")}, 404, "does not exist"),
        ("train/embedding", emb | {"data_root": str(server.data_dir / "empty")}, 422, "no images"),
        ("train/embedding", emb | {"embedding_name": "ghost"}, 404, "embedding 'ghost' not found"),
        ("train/embedding", emb | {"learn_rate": "0.005:100, 0.001:50"}, 422, "steps must increase"),
        ("train/embedding", emb | {"clip_grad_mode": "norm", "clip_grad_value": "x"}, 422, "clip"),
        ("train/embedding", emb | {"template_filename": "nope.txt"}, 422, "not found"),
        ("train/embedding", emb | {"steps": 0}, 422, "steps"),
        ("train/embedding", emb | {"batch_size": "many"}, 422, "batch_size"),
        ("train/embedding", emb | {"training_width": 100}, 422, "training_width"),
        ("train/embedding", {"data_root": data_root}, 422, "embedding_name"),
        ("train/hypernetwork", {"hypernetwork_name": "ghost", "data_root": data_root}, 404, "not found"),
        ("train/lora", {"name": "***", "data_root": data_root}, 422, "name is empty"),
        ("train/lora", {"name": "x", "data_root": data_root, "network_target": "all"}, 422, "network_target"),
        ("train/lora", {"name": "x", "data_root": data_root, "network_dim": 0}, 422, "network_dim"),
    ]
    for route, body, status, words in cases:
        r = post(server, route, body, timeout=60)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert words in r.text, (body, r.text)
    assert "/sdapi/v1/train/lora" in requests.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]


def test_progress_follows_training_and_interrupt_saves(server) -> None:
    body = {"embedding_name": "apiemb", "data_root": str(server.data_dir / "shapes")} | SMALL  # steps: 100000
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(r=post(server, "train/embedding", body)))
    t.start()
    deadline = time.time() + 120
    while True:
        prog = requests.get(server.api("progress"), timeout=10).json()
        st = prog["state"]
        if st.get("job") == "train-embedding" and "loss" in (prog.get("textinfo") or "") and st["sampling_step"] >= 1:
            break
        assert time.time() < deadline and t.is_alive(), (prog, result)
        time.sleep(0.2)
    assert st["sampling_steps"] == 100000 and "apiemb" in prog["textinfo"]
    assert requests.post(server.api("interrupt"), timeout=10).status_code == 200
    t.join(120)
    r = result["r"]
    assert r.status_code == 200, r.text
    info = r.json()["info"]
    assert info.startswith("Training interrupted at "), info
    step = int(info.split(" at ")[1].split()[0])
    assert step >= st["sampling_step"]
    assert requests.get(server.api("embeddings"), timeout=10).json()["loaded"]["apiemb"]["step"] == step


def b64_pixels(s: str) -> np.ndarray:
    import base64
    import io
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB"))


def test_generation_during_training_is_served_between_steps_and_neither_leaks(server, env) -> None:
    """A txt2img request (with another LoRA) sent while a LoRA trains comes back before the training
    ends, with the image it gives without any training; the trained file equals that of the same run
    without the generation in between."""
    from test_lora import make_kohya
    (server.data_dir / "models" / "Lora").mkdir(parents=True, exist_ok=True)
    make_kohya(server.data_dir / "models" / "Lora" / "other.safetensors", env.models.current, scale=0.5)
    gen = {"prompt": "a red square <lora:other:1>", "seed": 11, "steps": 4, "width": 64, "height": 64,
           "sampler_name": "Euler", "cfg_scale": 5}
    plain = post(server, "txt2img", gen | {"prompt": "a red square"}).json()
    baseline = post(server, "txt2img", gen).json()  # leaves the LoRA applied: training must take it off
    assert not np.array_equal(b64_pixels(baseline["images"][0]), b64_pixels(plain["images"][0]))  # it acts
    lora = {"data_root": str(server.data_dir / "shapes"), "steps": 10, "seed": 5, "template_filename": "none.txt",
            "network_dim": 2, "training_width": 64, "training_height": 64}
    ref = post(server, "train/lora", lora | {"name": "ref"})
    assert ref.status_code == 200, ref.text

    done: dict[str, float] = {}
    result: dict[str, Any] = {}

    def train() -> None:
        result["r"] = post(server, "train/lora", lora | {"name": "during"})
        done["train"] = time.time()
    t = threading.Thread(target=train)
    t.start()
    deadline = time.time() + 120
    while True:  # the training loop runs (its dataset is ready): now queue a generation behind it
        prog = requests.get(server.api("progress"), timeout=10).json()
        if prog["state"].get("job") == "train-lora" and "loss" in (prog.get("textinfo") or ""):
            break
        assert time.time() < deadline and t.is_alive(), result
        time.sleep(0.05)
    during = post(server, "txt2img", gen).json()
    done["gen"] = time.time()
    t.join(180)
    assert result["r"].status_code == 200, result["r"].text
    assert done["gen"] < done["train"], "the generation waited for the whole training run"
    assert np.array_equal(b64_pixels(during["images"][0]), b64_pixels(baseline["images"][0]))
    from safetensors.torch import load_file
    a = load_file(str(server.data_dir / "models" / "Lora" / "ref.safetensors"))
    b = load_file(str(server.data_dir / "models" / "Lora" / "during.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.endswith("lora_up.weight") and a[k].abs().sum() > 0 for k in a)  # it did train


# ------------------------------------------------------------------------------ the tab in a browser

@pytest.mark.browser
@pytest.mark.slow  # browser, ~20 s
def test_browser_create_train_and_see_progress_preview_and_loss_plot(browser: Any, tmp_path_factory) -> None:
    data = tmp_path_factory.mktemp("train-ui")
    ckpt = data / "models" / "Stable-diffusion"
    ckpt.mkdir(parents=True)
    make_tiny_checkpoint(ckpt / "tiny-sd1.safetensors", family="sd1", seed=1)
    dataset = write_dataset(data / "shapes")
    srv = start_server(data, ckpt, "--ckpt", str(ckpt / "tiny-sd1.safetensors"), nowebui=False)
    try:
        wait_for_model(srv)
        # every step in the loss CSV (A1111 writes every 500), so the plot has a line after 4 steps
        assert requests.post(srv.api("options"), json={"training_write_csv_every": 1}, timeout=10).status_code == 200
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = ctx.new_page()
        page.set_default_timeout(90_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url + "/")
        # previews read the txt2img tab's parameters: a short prompt run (also keeps the test quick)
        page.locator("#txt2img_prompt textarea").fill("a red square")
        for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
            box = page.locator(f"#{elem} input[type=number]")
            box.fill(str(value))
            box.press("Enter")
        page.get_by_role("tab", name="Train", exact=True).first.click()
        page.locator("#train_new_embedding_name textarea, #train_new_embedding_name input").first.fill("uitrain")
        page.click("#train_create_embedding")
        page.wait_for_function("() => document.querySelector('#ti_output textarea').value.includes('Created')")
        page.locator("#train_tabs").get_by_role("tab", name="Train", exact=True).click()
        page.locator("#train_embedding input").click()
        page.get_by_role("option", name="uitrain", exact=True).click()
        page.locator("#train_dataset_directory textarea, #train_dataset_directory input").first.fill(str(dataset))
        for elem, value in (("train_training_width", 64), ("train_training_height", 64), ("train_steps", 4),
                            ("train_create_image_every", 2), ("train_save_embedding_every", 0)):
            box = page.locator(f"#{elem} input[type=number]")
            box.fill(str(value))
            box.press("Enter")
        page.locator("#train_preview_from_txt2img input").check()
        page.click("#train_train_embedding")
        page.wait_for_function("() => document.querySelector('#ti_output textarea').value"
                               ".includes('Training finished at 4 steps')", timeout=150_000)
        progress = page.inner_text("#ti_progress")
        assert "step 4/4" in progress and "loss" in progress, progress
        page.wait_for_function("() => { const i = document.querySelector('#ti_gallery img');"
                               " return i && i.complete && i.naturalWidth > 0; }")
        page.locator("#ti_loss_plot canvas, #ti_loss_plot svg").first.wait_for()
        page.screenshot(path="/tmp/ui_train.png")
        assert (data / "textual_inversion").is_dir()
        page.wait_for_load_state("networkidle")  # the poller stopped with the run
        ctx.close()
        assert not errors, errors
    finally:
        stop_server(srv)


def test_extensions_add_train_sub_tabs_with_the_txt2img_preview_params(env) -> None:
    import gradio as gr

    from webui.extensions.compat import binding
    from webui.ui.train_tab import create_train_tab

    seen: list[Any] = []

    def add_tab(params: Any) -> None:
        seen.append(params.txt2img_preview_params)
        with gr.Tab("My training", id="myext_training"):
            gr.Textbox(label="My option", elem_id="myext_train_option")

    binding.bind(SimpleNamespace(models=env.models, pipeline=env.pipeline, extensions=None))
    try:
        binding.add_callback("ui_train_tabs", add_tab)
        t2i = SimpleNamespace(**{k: gr.Textbox(render=False) for k in
                                 ("prompt", "neg_prompt", "steps", "sampler", "cfg_scale", "seed", "width", "height")})
        svc = SimpleNamespace(training=env.training, paths=SimpleNamespace(data_dir=env.root), queue=env.queue)
        with gr.Blocks() as demo:
            tab = create_train_tab(svc, t2i)
    finally:
        binding.unbind()
    assert len(seen) == 1 and seen[0] == [t2i.prompt, t2i.neg_prompt, t2i.steps, t2i.sampler, t2i.cfg_scale,
                                          t2i.seed, t2i.width, t2i.height]
    option = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "myext_train_option")
    parents, block = [], option
    while block is not None:
        parents.append(block)
        block = getattr(block, "parent", None)
    assert tab.tabs in parents  # inside the Train tab's sub-tabs
