"""``pldc ablate`` and ``pldc report``: measure what each rule is worth and report it for auditors.

``ablate`` scores the full ruleset and every leave-one-out variant (see :mod:`pldc.ablate`),
prints a table or JSON, and can save the JSON document, write the HTML report and write a
pruned ``.pld`` file. ``report`` renders a saved JSON document again without scoring.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pldc.data import FRAMINGS, Dataset
from pldc.errors import InputError, UsageError

if TYPE_CHECKING:
    from pldc.ablate import Ablation
    from pldc.pipeline import CheckedRuleset


def add_ablate_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pldc.ablate import DEFAULT_RESAMPLES, DEFAULT_SEED

    parser = commands.add_parser("ablate", help="score the ruleset without each rule and report what each is worth")
    parser.add_argument("ruleset", type=Path, metavar="RULESET")
    parser.add_argument("--data", type=Path, required=True, help="labelled data file (JSONL, CSV or ContractNLI JSON)")
    parser.add_argument("--framing", choices=FRAMINGS, help="how to read the data (default: guessed from the file)")
    parser.add_argument(
        "--model", default="embedded", help="'embedded' (SmolLM2-135M), a model folder or a cached Hub id"
    )
    parser.add_argument("--groups", action="store_true", help="also leave out each group of rules as a whole")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_RESAMPLES,
        metavar="N",
        help=f"paired bootstrap resamples for the 95%% intervals (default {DEFAULT_RESAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})")
    parser.add_argument("--limit", type=int, help="score only the first N examples")
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="score a random sample of N examples (drawn with --seed, kept in file order), for a faster run",
    )
    parser.add_argument("--no-calibration", action="store_true", help="do not subtract content-free label scores")
    parser.add_argument("--no-prefix-cache", action="store_true", help="re-encode the whole prompt for every label")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (default 16)")
    parser.add_argument("--template", default="default", help="prompt template name or .j2 path")
    parser.add_argument("--map", action="append", default=[], metavar="INPUT=FIELD", help="generic data: input field")
    parser.add_argument("--label-field", default="label", help="generic data: the label column (default 'label')")
    parser.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    parser.add_argument("--save", type=Path, metavar="FILE", help="also write the JSON document to FILE")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write the HTML report to FILE")
    parser.add_argument(
        "--prune",
        type=Path,
        metavar="OUT",
        help="write OUT, a .pld file without the rules whose removal does not lower macro-F1 (see docs/ablation.md)",
    )
    parser.set_defaults(handler=run_ablate)

    report = commands.add_parser("report", help="render a saved `pldc ablate --save` document as HTML or text")
    report.add_argument("document", type=Path, metavar="ABLATION_JSON")
    report.add_argument("--format", choices=("html", "text"), default="html", help="output format (default html)")
    report.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    report.set_defaults(handler=run_report)


@contextmanager
def _progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit="ex", file=sys.stderr, disable=None) as bar:
        yield bar.update


def _validate(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.bootstrap < 1:
        raise UsageError("--bootstrap must be at least 1")
    if args.sample is not None and args.sample < 1:
        raise UsageError("--sample must be at least 1")
    outputs = [path.resolve() for path in (args.save, args.html, args.prune) if path is not None]
    if args.prune is not None and args.prune.resolve() == args.ruleset.resolve():
        raise UsageError("--prune must name a new file, not the ruleset being ablated")
    if len(set(outputs)) < len(outputs):
        raise UsageError("--save, --html and --prune must name different files")
    if args.html is not None:
        from pldc.report import require_matplotlib

        require_matplotlib()
    for path in (args.save, args.html, args.prune):
        # Checked before scoring, so a typo in a folder name does not cost the whole run.
        if path is not None and not path.resolve().parent.is_dir():
            raise InputError(f"{path}: directory {path.parent} does not exist")


def _sample(dataset: Dataset, size: int, seed: int) -> Dataset:
    if size > len(dataset.examples):
        raise UsageError(f"--sample {size} exceeds the {len(dataset.examples)} examples in {dataset.path}")
    chosen = sorted(random.Random(seed).sample(range(len(dataset.examples)), size))
    examples = [dataset.examples[index] for index in chosen]
    return replace(dataset, examples=examples, label_counts=dict(Counter(e.label for e in examples)))


def run_ablate(args: argparse.Namespace) -> int:
    from pldc.ablate import ablate
    from pldc.compile import compile_prompt
    from pldc.data import load_dataset
    from pldc.eval_cli import _field_map
    from pldc.files import write_text
    from pldc.pipeline import load_ruleset
    from pldc.report import build_document, render_html, render_text
    from pldc.student import load_student

    _validate(args)
    field_map = _field_map(args.map)
    checked = load_ruleset(args.ruleset)
    task = checked.ruleset.task
    assert task is not None
    dataset = load_dataset(args.data, task, args.framing, field_map, args.label_field, args.limit)
    if args.sample is not None:
        dataset = _sample(dataset, args.sample, args.seed)
    # Fail on a bad template now, not after an hour of scoring.
    compile_prompt(checked.ruleset, checked.ordered, args.template)
    student = load_student(args.model, batch_size=args.batch_size)
    ablation = ablate(
        checked,
        dataset,
        student,
        groups=args.groups,
        calibrate=not args.no_calibration,
        template=args.template,
        use_cache=not args.no_prefix_cache,
        resamples=args.bootstrap,
        seed=args.seed,
        progress=_progress_bar,
    )
    header = {
        "ruleset": str(args.ruleset),
        "data": str(args.data),
        "sample": None if args.sample is None else {"size": args.sample, "seed": args.seed},
        "framing": dataset.framing,
        "model": student.name,
        "calibration": "none" if args.no_calibration else "content-free",
        "template": args.template,
    }
    document = build_document(ablation, checked, header)
    # The scores took long to compute, so the document is saved before anything that can fail.
    if args.save is not None:
        write_text(args.save, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if args.prune is not None:
        document["prune"] = _write_pruned(args, checked, ablation)
        if args.save is not None:
            write_text(args.save, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(render_text(document))
    if args.html is not None:
        write_text(args.html, render_html(document))
    return 0


def _write_pruned(args: argparse.Namespace, checked: CheckedRuleset, ablation: Ablation) -> dict[str, Any]:
    from pldc.files import write_text
    from pldc.prune import PRUNE_CRITERION, prunable_rules, prune

    remove = prunable_rules(ablation)
    pruned = prune(checked.parsed, remove, str(args.prune))
    write_text(args.prune, pruned.text)
    return {
        "path": str(args.prune),
        "criterion": PRUNE_CRITERION,
        "removed_rules": list(remove),
        "removals": [removal.to_json() for removal in pruned.removals],
    }


def run_report(args: argparse.Namespace) -> int:
    from pldc.files import read_text, write_text
    from pldc.report import SCHEMA, render_html, render_text

    text = read_text(args.document)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{args.document}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InputError(f"{args.document}: not a `pldc ablate --save` document (expected schema {SCHEMA})")
    try:
        output = render_html(document) if args.format == "html" else render_text(document)
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{args.document}: incomplete ablation document ({type(error).__name__}: {error})") from None
    if args.output is not None:
        write_text(args.output, output)
    else:
        sys.stdout.write(output)
    return 0
