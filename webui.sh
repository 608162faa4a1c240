#!/usr/bin/env bash
# Install (first run) and launch the web UI. Extra arguments go to launch.py, e.g. ./webui.sh --listen
#   TORCH_SPEC       torch requirement to install (default: torch==2.13.0, the CPU wheel on a CPU-only machine)
#   TORCH_INDEX_URL  extra index for CUDA wheels, e.g. https://download.pytorch.org/whl/cu128
#   PYTHON           interpreter to create the venv with (default python3, 3.10-3.12)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}" --extra-index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
stamp="$VENV/.webui-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ -n "${WEBUI_EXTRAS:-}" ]; then
  "$PY" -m pip install -e ".${WEBUI_EXTRAS:+[$WEBUI_EXTRAS]}"
  touch "$stamp"
fi
# Model upscalers use spandrel. It declares torchvision, which it imports only for two architectures this app
# never runs (LaMa inpainting, RestoreFormer faces); pip would add a CUDA torchvision wheel that cannot load
# beside CPU torch and breaks every transformers import, so spandrel is installed without its dependencies
# (einops comes from pyproject.toml; a working torchvision, if installed, is used).
SPANDREL_VERSION=0.4.2
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('spandrel') != '$SPANDREL_VERSION')" 2>/dev/null; then
  "$PY" -m pip install --no-deps "spandrel==$SPANDREL_VERSION"
fi
# Face restoration: CodeFormer's architecture lives in spandrel_extra_arches (0.2.0 is the release built for
# spandrel 0.4; it imports no torchvision). It declares torchvision too, so it is installed the same way.
SPANDREL_EXTRA_ARCHES_VERSION=0.2.0
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('spandrel_extra_arches') != '$SPANDREL_EXTRA_ARCHES_VERSION')" 2>/dev/null; then
  "$PY" -m pip install --no-deps "spandrel_extra_arches==$SPANDREL_EXTRA_ARCHES_VERSION"
fi
if [ "${WEBUI_INSTALL_ONLY:-0}" = "1" ]; then exit 0; fi
# A1111's restart contract: POST /sdapi/v1/server-restart (with --api-server-stop) writes tmp/restart and
# exits; the server is started again for as long as it leaves that file behind
export SD_WEBUI_RESTART=1
while true; do
  rm -f tmp/restart
  rc=0
  "$PY" launch.py "$@" || rc=$?
  [ -f tmp/restart ] || exit "$rc"
done
