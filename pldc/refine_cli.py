"""``pldc distill refine``: refine a ruleset with the student's cited failures and a teacher's edits.

The loop is described in :mod:`pldc.refine`. Outputs, all written atomically:

- the refined ruleset (``-o OUT``, default ``RUN_DIR/refined.pld``), with ``meta`` lines that
  record the teacher, the student, the validation split, macro-F1 before and after, and the rounds;
- ``RUN_DIR/refine.jsonl``: every round and every edit (proposed, check result, validation
  macro-F1 before and after, kept or not);
- ``RUN_DIR/citations_roundN.jsonl``: every training example of round N with its gold label,
  prediction, cited rule and the student's reply;
- ``RUN_DIR/refine_manifest.json``: the SHA-256 of the data, the input and output rulesets and
  the templates, the student's identity, the teacher model and every parameter.

With ``--export-batch``, a round whose request has no answer is written to a Batch API file
and the run stops; ``--import-batch`` answers it on the next run (see :mod:`pldc.batch_teacher`).

Exit codes of ``refine``: 0 the loop ran to its stop (with or without kept edits), or a batch
file was written; 1 ``--import-batch`` found malformed, failed or invalid lines; 2 invalid
command line, including a ``--train`` or ``--validation`` file whose name says test, or the
same file as both; 3 a missing or invalid file; 4 the teacher or the student failed (a teacher
that refused or kept answering invalidly still leaves the outputs, with the edits kept before
it failed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pldc.data import FRAMINGS
from pldc.errors import UsageError
from pldc.teacher_cli import add_batch_arguments, add_teacher_arguments

if TYPE_CHECKING:
    from tqdm import tqdm

    from pldc.backend import StudentBackend
    from pldc.data import Dataset
    from pldc.refine import RefineOutcome, RefineSettings


def add_refine_command(stages: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pldc.cite import CITE_MODES, DEFAULT_CITE_MAX_NEW_TOKENS
    from pldc.refine import DEFAULT_FAILURES, DEFAULT_ROUNDS, DEFAULT_SUCCESSES, VALIDATION_SCORING

    refine = stages.add_parser(
        "refine",
        help="improve a ruleset with the student's errors and the teacher's edits",
        description="Score the student on the training split while it cites the rule it applied, send the "
        "cited failures and some successes to the teacher, and keep each proposed edit only when it raises "
        "macro-F1 on the validation split. Writes the refined ruleset, RUN_DIR/refine.jsonl and "
        "RUN_DIR/refine_manifest.json.",
    )
    refine.add_argument("ruleset", type=Path, metavar="RULESET", help="the .pld ruleset to refine")
    refine.add_argument("--train", type=Path, required=True, help="labelled training data the student is scored on")
    refine.add_argument("--validation", type=Path, required=True, help="held-out data that decides which edits stay")
    refine.add_argument("--run-dir", type=Path, required=True, help="directory of refine.jsonl and the manifest")
    refine.add_argument("-o", "--output", type=Path, help="the refined ruleset (default RUN_DIR/refined.pld)")
    refine.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"most rounds (default {DEFAULT_ROUNDS})")
    refine.add_argument(
        "--failures", type=int, default=DEFAULT_FAILURES, help=f"cited failures per round (default {DEFAULT_FAILURES})"
    )
    refine.add_argument(
        "--successes",
        type=int,
        default=DEFAULT_SUCCESSES,
        help=f"correct answers per round (default {DEFAULT_SUCCESSES})",
    )
    refine.add_argument("--seed", type=int, default=0, help="random seed that draws the examples (default 0)")
    # NOTE: the student runs in-process with transformers only. The --backend options of pldc eval
    # are not offered here, because --base-url already names the teacher's endpoint.
    refine.add_argument("--student", default="embedded", help="student model: 'embedded', a folder or a cached Hub id")
    refine.add_argument("--batch-size", type=int, default=16, help="student examples per forward pass (default 16)")
    refine.add_argument(
        "--cite",
        choices=CITE_MODES,
        default="choice",
        help="choice: the student picks the best-scoring 'Rule: ID / Answer: LABEL' reply (default); "
        "generate: parse a greedy reply",
    )
    refine.add_argument(
        "--cite-max-new-tokens",
        type=int,
        default=DEFAULT_CITE_MAX_NEW_TOKENS,
        metavar="N",
        help=f"generation budget in tokens for --cite generate (default {DEFAULT_CITE_MAX_NEW_TOKENS})",
    )
    refine.add_argument(
        "--scoring", choices=VALIDATION_SCORING, default="logprob", help="validation scoring (default logprob)"
    )
    refine.add_argument("--no-calibration", action="store_true", help="validation: no content-free calibration")
    refine.add_argument("--framing", choices=FRAMINGS, help="how to read the data (default: guessed from the file)")
    refine.add_argument("--map", action="append", default=[], metavar="INPUT=FIELD", help="generic data: input field")
    refine.add_argument("--label-field", default="label", help="generic data: the label column (default 'label')")
    refine.add_argument("--limit", type=int, help="use only the first N examples of each split")
    refine.add_argument("--template", default="refine", help="refinement prompt template name or .j2 path")
    refine.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_batch_arguments(refine)
    add_teacher_arguments(refine)
    refine.set_defaults(handler=run_refine)


def run_refine(args: argparse.Namespace) -> int:
    from pldc.data import load_dataset
    from pldc.eval_cli import _field_map as field_map
    from pldc.pipeline import load_ruleset
    from pldc.refine import REFINE_LOG, RefineLog, RefinePrompt, Refiner, RefineSettings, check_splits
    from pldc.teacher import PendingAnswer
    from pldc.teacher_cli import batch_or_live_teacher, batch_problems, export_pending, open_call_cache

    check_splits(args.train, args.validation)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    settings = RefineSettings(
        rounds=args.rounds,
        failures=args.failures,
        successes=args.successes,
        seed=args.seed,
        cite=args.cite,
        cite_max_new_tokens=args.cite_max_new_tokens,
        scoring=args.scoring,
        calibrate=not args.no_calibration,
    )
    checked = load_ruleset(args.ruleset)
    task = checked.ruleset.task
    if task is None:
        raise UsageError(f"{args.ruleset}: no task block; refinement needs the task's inputs and labels")
    mapping = field_map(args.map)
    train = load_dataset(args.train, task, args.framing, mapping, args.label_field, args.limit)
    validation = load_dataset(args.validation, task, args.framing, mapping, args.label_field, args.limit)
    prompt = RefinePrompt.load(task, args.template)
    try:
        args.run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{args.run_dir}: cannot create the run directory: {error.strerror}") from None
    output = args.output if args.output is not None else args.run_dir / "refined.pld"

    from pldc.student import load_student

    cache = open_call_cache(args)
    bars: list[tqdm[None]] = []
    try:
        student = load_student(args.student, batch_size=args.batch_size)
        teacher = batch_or_live_teacher(args, cache)
        refiner = Refiner(
            train,
            validation,
            student,
            teacher,
            cache,
            prompt,
            settings,
            RefineLog(args.run_dir / REFINE_LOG),
            _progress_bars(bars),
        )
        try:
            outcome = refiner.run(checked.parsed)
        except PendingAnswer:
            return export_pending(args, teacher, "the refinement", 1, batch_problems(teacher))
    finally:
        for bar in bars:
            bar.close()
        cache.close()
    summary = _write_outputs(args, output, outcome, student, teacher.model, settings, train, validation)
    stats = teacher.stats
    summary["teacher_calls"] = {"requests": stats.requests, "cached": stats.cache_hits, "reasks": stats.reasks}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(
            f"wrote {output}: validation macro-F1 {outcome.macro_f1_before:.4f} -> {outcome.macro_f1_after:.4f}, "
            f"{len(outcome.kept)} of {outcome.proposed} edits kept in {outcome.rounds} rounds ({outcome.stop_reason}); "
            f"teacher {teacher.model}: {stats.requests} requests, {stats.cache_hits} cached, {stats.reasks} re-asks"
        )
    if outcome.error is not None:
        raise outcome.error
    return 1 if batch_problems(teacher) else 0


def _progress_bars(bars: list[tqdm[None]]) -> Callable[[str, int], Callable[[int], None]]:
    from tqdm import tqdm

    def progress(description: str, total: int) -> Callable[[int], None]:
        for previous in bars:
            previous.close()
        bars.clear()
        bar: tqdm[None] = tqdm(total=total, desc=description, unit="ex", file=sys.stderr, disable=None)
        bars.append(bar)
        return bar.update

    return progress


def _write_outputs(
    args: argparse.Namespace,
    output: Path,
    outcome: RefineOutcome,
    student: StudentBackend,
    teacher_model: str,
    settings: RefineSettings,
    train: Dataset,
    validation: Dataset,
) -> dict[str, Any]:
    """Write the refined ruleset and the manifest; return the summary."""
    import pldc
    from pldc.compile import DEFAULT_TEMPLATE, load_template
    from pldc.refine import REFINE_LOG, REFINE_MANIFEST, citations_file, with_meta
    from pldc.refine_edits import settle_order
    from pldc.stage_files import sha256_file, write_stage, write_text

    meta = {
        "refine_teacher": teacher_model,
        "refine_student": student.name,
        "refine_validation": str(args.validation),
        "refine_macro_f1": f"{outcome.macro_f1_before:.4f} -> {outcome.macro_f1_after:.4f} (validation)",
        "refine_rounds": f"{outcome.rounds} ({outcome.stop_reason})",
    }
    text = with_meta(outcome.parsed, meta)
    settled: list[tuple[str, str]] = []
    if outcome.kept:
        # Only kept edits can leave new conflicts; without them the output stays the input.
        text, settled = settle_order(text, str(output), DEFAULT_TEMPLATE)
    write_text(output, text)
    templates = {}
    for name in ("cite", "default", args.template):
        filename = load_template(name).filename
        assert filename is not None
        templates[name] = sha256_file(Path(filename))
    summary: dict[str, Any] = {
        "output": str(output),
        "validation_macro_f1": {"before": outcome.macro_f1_before, "after": outcome.macro_f1_after},
        "rounds": outcome.rounds,
        "edits": {"proposed": outcome.proposed, "kept": outcome.kept},
        "stop": outcome.stop_reason,
        "overrides_added": [list(pair) for pair in settled],
        "teacher_error": str(outcome.error) if outcome.error is not None else None,
    }
    manifest = {
        "pldc": pldc.__version__,
        "ruleset": {"path": str(args.ruleset), "sha256": sha256_file(args.ruleset)},
        "train": {"path": str(args.train), "sha256": sha256_file(args.train), "examples": len(train.examples)},
        "validation": {
            "path": str(args.validation),
            "sha256": sha256_file(args.validation),
            "examples": len(validation.examples),
        },
        "templates": templates,
        "student": student.identity(),
        "teacher": {
            "model": teacher_model,
            "thinking_budget": args.thinking_budget,
            "thinking_level": args.thinking_level,
            "temperature": args.temperature,
            "max_reasks": args.max_reasks,
        },
        "parameters": {**settings.to_json(), "framing": train.framing, "limit": args.limit},
        "log": {"path": str(args.run_dir / REFINE_LOG), "sha256": sha256_file(args.run_dir / REFINE_LOG)},
        "citations": {
            name: sha256_file(args.run_dir / name)
            for name in (citations_file(number) for number in range(1, outcome.rounds + 1))
        },
        "refined": {"path": str(output), "sha256": sha256_file(output)},
        "summary": summary,
    }
    write_stage(args.run_dir / REFINE_MANIFEST, manifest)
    return summary
