"""A server that runs for weeks: no lock held while settings listeners run, no job waiting for a job
queued behind it, and a log an operator can read at the level asked for (--log-level)."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from conftest import ROOT, free_port, start_server, stop_server, wait_for_model
from webui.services.jobs import JobInJobError, JobQueue
from webui.settings import Settings


def test_a_listener_may_use_settings_from_another_thread(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path / "config.json")
    seen: list[object] = []

    def listener(value: object) -> None:
        # a model switch: slow, and its work reads and writes settings from a worker thread
        def other() -> None:
            seen.append(settings.get("CLIP_stop_at_last_layers"))
            settings.set("eta_noise_seed_delta", 31337)
        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert not t.is_alive(), "the other thread is stuck on the settings lock"

    settings.on_change("CLIP_stop_at_last_layers", listener)
    done = threading.Event()

    def change() -> None:
        settings.set("CLIP_stop_at_last_layers", 2)
        done.set()

    threading.Thread(target=change, daemon=True).start()
    assert done.wait(15), "settings.set deadlocked while its listener ran"
    # the listener saw the old value (it runs before the new one is stored); both values are kept
    assert seen == [1]
    assert settings.get("CLIP_stop_at_last_layers") == 2 and settings.get("eta_noise_seed_delta") == 31337
    assert '"eta_noise_seed_delta": 31337' in (tmp_path / "config.json").read_text()


def test_a_failing_listener_leaves_the_old_value(tmp_path: Path) -> None:
    settings = Settings.load(tmp_path / "config.json")

    def refuse(value: object) -> None:
        raise ValueError("checkpoint not found")

    settings.on_change("sd_vae", refuse)
    with pytest.raises(ValueError):
        settings.set("sd_vae", "missing.safetensors")
    assert settings.get("sd_vae") == "Automatic"


def test_work_asked_for_inside_a_job_runs_in_place_not_behind_itself() -> None:
    queue = JobQueue()
    try:
        def inner(state) -> str:
            return f"inner ran in {state.label} on {threading.current_thread().name}"

        def outer(state) -> str:
            return queue.call(inner, label="load checkpoint")  # e.g. a script switching the checkpoint

        job = queue.submit(outer, label="txt2img")
        assert job.result(timeout=10) == "inner ran in txt2img on job-worker"

        def waits_for_a_queued_job(state) -> str:
            return queue.submit(inner, label="load checkpoint").result()

        job = queue.submit(waits_for_a_queued_job, label="txt2img")
        with pytest.raises(JobInJobError, match="waited for a job queued behind it"):
            job.result(timeout=10)
        # the queue goes on: the job queued from inside ran after, and new jobs run
        assert queue.call(inner, label="reload").startswith("inner ran in reload")
    finally:
        queue.close()


def _lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8", errors="replace").splitlines()


STAMPED = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) webui[\w.]*: ")


def test_log_level_debug_shows_what_the_server_did(tmp_path: Path, model_dir: Path) -> None:
    srv = start_server(tmp_path, model_dir, "--log-level", "debug", "--ckpt", str(model_dir / "tiny-sd1.safetensors"))
    try:
        wait_for_model(srv)
        caches = {c["name"]: c for c in requests.get(srv.api("memory"), timeout=10).json()["caches"]}
        assert requests.post(srv.api("options"), json={"lora_cache_mb": 64}, timeout=10).status_code == 200
        lora = next(c for c in requests.get(srv.api("memory"), timeout=10).json()["caches"] if c["name"] == "LoRA")
        assert lora["max_bytes"] == 64 * 1024 * 1024
        bad = requests.post(srv.api("options"), json={"lora_cache_mb": -1}, timeout=10)
        assert bad.status_code == 400 and "lora_cache_mb" in bad.text
    finally:
        stop_server(srv)
    # every bounded cache is reported to the operator with its bound (LoRA: the option's 256 MB)
    assert {"LoRA", "hypernetwork", "ControlNet", "VAE", "prompt encoding", "upscaler", "face restorer"} <= set(caches)
    assert caches["LoRA"]["max_bytes"] == 256 * 1024 * 1024 and caches["VAE"]["max_entries"] == 1
    lines = _lines(srv.log)
    ours = [ln for ln in lines if STAMPED.match(ln)]
    assert any(" DEBUG webui.services.model_service: Reading checkpoint " in ln for ln in ours), lines[-40:]
    assert any(" INFO webui.services.model_service: Loaded tiny-sd1" in ln for ln in ours), lines[-40:]
    assert any(" INFO webui.app: API ready at " in ln for ln in ours), lines[-40:]


def test_log_level_warning_hides_info_lines(tmp_path: Path, model_dir: Path) -> None:
    cmd = [sys.executable, str(ROOT / "launch.py"), "--nowebui", "--exit", "--port", str(free_port()),
           "--data-dir", str(tmp_path), "--ckpt-dir", str(model_dir), "--log-level", "WARNING"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert not any(" INFO " in ln or " DEBUG " in ln for ln in text.splitlines() if STAMPED.match(ln)), text
    assert "ready at" not in text and "Running on local URL" not in text, text
    bad = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--log-level", "chatty"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'CHATTY'" in bad.stderr, bad.stderr[-2000:]
