"""Time parse, check (resolve, order, cases) and compile per rule for generated rulesets.

Usage: python benchmarks/bench_compile.py [--sizes 100 1000 10000] [--repeat 3]
Prints the best of ``--repeat`` runs per stage, in microseconds per rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pldc.cases import run_cases
from pldc.compile import compile_prompt
from pldc.order import order_rules
from pldc.parse import parse
from pldc.resolve import resolve

from generate import generate_ruleset


def _best(function, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'rules':>7} {'parse':>10} {'check':>10} {'compile':>10} {'total':>10}   (microseconds per rule)")
    for size in args.sizes:
        measure(size, args.repeat)


def measure(size: int, repeat: int) -> None:
    source = generate_ruleset(size)
    parse_time, parsed = _best(lambda: parse(source, "bench.pld"), repeat)
    ruleset = parsed.ruleset  # type: ignore[attr-defined]

    def check():  # type: ignore[no-untyped-def]
        assert resolve(ruleset) == []
        ordering = order_rules(ruleset)
        run_cases(ruleset, ordering.rules, ordering.priorities)
        return ordering

    check_time, ordering = _best(check, repeat)
    compile_time, _ = _best(lambda: compile_prompt(ruleset, ordering.rules), repeat)  # type: ignore[attr-defined]
    total = parse_time + check_time + compile_time
    per_rule = [t / size * 1e6 for t in (parse_time, check_time, compile_time, total)]
    print(f"{size:>7} " + " ".join(f"{value:>10.1f}" for value in per_rule) + f"   total {total:.2f} s")


if __name__ == "__main__":
    main()
