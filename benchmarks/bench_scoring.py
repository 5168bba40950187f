"""Scoring throughput of the embedded student, cached against naive, on StereoSet and ContractNLI.

Usage: python benchmarks/bench_scoring.py [--limit N] [--naive-limit N] [--documents N] [--naive-examples N]
       [--only stereoset|contract-nli]

Both paths run in this process on the same examples. The naive path re-encodes the whole
prompt for every example and label, so it runs on a subset only:

- StereoSet dev (``stereoset-domain`` framing, ``rulesets/stereoset_domain.pld``): the cached
  path scores the first ``--limit`` examples, the naive path the first ``--naive-limit``.
- ContractNLI dev (``contract-nli`` framing, ``rulesets/contract_nli.pld``): the cached path
  scores every hypothesis of the ``--documents`` shortest documents plus the longest document
  (for peak memory on a long input); the naive path scores the first ``--naive-examples``
  hypotheses of the shortest document.

Per dataset it prints examples per second of each path, tokens the cached path processed
against the lower bound (``Student.token_lower_bound``), the largest score difference on the
shared examples, and the process's peak resident memory after each phase.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from pldc.compile import compile_prompt
from pldc.data import Example, load_dataset
from pldc.pipeline import load_ruleset
from pldc.student import Student, load_student

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def contract_subset(examples: list[Example], documents: int) -> list[Example]:
    """Return every hypothesis of the ``documents`` shortest documents, then of the longest one."""
    by_document: dict[str, list[Example]] = {}
    for example in examples:
        by_document.setdefault(example.inputs["document"], []).append(example)
    ordered = sorted(by_document, key=len)
    chosen = [*ordered[:documents], ordered[-1]]
    return [example for document in dict.fromkeys(chosen) for example in by_document[document]]


def run(student: Student, title: str, ruleset: Path, examples: list[Example], naive_examples: list[Example]) -> None:
    checked = load_ruleset(ruleset)
    task = checked.ruleset.task
    assert task is not None
    labels = [label.name.value for label in task.labels]
    inputs = [i.name.value for i in task.inputs]
    prompt = compile_prompt(checked.ruleset, checked.ordered).text
    print(f"\n== {title}: prompt {len(student.encode(prompt))} tokens, labels {student.label_ids(labels)}")
    rows = []
    for name, subset, use_cache in (("cached", examples, True), ("naive", naive_examples, False)):
        student.clear_cache()
        student.stats.tokens_processed = 0
        started = time.perf_counter()
        scores = student.score(prompt, subset, labels, inputs, use_cache=use_cache)
        seconds = time.perf_counter() - started
        rows.append((len(subset), seconds, scores))
        print(
            f"{name:>7}: {len(subset)} examples in {seconds:.1f} s = {len(subset) / seconds:.3f} examples/s, "
            f"{student.stats.tokens_processed} tokens processed "
            f"({student.stats.tokens_processed / len(subset):.0f} per example); peak RSS {peak_rss_mib():.0f} MiB"
        )
        if use_cache:
            bound = student.token_lower_bound(prompt, subset, labels, inputs)
            print(
                f"         lower bound {bound} tokens; processed / bound = {student.stats.tokens_processed / bound:.3f}"
            )
    student.clear_cache()
    (cached_count, cached_seconds, cached_scores), (naive_count, naive_seconds, naive_scores) = rows
    # The naive examples are the first ones of the cached list, in the same order.
    gap = max(
        abs(a - b)
        for row_cached, row_naive in zip(cached_scores[:naive_count], naive_scores, strict=True)
        for a, b in zip(row_cached, row_naive, strict=True)
    )
    speedup = (cached_count / cached_seconds) / (naive_count / naive_seconds)
    print(f"speed-up cached/naive {speedup:.1f}x; largest score difference on {naive_count} shared examples {gap:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stereoset", type=Path, default=DATA / "stereoset" / "dev.jsonl")
    parser.add_argument("--contract-nli", type=Path, default=DATA / "contract_nli" / "dev.json")
    parser.add_argument("--limit", type=int, default=160, help="StereoSet examples for the cached path")
    parser.add_argument("--naive-limit", type=int, default=4, help="StereoSet examples for the naive path")
    parser.add_argument("--documents", type=int, default=1, help="shortest ContractNLI documents for the cached path")
    parser.add_argument("--naive-examples", type=int, default=2, help="ContractNLI examples for the naive path")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only", choices=["stereoset", "contract-nli"], help="run one dataset only")
    args = parser.parse_args()

    student = load_student("embedded", batch_size=args.batch_size)
    print(f"student {student.name}; peak RSS after loading {peak_rss_mib():.0f} MiB")

    if args.only != "contract-nli":
        stereoset_rules = ROOT / "rulesets" / "stereoset_domain.pld"
        task = load_ruleset(stereoset_rules).ruleset.task
        assert task is not None
        stereoset = load_dataset(args.stereoset, task, "stereoset-domain", limit=args.limit).examples
        run(student, f"StereoSet dev ({args.stereoset})", stereoset_rules, stereoset, stereoset[: args.naive_limit])
    if args.only != "stereoset":
        run_contract_nli(student, args.contract_nli, args.documents, args.naive_examples)


def run_contract_nli(student: Student, path: Path, documents: int, naive_examples: int) -> None:
    contract_rules = ROOT / "rulesets" / "contract_nli.pld"
    task = load_ruleset(contract_rules).ruleset.task
    assert task is not None
    contract = contract_subset(load_dataset(path, task, "contract-nli").examples, documents)
    chosen = len({example.inputs["document"] for example in contract})
    title = f"ContractNLI dev ({path}, {chosen} documents)"
    run(student, title, contract_rules, contract, contract[:naive_examples])


if __name__ == "__main__":
    main()
