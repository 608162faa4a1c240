"""Starting a real `--nowebui` server for the queue tests, also with accounts (conftest's
start_server waits for an answer without credentials, which a server with accounts refuses)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from conftest import ROOT, Server, free_port


def start_api_server(data_dir: Path, ckpt_dir: Path, *extra: str, auth: tuple[str, str] | None = None,
                     timeout: float = 180) -> Server:
    """Start the server and wait until the model has loaded (asked as `auth` when given)."""
    port = free_port()
    log = data_dir / f"server-{port}.log"
    cmd = [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--data-dir", str(data_dir),
           "--ckpt-dir", str(ckpt_dir), "--nowebui", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    server = Server(proc, f"http://127.0.0.1:{port}", data_dir, log)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            r = requests.get(server.api("options"), auth=auth, timeout=5)
            if r.status_code == 200 and r.json().get("sd_checkpoint_hash"):
                return server
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not load its model: {log.read_text()[-3000:]}")
