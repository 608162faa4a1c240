"""Scale-out on a real local Ray cluster: the server started with `--backend ray --ray-cpu-replicas 2`
and two tiny checkpoints. Routing by checkpoint, the same pictures as in-process, progress and
interrupt through Ray, a replica killed mid-job, a cluster with no replica, and the page.

Slow group (`./run_tests.sh -m slow`, or `-m ray` for these alone): a Ray cluster takes ~15 s to start
and each CPU replica imports torch and builds its own services.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import Server, open_page, start_server, stop_server
from test_ui_browser import set_number

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# a request waits this long for the replica holding its checkpoint before another takes it
ENV = {"RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S": "0.2"}
SILENCE_S = 8


def _checkpoints(data_dir: Path) -> Path:
    from tiny_models import make_tiny_checkpoint
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    make_tiny_checkpoint(ckpt_dir / "tiny-a.safetensors", family="sd1", seed=1)
    make_tiny_checkpoint(ckpt_dir / "tiny-b.safetensors", family="sd1", seed=2)
    return ckpt_dir


def _start(data_dir: Path, ckpt_dir: Path, *extra: str, nowebui: bool = True) -> Server:
    before = dict(os.environ)
    os.environ.update(ENV)
    try:
        return start_server(data_dir, ckpt_dir, "--backend", "ray", *extra, nowebui=nowebui)
    finally:
        os.environ.clear()
        os.environ.update(before)


def backend(server: Server) -> dict[str, Any]:
    return requests.get(f"{server.url}/webui/v1/backend", timeout=10).json()


def wait_for_replicas(server: Server, n: int, timeout: float = 240) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = backend(server)
        if b.get("replicas_running", 0) >= n:
            return b
        assert not b.get("failure"), b
        time.sleep(1)
    raise AssertionError(f"{n} replicas not running after {timeout}s: {backend(server)}; "
                         f"log: {server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("raydata")
    conf = data_dir / "serve.yaml"
    conf.write_text(f"silence_timeout_s: {SILENCE_S}\n")  # a frozen replica is given up after this
    server = _start(data_dir, _checkpoints(data_dir), "--ray-cpu-replicas", "2", "--serve-config", str(conf),
                    nowebui=False)
    try:
        wait_for_replicas(server, 2)
        yield server
    finally:
        stop_server(server)


def txt2img(server: Server, checkpoint: str, timeout: float = 300, **kw: Any) -> requests.Response:
    body = {"prompt": "a red square", "steps": 4, "width": 64, "height": 64, "seed": 11, "save_images": True,
            "override_settings": {"sd_model_checkpoint": checkpoint}, **kw}
    return requests.post(server.api("txt2img"), json=body, timeout=timeout)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def saved_files(server: Server) -> list[Path]:
    return sorted(p for p in (server.data_dir / "outputs").rglob("*.png"))


def test_a_cluster_without_a_replica_answers_503(tmp_path: Path) -> None:
    """A worker asking for a GPU on a CPU-only cluster never runs: jobs get a 503 naming why."""
    conf = tmp_path / "serve.yaml"
    conf.write_text("num_replicas: 1\nray_actor_options: {num_gpus: 1}\nstart_timeout_s: 5\n")
    server = _start(tmp_path, _checkpoints(tmp_path), "--serve-config", str(conf))
    try:
        deadline = time.time() + 120
        while not backend(server).get("ready") and time.time() < deadline:
            time.sleep(1)
        t0 = time.time()
        r = txt2img(server, "tiny-a", timeout=120)
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert "no GenerationWorker replica is running" in detail and "GPU" in detail, detail
        assert time.time() - t0 < 60
        assert backend(server)["replicas_running"] == 0
        assert requests.get(server.api("options"), timeout=10).status_code == 200  # the server still answers
    finally:
        stop_server(server)


def test_jobs_go_to_the_replica_holding_their_checkpoint(ray_server: Server) -> None:
    for ck in ("tiny-a", "tiny-b"):  # warm-up: each checkpoint loaded once
        assert txt2img(ray_server, ck).status_code == 200
    before = backend(ray_server)
    workers: dict[str, set[str]] = {"tiny-a": set(), "tiny-b": set()}
    for i in range(20):
        ck = ("tiny-a", "tiny-b")[i % 2]
        r = txt2img(ray_server, ck, seed=100 + i, save_images=False)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert info["sd_model_name"] == ck
        workers[ck].add(info["worker"])
    after = backend(ray_server)
    jobs, loads = after["jobs"] - before["jobs"], after["loads"] - before["loads"]
    hit_rate = 1 - loads / jobs
    print(f"\naffinity routing: {jobs} jobs alternating two checkpoints, {loads} checkpoint loads, "
          f"hit rate {hit_rate:.0%} (any free replica, each holding 1 checkpoint: ~50%)")
    assert jobs == 20 and hit_rate >= 0.9, after
    assert all(len(w) == 1 for w in workers.values()) and workers["tiny-a"] != workers["tiny-b"], workers


def test_same_seed_same_image_on_either_replica_and_in_process(ray_server: Server, tmp_path: Path) -> None:
    seen: dict[str, np.ndarray] = {}
    # the replica holding tiny-a is kept busy, so the same request goes to the other one as well
    task = "task(scaleout-blocker)"
    blocker = threading.Thread(target=txt2img, args=(ray_server, "tiny-a"),
                               kwargs={"steps": 60, "n_iter": 8, "seed": 1, "save_images": False,
                                       "force_task_id": task})
    blocker.start()
    deadline = time.time() + 60
    while task not in backend(ray_server)["running"] and time.time() < deadline:
        time.sleep(0.2)
    busy = backend(ray_server)["running"][task]["replica"]
    r = txt2img(ray_server, "tiny-a", save_images=False)
    seen[json.loads(r.json()["info"])["worker"]] = pixels(r.json()["images"][0])
    blocker.join(300)
    assert busy not in seen, "the second job waited for the busy replica"
    for _ in range(10):  # both replicas hold tiny-a now: Serve picks either
        r = txt2img(ray_server, "tiny-a", save_images=False)
        seen[json.loads(r.json()["info"])["worker"]] = pixels(r.json()["images"][0])
        if len(seen) == 2:
            break
    assert len(seen) == 2, f"tiny-a ran on {list(seen)} only"
    a, b = seen.values()
    # in-process on the same files, with the one CPU thread a CPU replica has (Ray sets OMP_NUM_THREADS to
    # its num_cpus; a float sum split over another number of threads rounds differently)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        local = start_server(tmp_path, ray_server.data_dir / "models" / "Stable-diffusion")
    finally:
        os.environ.pop("OMP_NUM_THREADS")
    try:
        r = txt2img(local, "tiny-a", save_images=False)
        assert r.status_code == 200, r.text
        in_process = pixels(r.json()["images"][0])
    finally:
        stop_server(local)
    assert np.array_equal(a, b)
    assert np.array_equal(a, in_process), np.abs(a.astype(int) - in_process).max()
    assert a.std() > 1  # a picture, not a flat fill


def test_img2img_goes_the_same_way(ray_server: Server) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    body = {"init_images": [base64.b64encode(buf.getvalue()).decode()], "prompt": "a red square", "steps": 4,
            "denoising_strength": 0.4, "seed": 3, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "tiny-b"}}
    r = requests.post(ray_server.api("img2img"), json=body, timeout=300)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["sd_model_name"] == "tiny-b" and "Denoising strength: 0.4" in info["infotexts"][0]
    holders = backend(ray_server)["replicas_by_checkpoint"]
    assert any(info["worker"] in ws for ck, ws in holders.items() if ck.startswith("tiny-b.safetensors"))
    out = pixels(r.json()["images"][0])
    assert out.shape == (64, 64, 3) and out[..., 0].mean() > out[..., 2].mean()  # still reddish at 0.4


def test_progress_preview_and_interrupt_through_ray(ray_server: Server) -> None:
    out: dict[str, Any] = {}
    task = "task(scaleout-interrupt)"

    def run() -> None:
        out["r"] = txt2img(ray_server, "tiny-b", steps=80, n_iter=40, force_task_id=task, save_images=False)
    t = threading.Thread(target=run)
    t.start()
    seen: dict[str, Any] = {}
    deadline = time.time() + 120
    while time.time() < deadline and not ((seen.get("progress") or 0) > 0 and seen.get("live_preview")):
        seen = requests.post(f"{ray_server.url}/internal/progress", json={"id_task": task, "id_live_preview": -1,
                                                                         "live_preview": True}, timeout=10).json()
        time.sleep(0.3)
    assert seen["active"] and seen["progress"] > 0 and seen["live_preview"].startswith("data:image/png;base64,")
    p = requests.get(ray_server.api("progress"), timeout=10).json()
    assert p["state"]["sampling_steps"] == 80 and p["current_image"]
    t0 = time.time()
    assert requests.post(ray_server.api("interrupt"), json={"id_task": task}, timeout=10).status_code == 200
    t.join(120)
    r = out["r"]
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert 1 <= len(info["all_seeds"]) and len(r.json()["images"]) < 40  # stopped after the current picture
    print(f"\ninterrupt through Ray: answered {time.time() - t0:.2f}s after the request, "
          f"{len(r.json()['images'])} picture(s) of 40")


def test_a_replica_killed_mid_job_the_job_completes_elsewhere(ray_server: Server) -> None:
    task = "task(scaleout-kill)"
    kw = {"steps": 30, "n_iter": 6, "seed": 77}
    before = saved_files(ray_server)
    retries = backend(ray_server)["retries"]
    t, out, pid = _run_until_replica_known(ray_server, task, **kw)
    os.kill(pid, signal.SIGKILL)
    t.join(300)
    r = out["r"]
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert len(info["all_seeds"]) == 6 and info["seed"] == 77
    assert backend(ray_server)["retries"] == retries + 1
    new = [p for p in saved_files(ray_server) if p not in before]
    assert len(new) == 7  # six pictures and the grid, each saved once
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in new}) == 7
    # the same request again, undisturbed: the same pictures
    again = txt2img(ray_server, "tiny-a", **kw, save_images=False)
    assert [pixels(x).tobytes() for x in again.json()["images"]] == [pixels(x).tobytes() for x in r.json()["images"]]


def _run_until_replica_known(server: Server, task: str, **kw: Any) -> tuple[threading.Thread, dict[str, Any], int]:
    """Start a job in a thread; return once it has made progress on a replica, with that replica's pid."""
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.setdefault("r", txt2img(server, "tiny-a", force_task_id=task, **kw)))
    t.start()
    deadline = time.time() + 120
    while time.time() < deadline:
        running = backend(server)["running"].get(task)
        prog = requests.post(f"{server.url}/internal/progress", json={"id_task": task}, timeout=10).json()
        if running and (prog.get("progress") or 0) > 0.1:
            return t, out, int(running["pid"])
        time.sleep(0.2)
    raise AssertionError("the job never ran")


