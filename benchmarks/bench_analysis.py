"""Time rule analysis (ordering plus every finding pass) on generated rulesets.

Usage: python benchmarks/bench_analysis.py [--sizes 1000 10000] [--rules-per-topic 50]

Every generated rule requires one value of a ``topic`` feature that has one value per
``--rules-per-topic`` rules, and tests two to four of 60 shared bool and 20 one-of features.
Times are CPU seconds of this process (``time.process_time``), which other processes on a
shared machine disturb less than wall-clock time. Prints seconds per size (ordering, then the
whole analysis, then each pass on its own), pairs compared, findings by kind, and the ratio of
the largest size to the smallest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pldc.analysis import analyze
from pldc.analysis.passes import PASSES, Context
from pldc.order import order_rules
from pldc.parse import parse

from generate import generate_ruleset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rules-per-topic", type=int, default=50)
    args = parser.parse_args()
    timings = []
    for size in args.sizes:
        ruleset = parse(generate_ruleset(size, rules_per_topic=args.rules_per_topic), "bench.pld").ruleset
        started = time.process_time()
        ordering = order_rules(ruleset)
        ordered_at = time.process_time()
        analysis = analyze(ruleset, ordering.rules, ordering.priorities)
        finished = time.process_time()
        context = Context.build(ruleset, ordering.rules, ordering.priorities)
        pairs = sum(1 for _ in context.index.pairs())
        passes = []
        for run in PASSES:
            begun = time.process_time()
            run(context)
            passes.append(f"{run.__name__.removeprefix('find_')} {time.process_time() - begun:.2f}")
        total = finished - started
        timings.append(total)
        kinds: dict[str, int] = {}
        for finding, _ in analysis.findings:
            kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
        print(
            f"{size:>6} rules: order {ordered_at - started:6.2f} s, analysis {finished - ordered_at:6.2f} s, "
            f"total {total:6.2f} s; {pairs} candidate pairs; findings {kinds}"
        )
        print(f"        passes alone (s): {', '.join(passes)}")
    if len(timings) > 1:
        print(f"ratio {args.sizes[-1]} / {args.sizes[0]} rules: {timings[-1] / timings[0]:.1f}x")


if __name__ == "__main__":
    main()
