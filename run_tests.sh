#!/usr/bin/env bash
# Install everything the tests need (venv, CPU torch, test extras, Debian's chromium) and run the suite.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  fi
fi
WEBUI_INSTALL_ONLY=1 WEBUI_EXTRAS=test ./webui.sh
exec .venv/bin/python -m pytest -q "$@"
