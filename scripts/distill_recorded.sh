#!/usr/bin/env bash
# Rebuild the distilled rulesets from the recorded teacher answers under rulesets/teacher/ and
# compare them with the committed rulesets/*_distilled.pld. Usage: scripts/distill_recorded.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${PLDC_DATA:-../shared/data}
OUT=${1:-runs/recorded}
. .venv/bin/activate
rm -rf "$OUT"
mkdir -p "$OUT/stereoset" "$OUT/contract_nli"

# The StereoSet answers are for random.Random(20261204).sample of 320 training rows; --sample draws
# the same rows and keeps their ids (FILE:LINE of train.jsonl).
pldc distill extract rulesets/stereoset_domain.pld --data "$DATA/stereoset/train.jsonl" \
    --sample 320 --seed 20261204 --framing stereoset-domain --run-dir "$OUT/stereoset" --model claude-subagent \
    --import-batch rulesets/teacher/stereoset/results.jsonl
pldc distill build rulesets/stereoset_domain.pld --run-dir "$OUT/stereoset" \
    --data ../shared/data/stereoset/train.jsonl --split "train (320-row seeded sample)" \
    -o "$OUT/stereoset_distilled.pld"

# ContractNLI: train_small.json contains 34 pairs, and the first 16 NDAs of dev.json add 272 more.
pldc distill extract rulesets/contract_nli.pld --data "$DATA/contract_nli/train_small.json" \
    --framing contract-nli --run-dir "$OUT/contract_nli_train" --model claude-subagent-teacher \
    --import-batch rulesets/teacher/contract_nli/results.jsonl
pldc distill extract rulesets/contract_nli.pld --data "$DATA/contract_nli/dev.json" --limit 272 \
    --framing contract-nli --run-dir "$OUT/contract_nli_dev" --model claude-subagent-teacher \
    --import-batch rulesets/teacher/contract_nli/results_dev.jsonl
cat "$OUT/contract_nli_train/extract.jsonl" "$OUT/contract_nli_dev/extract.jsonl" > "$OUT/contract_nli/extract.jsonl"
pldc distill build rulesets/contract_nli.pld --run-dir "$OUT/contract_nli" \
    --data ../shared/data/contract_nli/train_small.json \
    --split "train_small.json (2 NDAs) and dev.json (first 16 NDAs)" -o "$OUT/contract_nli_distilled.pld"

# The same StereoSet rules, merged and resolved by the teacher from its recorded batch answers.
# The answers were written for the clusters of eps 0.05, so that eps is given explicitly.
mkdir -p "$OUT/stereoset_teacher"
cp "$OUT/stereoset/extract.jsonl" "$OUT/stereoset_teacher/"
IMPORTS=()
for number in $(seq 1 12); do
    IMPORTS+=(--import-batch "rulesets/teacher/stereoset/build/results_$number.jsonl")
done
PLDC_CALL_CACHE="$OUT/teacher_calls.sqlite" pldc distill build rulesets/stereoset_domain.pld \
    --run-dir "$OUT/stereoset_teacher" --data ../shared/data/stereoset/train.jsonl \
    --split "train (320-row seeded sample)" --eps 0.05 --min-samples 3 \
    --merge teacher --resolve teacher --model claude-subagent "${IMPORTS[@]}" \
    -o "$OUT/stereoset_distilled_teacher.pld" 2> "$OUT/stereoset_teacher/warnings.txt"

pldc check "$OUT/stereoset_distilled.pld" "$OUT/contract_nli_distilled.pld" "$OUT/stereoset_distilled_teacher.pld"
for name in stereoset_distilled contract_nli_distilled stereoset_distilled_teacher; do
    if cmp -s "$OUT/$name.pld" "rulesets/$name.pld"; then
        echo "$name.pld: identical to rulesets/$name.pld"
    else
        echo "$name.pld: differs from rulesets/$name.pld" >&2
        exit 1
    fi
done
