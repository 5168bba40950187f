#!/usr/bin/env bash
# Replay the recorded refinement of rulesets/stereoset_distilled.pld: write the two StereoSet
# slices, run pldc distill refine with the teacher's recorded batch answers, and compare the
# output with rulesets/stereoset_refined.pld. The student scores every slice on the CPU, about
# ten minutes on 2 cores without a warm call cache. Usage: scripts/refine_recorded.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PLDC_DATA:-../shared/data}
. .venv/bin/activate
python scripts/refine_splits.py "$DATA" runs/refine
RECORDED=rulesets/teacher/stereoset/refine
pldc distill refine rulesets/stereoset_distilled.pld \
    --train runs/refine/train_slice.jsonl --validation runs/refine/validation_slice.jsonl \
    --run-dir runs/refine/replay --framing stereoset-domain --rounds 2 --failures 8 --successes 4 \
    --model claude-subagent --import-batch "$RECORDED/results_1.jsonl" --import-batch "$RECORDED/results_2.jsonl" \
    -o runs/refine/refined.pld
pldc check --strict runs/refine/refined.pld
if cmp -s runs/refine/refined.pld rulesets/stereoset_refined.pld; then
    echo "refined.pld: identical to rulesets/stereoset_refined.pld"
else
    echo "refined.pld: differs from rulesets/stereoset_refined.pld" >&2
    exit 1
fi
