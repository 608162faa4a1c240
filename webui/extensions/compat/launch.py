"""A1111's `launch` module for extensions' `install.py` files.

The loader runs each `install.py` in a subprocess with the app's interpreter and
`webui/extensions/compat` first on PYTHONPATH, so `import launch` finds this file: `run_pip`,
`is_installed`, `run`, `run_python`, `git_clone`, `python`, `git`, `index_url`, `commit_hash()`,
`git_tag()`, `args`, `skip_install`, `requirements_met`. `run_pip` runs
`<python> -m pip install ...`; without network pip fails, `run` raises RuntimeError with pip's
output, install.py exits non-zero and the loader reports it on the extension.

Kept light: no torch, no gradio, nothing of the app but its flag parser.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("launch")
if not logging.getLogger().handlers:  # an install.py subprocess: show the steps on stdout, as A1111 does
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)

PROJECT_ROOT = Path(__file__).resolve().parents[3]
script_path = str(PROJECT_ROOT)
python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"


def _parse_args() -> argparse.Namespace:
    """The app's flags from COMMANDLINE_ARGS (flags extensions add are kept too, unparsed)."""
    argv = shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    try:
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.append(str(PROJECT_ROOT))
        from webui.cli import build_parser
        args, _ = build_parser().parse_known_args(argv)
        return args
    except (ImportError, SystemExit):
        return argparse.Namespace(skip_install=False)


args = _parse_args()
skip_install = bool(getattr(args, "skip_install", False))


def run(command: str | list[str], desc: str | None = None, errdesc: str | None = None,
        custom_env: dict[str, str] | None = None, live: bool = default_command_live) -> str:
    """Run a shell command; its output is returned, a failure raises RuntimeError with the output."""
    if desc:
        log.info("%s", desc)
    kwargs: dict[str, Any] = dict(args=command, shell=isinstance(command, str), env=os.environ if custom_env is None
                                  else custom_env, encoding="utf8", errors="ignore")
    if not live:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    result = subprocess.run(**kwargs)
    if result.returncode != 0:
        parts = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        if result.stdout:
            parts.append(f"stdout: {result.stdout}")
        if result.stderr:
            parts.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(parts))
    return result.stdout or ""


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str | None:
    """`python -m pip <command>` (A1111 passes "install <package>")."""
    if skip_install:
        return None
    index_url_line = f" --index-url {index_url}" if index_url else ""
    return run(f'"{python}" -m pip {command} --prefer-binary{index_url_line}', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", live=live)


def run_python(code: str, live: bool = default_command_live) -> str:
    return run(f'"{python}" -c "{code}"', live=live)


def is_installed(package: str) -> bool:
    """True when a distribution (or importable module) of that name is installed."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except (ModuleNotFoundError, ValueError):
            return False
        return spec is not None
    return dist is not None


def commit_hash() -> str:
    try:
        return subprocess.check_output([git, "-C", script_path, "rev-parse", "HEAD"], shell=False,
                                       encoding="utf8", stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001 - A1111 answers "<none>"
        return "<none>"


def git_tag() -> str:
    try:
        return subprocess.check_output([git, "-C", script_path, "describe", "--tags"], shell=False,
                                       encoding="utf8", stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "<none>"


def repo_dir(name: str) -> str:
    return os.path.join(script_path, dir_repos, name)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:
    """Clone `url` into `dir` (or check out `commithash` in an existing clone)."""
    if os.path.exists(dir):
        if commithash is None:
            return
        current = run(f'"{git}" -C "{dir}" rev-parse HEAD', None, f"Couldn't determine {name}'s hash").strip()
        if current == commithash:
            return
        run(f'"{git}" -C "{dir}" fetch', f"Fetching updates for {name}...", f"Couldn't fetch {name}")
        run(f'"{git}" -C "{dir}" checkout {commithash}', f"Checking out commit for {name}", f"Couldn't checkout {name}")
        return
    run(f'"{git}" clone "{url}" "{dir}"', f"Cloning {name} into {dir}...", f"Couldn't clone {name}")
    if commithash is not None:
        run(f'"{git}" -C "{dir}" checkout {commithash}', None, f"Couldn't checkout {name}'s hash: {commithash}")


def requirements_met(requirements_file: str) -> bool:
    """A1111's check: every `name==version` line is installed at exactly that version (other lines
    are not checked)."""
    from packaging import version

    with open(requirements_file, encoding="utf8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"\s*([-_a-zA-Z0-9]+)\s*(?:==\s*([-+_.a-zA-Z0-9]+))?\s*", line)
            if m is None or not (m.group(2) or "").strip():
                continue
            try:
                installed = importlib.metadata.version(m.group(1).strip())
            except importlib.metadata.PackageNotFoundError:
                return False
            if version.parse(m.group(2).strip()) != version.parse(installed):
                return False
    return True
