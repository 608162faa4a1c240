"""The scale-out seam without Ray (default run): the queue runs shared jobs side by side and local
jobs alone, in the fair order; a job whose saving is deferred (a worker's) writes nothing and its save
orders, written by the front, give the very files a direct save gives; the serve config file."""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.processing.pipeline import Pipeline
from webui.scripts.builtin import builtin_catalog
from webui.services.jobs import JobQueue, JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.serving.executor import with_fixed_seeds
from webui.settings import Settings


def _sleeper(log: list[tuple[str, str, float]], name: str, seconds: float):
    def fn(state: JobState) -> str:
        log.append((name, "start", time.monotonic()))
        time.sleep(seconds)
        log.append((name, "end", time.monotonic()))
        return name
    return fn


def _spans(log: list[tuple[str, str, float]]) -> dict[str, tuple[float, float]]:
    starts = {n: t for n, k, t in log if k == "start"}
    return {n: (starts[n], t) for n, k, t in log if k == "end"}


def test_shared_jobs_run_side_by_side_and_local_jobs_alone() -> None:
    q = JobQueue(slots=2)
    log: list[tuple[str, str, float]] = []
    gate, holding = threading.Event(), threading.Event()
    q.submit(lambda s: (holding.set(), gate.wait(5)), label="hold")  # what follows queues while this local job runs
    assert holding.wait(5)
    jobs = [q.submit(_sleeper(log, "s1", 0.6), owner="alice", shared=True),
            q.submit(_sleeper(log, "s2", 0.6), owner="bob", shared=True),
            q.submit(_sleeper(log, "local", 0.3), owner="carol"),
            q.submit(_sleeper(log, "s3", 0.3), owner="alice", shared=True)]
    assert q.pending_ids() == [j.task_id for j in jobs]
    gate.set()
    assert [j.result(10) for j in jobs] == ["s1", "s2", "local", "s3"]
    span = _spans(log)
    assert span["s2"][0] < span["s1"][1]  # the two shared jobs overlapped
    assert span["local"][0] >= max(span["s1"][1], span["s2"][1])  # the local job waited for both
    assert span["s3"][0] >= span["local"][1]  # and ran alone: the next shared one waited for it (fair order kept)
    assert q.current_job is None and q.running_jobs() == []


def test_one_slot_runs_shared_jobs_one_at_a_time() -> None:
    q = JobQueue()
    log: list[tuple[str, str, float]] = []
    jobs = [q.submit(_sleeper(log, n, 0.2), shared=True) for n in ("a", "b")]
    for j in jobs:
        j.result(10)
    span = _spans(log)
    assert span["b"][0] >= span["a"][1]


def test_interrupt_without_an_id_reaches_every_running_job() -> None:
    q = JobQueue(slots=2)
    started = threading.Barrier(3)

    def until_interrupted(state: JobState) -> bool:
        started.wait(5)
        deadline = time.monotonic() + 5
        while not state.interrupted and time.monotonic() < deadline:
            time.sleep(0.01)
        return state.interrupted
    jobs = [q.submit(until_interrupted, shared=True) for _ in range(2)]
    started.wait(5)
    assert len(q.running_jobs()) == 2
    q.interrupt()
    assert [j.result(10) for j in jobs] == [True, True]


def test_seeds_are_fixed_before_a_job_leaves_the_front() -> None:
    req = with_fixed_seeds(Txt2ImgRequest(prompt="x", seed=-1, subseed=-1))
    assert req.seed >= 0 and req.subseed >= 0
    assert with_fixed_seeds(Txt2ImgRequest(seed=5, subseed=9)).seed == 5


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("seam")
    (root / "models").mkdir()
    make_tiny_checkpoint(root / "models" / "a.safetensors", family="sd1", seed=21)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True))
    models.load("a.safetensors")
    return Pipeline(models, Settings.load(root / "config.json"), root / "outputs", scripts=builtin_catalog())


def test_deferred_saves_write_the_same_files_at_the_front(pipeline: Pipeline, tmp_path: Path) -> None:
    req = Txt2ImgRequest(prompt="a red circle", steps=3, width=64, height=64, seed=7, batch_size=2)
    direct = pipeline.run(req, JobState("t1", "t"), save=True)
    direct_files = sorted(p.relative_to(pipeline.outputs_dir) for p in pipeline.outputs_dir.rglob("*.png"))
    assert len(direct_files) == 3 and direct.grid_path is not None  # two pictures and the grid

    state = JobState("t2", "t")
    state.deferred_saves = []
    before = set(pipeline.outputs_dir.rglob("*"))
    worker = pipeline.run(req, state, save=True)
    assert set(pipeline.outputs_dir.rglob("*")) == before  # the worker wrote nothing
    orders = state.deferred_saves
    assert [o.grid for o in orders] == [False, False, True]
    assert all(not Path(o.directory).is_absolute() for o in orders)  # relative: the front's own outputs folder
    front = tmp_path / "front-outputs"
    written = [o.write(front) for o in orders]
    assert sorted(p.relative_to(front).parent for p in written) == sorted(p.parent for p in direct_files)
    for path, text in zip(written[:2], worker.infotexts):
        assert Image.open(path).info["parameters"] == text
    assert worker.infotexts == direct.infotexts
    assert [p.name.split("-", 1)[1] for p in written[:2]] == ["7.png", "8.png"]  # seeds in the names, as A1111


