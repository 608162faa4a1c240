"""A1111's system routes: /sdapi/v1/sd-modules, /internal/sysinfo and, with --api-server-stop,
/sdapi/v1/server-stop | server-restart | server-kill.

Restart follows A1111's contract with its launcher: the process writes `tmp/restart` in the install
folder and exits; webui.sh (which exports SD_WEBUI_RESTART) starts launch.py again while that file
appears.  Without such a launcher a restart cannot bring the server back, so the route answers 501.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from webui.cli import PROJECT_ROOT
from webui.version import VERSION

log = logging.getLogger(__name__)

MODULE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf")
RESTART_FILE = PROJECT_ROOT / "tmp" / "restart"  # where webui.sh looks, as A1111's launcher does
# option / flag names whose values never leave the machine (passwords, tokens, keys)
_SECRET = re.compile(r"auth|token|secret|password|passwd|api_?key|credential|cookie", re.I)


def module_files(svc: Any) -> list[dict[str, str]]:
    """VAE files (models/VAE) and text-encoder files (models/text_encoder): [{model_name, filename}]."""
    out = [{"model_name": e["model_name"], "filename": e["filename"]}
           for e in svc.models.vae_listing() if "error" not in e]
    te_dir = Path(svc.paths.models_dir) / "text_encoder"
    if te_dir.is_dir():
        out += [{"model_name": p.name, "filename": str(p)} for p in sorted(te_dir.rglob("*"))
                if p.is_file() and p.suffix.lower() in MODULE_SUFFIXES]
    return out


def _git_commit(root: Path) -> str:
    """HEAD of the install folder's git checkout, read from .git (no git process)."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text(encoding="utf-8").strip()
        for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return "<none>"


def _pretty_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def _cpu() -> dict[str, Any]:
    import psutil

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "count logical": psutil.cpu_count(logical=True),
            "count physical": psutil.cpu_count(logical=False)}


def _ram() -> dict[str, str]:
    import psutil

    vm = psutil.virtual_memory()._asdict()
    return {k: _pretty_bytes(v) for k, v in vm.items() if k != "percent" and isinstance(v, (int, float))}


def _torch_env() -> dict[str, Any]:
    """The parts of torch's collect_env that describe the device (its full run starts nvidia-smi and pip)."""
    import torch

    cuda = torch.cuda.is_available()
    return {"torch_version": torch.__version__, "is_debug_build": str(torch.version.debug),
            "cuda_compiled_version": torch.version.cuda, "hip_compiled_version": getattr(torch.version, "hip", None),
            "is_cuda_available": str(cuda),
            "cudnn_version": torch.backends.cudnn.version() if cuda else None,
            "nvidia_gpu_models": ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            if cuda else None,
            "mps_available": str(bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())),
            "os": platform.platform(), "python_version": sys.version.replace("\n", " ")}


def _redacted_argv(argv: list[str]) -> list[str]:
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append("<hidden>")
            hide_next = False
        elif a.startswith("--") and _SECRET.search(a):
            name, eq, _ = a.partition("=")
            out.append(f"{name}=<hidden>" if eq else name)
            hide_next = not eq
        else:
            out.append(a)
    return out


def _config(svc: Any) -> dict[str, Any]:
    return {k: ("<hidden>" if _SECRET.search(k) else v) for k, v in svc.settings.all().items()}


def sysinfo(svc: Any) -> dict[str, Any]:
    """A1111's sysinfo keys that mean something here (no environment variables, no secrets)."""
    ext = getattr(svc, "extensions", None)
    exts = [e.api_entry() for e in ext.refresh()] if ext is not None else []
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()
                      if d.metadata["Name"])
    return {
        "Platform": platform.platform(), "Python": platform.python_version(), "Version": VERSION,
        "Commit": _git_commit(PROJECT_ROOT), "Script path": str(PROJECT_ROOT),
        "Data path": str(svc.paths.data_dir), "Extensions dir": str(svc.paths.data_dir / "extensions"),
        "Commandline": _redacted_argv(sys.argv), "Torch env info": _torch_env(), "CPU": _cpu(), "RAM": _ram(),
        "Extensions": [e for e in exts if e["enabled"]], "Inactive extensions": [e for e in exts if not e["enabled"]],
        "Config": _config(svc), "Packages": packages,
    }


def build_sysinfo_router(svc: Any) -> APIRouter:
    """/internal/sysinfo (JSON; `?attachment=true` as a download) and /internal/sysinfo-download."""
    r = APIRouter(tags=["internal"])

    def answer(attachment: bool) -> Response:
        text = json.dumps(sysinfo(svc), indent=4, ensure_ascii=False, default=str)
        headers = {}
        if attachment:
            stamp = _dt.datetime.now().strftime("%Y-%m-%d-%H-%M")
            headers["Content-Disposition"] = f'attachment; filename="sysinfo-{stamp}.json"'
        return Response(text, media_type="application/json", headers=headers)

    @r.get("/internal/sysinfo")
    def get_sysinfo(attachment: bool = False) -> Response:
        return answer(attachment)

    @r.get("/internal/sysinfo-download")
    def download_sysinfo() -> Response:
        return answer(True)

    return r


def build_server_router(stop: Callable[[], None]) -> APIRouter:
    """Only installed with --api-server-stop (A1111): without it these paths are 404."""
    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

    @r.post("/server-kill")
    def server_kill() -> Response:
        log.warning("server-kill: exiting now")
        threading.Timer(0.2, lambda: os._exit(0)).start()  # after the answer has left
        return Response("Killing.")

    @r.post("/server-restart")
    def server_restart() -> Response:
        if not os.environ.get("SD_WEBUI_RESTART"):
            raise HTTPException(501, "restart needs a launcher that starts the server again (webui.sh); "
                                     "this process was started without one")
        RESTART_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESTART_FILE.touch()
        log.warning("server-restart: stopping; webui.sh starts the server again")
        stop()
        return Response("Restarting.")

    @r.post("/server-stop")
    def server_stop() -> Response:
        log.warning("server-stop: stopping after the running requests")
        stop()
        return Response("Stopping.")

    return r


def build_modules_router(svc: Any) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

    @r.get("/sd-modules")
    def sd_modules() -> list[dict[str, str]]:
        """A1111/Forge's list of separate model parts a checkpoint can be combined with."""
        return module_files(svc)

    return r
