"""``pldc eval``: score a ruleset's compiled prompt with a student model on labelled data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pldc.backend_cli import add_backend_arguments, check_backend_arguments, load_backend
from pldc.calls import DEFAULT_CHUNK_SIZE
from pldc.data import FRAMINGS
from pldc.errors import UsageError

# Modes are listed here rather than imported from pldc.evaluate, which imports the student module.
SCORING_MODES = ("logprob", "generate", "cot")


def add_eval_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prepare = commands.add_parser("prepare", help="convert the embedded student (SmolLM2-135M) for fast loading")
    prepare.add_argument("--force", action="store_true", help="convert again even if a converted copy exists")
    prepare.set_defaults(handler=run_prepare)

    parser = commands.add_parser("eval", help="score the compiled prompt with a student model on labelled data")
    parser.add_argument("ruleset", type=Path, metavar="RULESET")
    parser.add_argument("--data", type=Path, required=True, help="labelled data file (JSONL, CSV or ContractNLI JSON)")
    parser.add_argument("--framing", choices=FRAMINGS, help="how to read the data (default: guessed from the file)")
    parser.add_argument(
        "--model", default="embedded", help="'embedded' (SmolLM2-135M), a model folder or a cached Hub id"
    )
    variants = parser.add_mutually_exclusive_group()
    variants.add_argument(
        "--no-rules", action="store_true", help="score the task with no features or rules (zero-shot)"
    )
    variants.add_argument("--compare", action="store_true", help="score with and without rules and report both")
    parser.add_argument("--limit", type=int, help="score only the first N examples")
    parser.add_argument(
        "--scoring",
        choices=SCORING_MODES,
        default="logprob",
        help="logprob: pick the label with the highest log-probability (default); generate: parse a greedy answer; "
        "cot: reason first, then parse the final 'Answer: LABEL' line",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help="generation budget in tokens for --scoring generate or cot (default 16 and 256)",
    )
    parser.add_argument(
        "--shots", type=int, metavar="K", help="show K labelled examples from --shots-from in the prompt"
    )
    parser.add_argument("--shots-from", type=Path, metavar="TRAIN_PATH", help="training file to draw the shots from")
    parser.add_argument("--seed", type=int, default=0, help="random seed that draws the shots (default 0)")
    cache_modes = parser.add_mutually_exclusive_group()
    cache_modes.add_argument("--no-cache", action="store_true", help="call the model for every example; store nothing")
    cache_modes.add_argument(
        "--refresh", action="store_true", help="call the model for every example and overwrite the stored results"
    )
    parser.add_argument(
        "--cache", type=Path, metavar="PATH", help="call cache file (default: $PLDC_CALL_CACHE or pldc's cache home)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="examples computed between cache writes (default 64)"
    )
    parser.add_argument("--no-calibration", action="store_true", help="do not subtract content-free label scores")
    parser.add_argument("--no-prefix-cache", action="store_true", help="re-encode the whole prompt for every label")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (default 16)")
    parser.add_argument("--template", default="default", help="prompt template name or .j2 path")
    parser.add_argument("--map", action="append", default=[], metavar="INPUT=FIELD", help="generic data: input field")
    parser.add_argument("--label-field", default="label", help="generic data: the label column (default 'label')")
    parser.add_argument("--predictions", type=Path, help="write per-example predictions to this JSONL file")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_backend_arguments(parser)
    parser.set_defaults(handler=run_eval)


def run_prepare(args: argparse.Namespace) -> int:
    from pldc.embedded import prepare_embedded

    print(f"embedded student ready in {prepare_embedded(force=args.force)}")
    return 0


def _field_map(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        name, sep, field = pair.partition("=")
        if not sep or not name or not field:
            raise UsageError(f"--map {pair!r}: expected INPUT=FIELD")
        mapping[name] = field
    return mapping


def _check_eval_arguments(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    if args.max_new_tokens is not None:
        if args.scoring == "logprob":
            raise UsageError("--max-new-tokens applies to --scoring generate or cot only")
        if args.max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
    if (args.shots is None) != (args.shots_from is None):
        raise UsageError("--shots K and --shots-from TRAIN_PATH go together")
    if args.shots is not None and args.shots < 1:
        raise UsageError("--shots must be at least 1")


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pldc.cache import CacheMode, CallCache
    from pldc.compile import compile_prompt
    from pldc.data import load_dataset
    from pldc.evaluate import evaluate
    from pldc.files import open_output
    from pldc.openai_backend import OpenAIBackend
    from pldc.pipeline import load_ruleset
    from pldc.shots import load_shots

    _check_eval_arguments(args)
    check_backend_arguments(args)
    field_map = _field_map(args.map)
    checked = load_ruleset(args.ruleset)
    task = checked.ruleset.task
    assert task is not None
    dataset = load_dataset(args.data, task, args.framing, field_map, args.label_field, args.limit)
    shots = []
    if args.shots is not None:
        shots = load_shots(args.shots_from, task, args.shots, args.seed, dataset, field_map, args.label_field)
    # Fail on a bad template or output path now, not after minutes of scoring.
    for include_rules in (True, False):
        compile_prompt(
            checked.ruleset,
            checked.ordered,
            args.template,
            include_rules=include_rules,
            shots=shots,
            reasoning=args.scoring == "cot",
        )
    predictions = open_output(args.predictions) if args.predictions is not None else None
    mode = CacheMode.USE
    if args.no_cache:
        mode = CacheMode.OFF
    elif args.refresh:
        mode = CacheMode.REFRESH
    cache = CallCache(args.cache, mode)
    student = load_backend(args, [label.name.value for label in task.labels])
    variants = [True, False] if args.compare else [not args.no_rules]
    results = []
    for include_rules in variants:
        label = "with rules" if include_rules else "no rules"
        with tqdm(
            total=len(dataset.examples), desc=f"{args.scoring} ({label})", unit="ex", file=sys.stderr, disable=None
        ) as bar:
            results.append(
                evaluate(
                    checked,
                    dataset,
                    student,
                    include_rules=include_rules,
                    calibrate=not args.no_calibration,
                    template=args.template,
                    use_cache=not args.no_prefix_cache,
                    progress=bar.update,
                    scoring=args.scoring,
                    max_new_tokens=args.max_new_tokens,
                    shots=shots,
                    cache=cache,
                    chunk_size=args.chunk_size,
                )
            )
    cache.close()
    if predictions is not None:
        with predictions as handle:
            for result in results:
                for p in result.predictions:
                    record = {"variant": result.variant, "id": p.example_id, "gold": p.gold, "predicted": p.predicted}
                    extra = {"scores": p.scores} if p.answer is None else {"answer": p.answer}
                    handle.write(json.dumps({**record, **extra}, ensure_ascii=False) + "\n")
    header = {
        "ruleset": str(args.ruleset),
        "rules": len(checked.ruleset.rules),
        "data": str(args.data),
        "framing": dataset.framing,
        "examples": len(dataset.examples),
        "model": student.name,
        "scoring": args.scoring,
        "backend_scoring": student.scoring if isinstance(student, OpenAIBackend) else None,
        "calibration": "content-free" if args.scoring == "logprob" and not args.no_calibration else "none",
        "shots": {"count": len(shots), "from": str(args.shots_from), "seed": args.seed} if shots else None,
        "cache": {"mode": mode.value, "path": None if mode is CacheMode.OFF else str(cache.path)},
    }
    if args.json:
        print(json.dumps({**header, "results": [r.to_json() for r in results]}, indent=2, ensure_ascii=False))
        return 0
    _print_header(header)
    for result in results:
        _print_result(result)
    if len(results) == 2:
        delta = results[0].metrics.macro_f1 - results[1].metrics.macro_f1
        print(
            f"\nmacro-F1 with rules {results[0].metrics.macro_f1:.4f}, "
            f"without rules {results[1].metrics.macro_f1:.4f} ({delta:+.4f})"
        )
    return 0


def _print_header(header: dict[str, Any]) -> None:
    print(
        f"ruleset {header['ruleset']} ({header['rules']} rules) on {header['data']} "
        f"({header['examples']} examples, {header['framing']})"
    )
    description = {
        "logprob": "label log-probability scoring",
        "generate": "greedy answers",
        "cot": "reasoning, then an answer",
    }
    scoring = description[header["scoring"]]
    if header["backend_scoring"]:
        scoring += f" (server answers by {header['backend_scoring']})"
    print(f"student {header['model']}, {scoring}, calibration {header['calibration']}")
    if header["shots"]:
        shots = header["shots"]
        print(f"{shots['count']} shots drawn from {shots['from']} with seed {shots['seed']}")
    cache = header["cache"]
    print(f"call cache: {cache['mode']}" + (f" ({cache['path']})" if cache["path"] else ""))


def _print_result(result: object) -> None:
    from pldc.evaluate import EvalResult

    assert isinstance(result, EvalResult)
    metrics = result.metrics
    width = max(len(label) for label in metrics.labels) + 2
    print(f"\n== {result.variant}: macro-F1 {metrics.macro_f1:.4f}, accuracy {metrics.accuracy:.4f}")
    print(f"{'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for figures in metrics.per_class:
        print(
            f"{figures.label:<{width}}{figures.precision:>10.4f}{figures.recall:>10.4f}"
            f"{figures.f1:>10.4f}{figures.support:>9}"
        )
    print("confusion matrix (rows gold, columns predicted):")
    print(" " * width + "".join(f"{label[:9]:>10}" for label in metrics.labels))
    for label, counts in zip(metrics.labels, metrics.confusion, strict=True):
        print(f"{label:<{width}}" + "".join(f"{value:>10}" for value in counts))
    if result.unparseable:
        listed = ", ".join(result.unparseable[:5]) + (", ..." if len(result.unparseable) > 5 else "")
        print(f"unparseable answers (counted as wrong): {len(result.unparseable)}: {listed}")
    prompt = f", prompt {result.prompt_tokens} tokens" if result.prompt_tokens is not None else ""
    print(
        f"{len(result.predictions)} examples in {result.seconds:.1f} s "
        f"({result.examples_per_second:.2f} examples/s){prompt}"
    )
    print(
        f"latency {result.latency_seconds:.3f} s per example, "
        f"{result.generated_tokens_per_example:.1f} generated tokens per example"
    )
    cost = f"call cache: {result.cache_hits} hits, {result.computed} computed"
    if result.tokens_processed is not None:
        cost += f"; tokens processed {result.tokens_processed}"
        if result.tokens_lower_bound is not None:
            cost += f" (lower bound {result.tokens_lower_bound})"
    print(cost)
