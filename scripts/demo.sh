#!/usr/bin/env bash
# Set up, compile the shipped StereoSet ruleset and score it on the StereoSet dev split with the
# embedded student, with and without its rules.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

DATA=${PLDC_DATA:-../shared/data}
mkdir -p out
pldc check rulesets/*.pld
pldc compile rulesets/stereoset_domain.pld -o out/stereoset_domain.prompt.txt
echo "compiled prompt: out/stereoset_domain.prompt.txt ($(wc -l < out/stereoset_domain.prompt.txt) lines)"
pldc eval rulesets/stereoset_domain.pld --data "$DATA/stereoset/dev.jsonl" --compare "$@"
