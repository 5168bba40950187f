"""Scoring throughput of the embedded student on StereoSet dev, cached against naive.

Usage: python benchmarks/bench_scoring.py [--data PATH] [--limit N] [--naive-limit N]

Both paths run in this process on the same examples. The naive path re-encodes the whole
prompt for every example and label; it runs on the first ``--naive-limit`` examples only,
because it is slow. Prints examples per second, tokens processed and the largest score gap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pldc.compile import compile_prompt
from pldc.data import load_dataset
from pldc.pipeline import load_ruleset
from pldc.student import load_student

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ruleset", type=Path, default=ROOT / "rulesets" / "stereoset_domain.pld")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "stereoset" / "dev.jsonl")
    parser.add_argument("--limit", type=int, help="score only the first N examples with the cached path")
    parser.add_argument("--naive-limit", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    checked = load_ruleset(args.ruleset)
    task = checked.ruleset.task
    assert task is not None
    dataset = load_dataset(args.data, task, limit=args.limit)
    labels = [label.name.value for label in task.labels]
    inputs = [i.name.value for i in task.inputs]
    prompt = compile_prompt(checked.ruleset, checked.ordered).text
    student = load_student("embedded", batch_size=args.batch_size)
    print(f"student {student.name}; prompt {len(student.encode(prompt))} tokens; labels {student.label_ids(labels)}")

    rows = []
    for name, examples, use_cache in (
        ("cached", dataset.examples, True),
        ("naive", dataset.examples[: args.naive_limit], False),
    ):
        student.stats.tokens_processed = 0
        started = time.perf_counter()
        scores = student.score(prompt, examples, labels, inputs, use_cache=use_cache)
        seconds = time.perf_counter() - started
        rows.append((name, len(examples), seconds, student.stats.tokens_processed, scores))
        print(
            f"{name:>7}: {len(examples)} examples in {seconds:.1f} s = {len(examples) / seconds:.2f} examples/s, "
            f"{student.stats.tokens_processed / len(examples):.0f} tokens processed per example"
        )
    cached, naive = rows
    overlap = naive[1]
    gap = max(
        abs(a - b) for ra, rb in zip(cached[4][:overlap], naive[4], strict=True) for a, b in zip(ra, rb, strict=True)
    )
    speedup = (cached[1] / cached[2]) / (naive[1] / naive[2])
    print(f"speed-up cached/naive: {speedup:.1f}x; largest score difference on {overlap} shared examples: {gap:.2e}")


if __name__ == "__main__":
    main()