def test_a_frozen_replica_is_given_up_and_the_job_completes_elsewhere(ray_server: Server) -> None:
    task = "task(scaleout-freeze)"
    retries = backend(ray_server)["retries"]
    t, out, pid = _run_until_replica_known(ray_server, task, steps=30, n_iter=6, seed=5, save_images=False)
    os.kill(pid, signal.SIGSTOP)  # alive but silent: a hung node
    t0 = time.time()
    try:
        t.join(300)
    finally:
        os.kill(pid, signal.SIGCONT)
    r = out["r"]
    assert r.status_code == 200, r.text
    assert len(json.loads(r.json()["info"])["all_seeds"]) == 6
    assert backend(ray_server)["retries"] == retries + 1
    assert time.time() - t0 >= SILENCE_S - 1  # given up after the silence, not before
    print(f"\nfrozen replica: the job completed on another one {time.time() - t0:.1f}s after the freeze")


def test_the_page_generates_through_ray(ray_server: Server, browser: Any) -> None:
    before = saved_files(ray_server)
    with open_page(browser, ray_server.url, timeout_ms=180_000) as page:
        page.locator("#txt2img_prompt textarea").fill("a blue circle")
        for elem_id, value in (("txt2img_steps", 4), ("txt2img_width", 64), ("txt2img_height", 64)):
            set_number(page, elem_id, value)
        page.click("#txt2img_generate")
        page.wait_for_function("() => { const i = document.querySelector('#txt2img_info');"
                               " return i && i.innerText.includes('Steps:'); }")
        info = page.inner_text("#txt2img_info")
        page.screenshot(path="/tmp/ui_scale_out.png", full_page=False)
        src = page.locator("#txt2img_gallery img").first.get_attribute("src")
    assert "a blue circle" in info and "Seed:" in info and "Size: 64x64" in info
    assert src
    new = [p for p in saved_files(ray_server) if p not in before]
    assert len(new) == 1
    text = Image.open(new[0]).info["parameters"]
    assert text.startswith("a blue circle")
    b = backend(ray_server)
    assert b["backend"] == "ray" and b["jobs"] >= 1
