#!/usr/bin/env bash
# Install advsyst (and its test tools) into the current Python environment.
# - Keeps a torch that is already installed (GPU builds included).
# - Otherwise installs the CPU wheel torch==2.13.0 first, so that pip never resolves
#   the bare `torch` requirement to a multi-GB CUDA build on a CPU-only machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "[setup] no torch found: installing the CPU wheel torch==2.13.0"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
echo "[setup] advsyst installed: $("$PY" -c 'import advsyst; print(advsyst.__version__)')"
