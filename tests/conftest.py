"""Shared fixtures: tiny real-layout checkpoints on disk and a real server on 127.0.0.1."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


# Debian's chromium (playwright cannot download browsers here); one instance for the whole run
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"]
BROWSER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless chromium driven by playwright; skipped where chromium is missing, except in CI
    (run_tests.sh installs it there, so a missing browser is a failure)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not installed")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True)
        yield b
        b.close()


@contextlib.contextmanager
def open_page(browser: Any, url: str, ready: str = "#txt2img_prompt textarea",
              timeout_ms: int = BROWSER_TIMEOUT_MS) -> Iterator[Any]:
    """A fresh browser context on the page at `url`, once `ready` is shown; on exit the page must
    not have raised a JavaScript error."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(timeout_ms)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url.rstrip("/") + "/")
    pg.wait_for_selector(ready)
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, f"errors in the page: {errors}"


def tiny_ui_server(data_dir: Path, *extra: str, config: dict | None = None,
                   auth: tuple[str, str] | None = None) -> "Server":
    """The real server with its page, on a tiny SD1 checkpoint in `data_dir`'s models folder (and
    `config` as its config.json), once the model has loaded. `auth`: an API account (HTTP Basic)
    for a server started with accounts."""
    import json

    from tiny_models import make_tiny_checkpoint
    ckpt_dir = data_dir / "models" / "Stable-diffusion"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    make_tiny_checkpoint(ckpt_dir / "tiny-sd1.safetensors", family="sd1")
    if config is not None:
        (data_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    server = start_server(data_dir, ckpt_dir, *extra, nowebui=False, auth=auth)
    wait_for_model(server)
    return server


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module of tiny-model training: as fast, and two OpenMP threads
    spin-wait badly when the CPU is shared with other processes (measured 0.15 s vs 8 s per step)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint folder as a user would have it: two good files, a subfolder, and junk."""
    from tiny_models import make_tiny_checkpoint

    d = tmp_path_factory.mktemp("data") / "models" / "Stable-diffusion"
    d.mkdir(parents=True)
    make_tiny_checkpoint(d / "tiny-sd1.safetensors", family="sd1", seed=1)
    (d / "sub").mkdir()
    make_tiny_checkpoint(d / "sub" / "tiny-sd1-b.safetensors", family="sd1", seed=2)
    (d / "empty.safetensors").write_bytes(b"")
    (d / "truncated.safetensors").write_bytes((d / "tiny-sd1.safetensors").read_bytes()[:5000])
    (d / "notes.safetensors").write_bytes(b"this is not a model at all" * 10)
    return d


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, data_dir: Path, log: Path,
                 auth: tuple[str, str] | None = None) -> None:
        self.proc, self.url, self.data_dir, self.log = proc, url, data_dir, log
        self.auth = auth  # HTTP Basic for a server with accounts

    def api(self, path: str) -> str:
        return f"{self.url}/sdapi/v1/{path.lstrip('/')}"


def start_server(data_dir: Path, ckpt_dir: Path, *extra: str, nowebui: bool = True,
                 auth: tuple[str, str] | None = None) -> Server:
    port = free_port()
    log = data_dir / f"server-{port}.log"
    cmd = [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--data-dir", str(data_dir),
           "--ckpt-dir", str(ckpt_dir), *extra]
    if nowebui:
        cmd.append("--nowebui")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/sdapi/v1/sd-models", timeout=2, auth=auth).status_code == 200:
                return Server(proc, url, data_dir, log, auth)
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()


def wait_for_model(server: Server, timeout: float = 120) -> dict:
    """The model loads in the background after start; wait for it. Returns the options."""
    deadline = time.time() + timeout
    while True:
        opts = requests.get(server.api("options"), timeout=5, auth=server.auth).json()
        if opts.get("sd_checkpoint_hash") or time.time() > deadline:
            return opts
        time.sleep(0.3)


@pytest.fixture(scope="session")
def api_server(model_dir: Path) -> Server:
    data_dir = model_dir.parent.parent
    server = start_server(data_dir, model_dir, "--ckpt", str(model_dir / "tiny-sd1.safetensors"))
    wait_for_model(server)  # so tests measure generation only
    yield server
    stop_server(server)