def test_serve_config_short_form_and_ray_form(tmp_path: Path) -> None:
    from webui.serving.ray_backend import ServeConfigError, worker_shape  # no Ray needed to read the file

    def args(conf: str | None, suffix: str = ".yaml", cpu: int = 0) -> argparse.Namespace:
        path = None
        if conf is not None:
            path = tmp_path / f"serve{suffix}"
            path.write_text(conf)
        return argparse.Namespace(serve_config=path, ray_cpu_replicas=cpu)

    shape = worker_shape(args(None), 1, gpus=2)
    assert shape.deployment_options() == {"ray_actor_options": {"num_gpus": 1}, "num_replicas": 2}
    assert shape.capacity == 2 and shape.max_models == 1
    shape = worker_shape(args(None, cpu=3), 2, gpus=1)
    assert shape.deployment_options() == {"ray_actor_options": {"num_cpus": 1}, "num_replicas": 3}
    shape = worker_shape(args("autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 1}\n"
                              "ray_actor_options: {num_gpus: 1}\nmax_models_per_replica: 3\n"), 1, gpus=0)
    assert shape.capacity == 4 and shape.min_replicas == 1 and shape.max_models == 3
    assert shape.deployment_options()["autoscaling_config"]["max_replicas"] == 4
    ray_form = ("applications:\n- name: webui\n  deployments:\n  - name: Other\n    num_replicas: 9\n"
                "  - name: GenerationWorker\n    num_replicas: 5\n    ray_actor_options: {num_gpus: 0.5}\n")
    shape = worker_shape(args(ray_form), 1, gpus=0)
    assert shape.deployment_options() == {"ray_actor_options": {"num_gpus": 0.5}, "num_replicas": 5}
    shape = worker_shape(args('{"num_replicas": 2}', ".json"), 1, gpus=0)
    assert shape.num_replicas == 2 and shape.actor_options == {"num_cpus": 1}
    for bad, said in [("num_replicas: [1\n", "not valid"), ("replicas: 2\n", "unknown keys replicas"),
                      ("max_ongoing_requests: 4\n", "must be 1"), ("num_replicas: 0\n", "at least 1"),
                      ("autoscaling_config: {min_replicas: 3, max_replicas: 2}\n", "min_replicas <= max_replicas"),
                      ("applications: [{deployments: [{name: X}]}]\n", "no deployment named GenerationWorker"),
                      ("- 1\n", "mapping")]:
        with pytest.raises(ServeConfigError, match=said):
            worker_shape(args(bad), 1, gpus=0)
    with pytest.raises(ServeConfigError, match="No such file"):
        worker_shape(argparse.Namespace(serve_config=tmp_path / "missing.yaml", ray_cpu_replicas=0), 1, gpus=0)


def test_a_worker_holds_checkpoints_by_title_and_hash(tmp_path: Path) -> None:
    """A replica's own services (no Ray needed): the front's "name [sha256 short]" loads the same file;
    a file that is missing or different on the replica's node is refused, so the job can go elsewhere."""
    from webui.cli import parse_args
    from webui.serving.ray_worker import CheckpointNotOnNode, WorkerCore

    ckpt_dir = tmp_path / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True)
    make_tiny_checkpoint(ckpt_dir / "tiny-a.safetensors", family="sd1", seed=1)
    make_tiny_checkpoint(ckpt_dir / "tiny-b.safetensors", family="sd1", seed=2)
    core = WorkerCore(parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"]), max_models=1)
    info = core.svc.models.resolve("tiny-a.safetensors")
    title = f"tiny-a.safetensors [{core.svc.registry.ensure_hash(info)[:10]}]"
    core.hold(title)
    assert core.svc.models.current.info.name == "tiny-a.safetensors" and core.loads == 1
    core.hold(title)
    assert core.loads == 1  # held: not read again
    core.hold("tiny-b.safetensors")
    assert core.loads == 2 and core.svc.models.cached == ["tiny-b.safetensors"]  # one kept (max_models=1)
    with pytest.raises(CheckpointNotOnNode, match="different file"):
        core.hold("tiny-a.safetensors [0123456789]")
    with pytest.raises(CheckpointNotOnNode, match="not found"):
        core.hold("elsewhere.safetensors [0123456789]")
    core.apply_options({"CLIP_stop_at_last_layers": 2, "sd_checkpoints_limit": 5, "no such option": 1})
    assert core.svc.settings.get("CLIP_stop_at_last_layers") == 2
    assert core.svc.models.cache_limit == 1  # the replica keeps its own checkpoint cache size
    assert not (tmp_path / "config.json").exists()  # nothing written on the worker


def test_a_bad_serve_config_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    import subprocess
    import sys
    conf = tmp_path / "serve.yaml"
    conf.write_text("num_replicas: 2\nmax_ongoing_requests: 3\n")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "launch.py"), "--backend", "ray", "--serve-config", str(conf),
                        "--data-dir", str(tmp_path), "--nowebui", "--port", "1"], capture_output=True, text=True,
                       timeout=120, cwd=root)
    assert r.returncode == 2
    assert "max_ongoing_requests must be 1" in r.stderr
