"""``pldc distill``: build rules from labelled data with a teacher model.

``pldc distill extract`` runs the first stage (one rule per training example, see
:mod:`pldc.distill`). It asks the teacher that ``--teacher`` selects, or, for Gemini only,
writes a Batch API input file (``--export-batch``) and reads the batch results back
(``--import-batch``). ``pldc distill build`` runs the later stages on ``extract.jsonl`` (see
:mod:`pldc.distill_build`); the teacher takes part only with ``--merge teacher`` or
``--resolve teacher``, live or, for Gemini, through batch files (:mod:`pldc.batch_teacher`).
``pldc distill refine`` improves a ruleset with the student's errors and the teacher's edits
(see :mod:`pldc.refine_cli`, which documents its exit codes), and
``pldc distill`` alone prints the help.

Exit codes: 0 done (every example has a record, the ruleset was written, or a batch file was
written); 1 ``--import-batch`` found malformed, failed or invalid lines (each is listed; the
valid ones are kept); 2 invalid command line; 3 a missing or invalid file; 4 the teacher failed (a
request that kept failing, or examples, clusters or findings it refused or answered
invalidly; each is listed and a re-run asks only those again), or requests of an imported
build stage have no answer; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pldc.data import FRAMINGS, Example
from pldc.errors import ModelError, UsageError
from pldc.teacher_cli import (
    add_batch_arguments,
    add_teacher_arguments,
    batch_or_live_teacher,
    batch_problems,
    check_teacher_arguments,
    export_pending,
    open_call_cache,
)

if TYPE_CHECKING:
    from pldc.distill import ExtractionPrompt, ExtractStore
    from pldc.teacher import Teacher


def add_distill_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    distill = commands.add_parser("distill", help="build rules from labelled data with a teacher model")
    stages = distill.add_subparsers(dest="stage", metavar="STAGE")
    distill.set_defaults(handler=lambda _args: _print_help(distill))
    extract = stages.add_parser(
        "extract",
        help="ask the teacher for one rule per training example",
        description="Ask the teacher for a rationale and one general rule per training example, "
        "appending each answer to RUN_DIR/extract.jsonl. A re-run skips the examples already there.",
    )
    extract.add_argument("task", type=Path, metavar="TASK", help=".pld file with the task block (rules are ignored)")
    extract.add_argument("--data", type=Path, required=True, help="labelled training data (JSONL, CSV or ContractNLI)")
    extract.add_argument("--run-dir", type=Path, required=True, help="directory of the stage outputs")
    extract.add_argument("--framing", choices=FRAMINGS, help="how to read the data (default: guessed from the file)")
    extract.add_argument("--map", action="append", default=[], metavar="INPUT=FIELD", help="generic data: input field")
    extract.add_argument("--label-field", default="label", help="generic data: the label column (default 'label')")
    extract.add_argument("--limit", type=int, help="use only the first N examples")
    extract.add_argument(
        "--sample", type=int, metavar="N", help="use N examples drawn at random (with --seed); ids stay those of --data"
    )
    extract.add_argument("--seed", type=int, default=0, help="random seed of --sample (default 0)")
    extract.add_argument("--template", default="extract", help="extraction prompt template name or .j2 path")
    add_teacher_arguments(extract)
    batch = extract.add_mutually_exclusive_group()
    batch.add_argument("--export-batch", type=Path, metavar="FILE", help="write a Batch API input file; call nothing")
    batch.add_argument("--import-batch", type=Path, metavar="FILE", help="read Batch API results into the run dir")
    extract.set_defaults(handler=run_extract)
    _add_build_command(stages)
    from pldc.refine_cli import add_refine_command

    add_refine_command(stages)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _add_build_command(stages: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pldc.cluster import DEFAULT_MIN_SAMPLES, EMBEDDERS, METHODS

    build = stages.add_parser(
        "build",
        help="cluster and merge the extracted rules into a .pld file",
        description="Normalise the features of RUN_DIR/extract.jsonl, cluster the rules per label, merge each "
        "cluster into one rule, resolve the findings of pldc check, and write RUN_DIR/ruleset.pld and "
        "RUN_DIR/manifest.json. A stage whose inputs are unchanged is skipped.",
    )
    build.add_argument("task", type=Path, metavar="TASK", help=".pld file with the task block; its features are reused")
    build.add_argument("--run-dir", type=Path, required=True, help="directory with extract.jsonl and the stage outputs")
    build.add_argument("--embedder", choices=EMBEDDERS, default="tfidf", help="rule embeddings (default tfidf)")
    build.add_argument("--method", choices=METHODS, default="dbscan", help="clustering method (default dbscan)")
    build.add_argument(
        "--eps",
        default="auto",
        help="cosine distance threshold of dbscan and agglomerative; 'auto' tries quantiles of the k-distance "
        "curve and keeps the one with the highest mean silhouette, 'knee' takes the knee of that curve "
        "(default auto)",
    )
    build.add_argument(
        "--min-samples",
        type=int,
        default=DEFAULT_MIN_SAMPLES,
        help="rules within eps that make a dbscan core rule, itself included; also the k of the k-distance "
        f"curve (default {DEFAULT_MIN_SAMPLES})",
    )
    build.add_argument("-o", "--output", type=Path, help="write the ruleset here instead of RUN_DIR/ruleset.pld")
    build.add_argument(
        "--data", type=Path, help="the training data file to record (default: the one extract.jsonl names)"
    )
    build.add_argument("--split", help="the data split to record (default: the data file's name without extension)")
    build.add_argument("--student", default="embedded", help="the student model to record (default embedded)")
    build.add_argument(
        "--merge",
        choices=("vote", "teacher"),
        default="vote",
        help="merge each cluster by a vote over its members' conditions (default), or ask the teacher",
    )
    build.add_argument(
        "--resolve",
        choices=("rules", "teacher"),
        default="rules",
        help="resolve findings by fixed rules (default), or ask the teacher about each finding between two rules",
    )
    add_batch_arguments(build)
    add_teacher_arguments(build)
    build.set_defaults(handler=run_build)


def run_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pldc.cluster import ClusterSettings
    from pldc.distill_build import BuildOptions, BuildPending, build, make_embedder

    eps: float | None = None
    eps_rule = "silhouette"
    if args.eps == "knee":
        eps_rule = "knee"
    elif args.eps != "auto":
        try:
            eps = float(args.eps)
        except ValueError:
            raise UsageError(f"--eps {args.eps!r} is not a number, 'auto' or 'knee'") from None
    settings = ClusterSettings(method=args.method, eps=eps, min_samples=args.min_samples, eps_rule=eps_rule)
    settings.check()
    asks_teacher = args.merge == "teacher" or args.resolve == "teacher"
    if (args.export_batch is not None or args.import_batch) and not asks_teacher:
        raise UsageError("--export-batch and --import-batch need --merge teacher or --resolve teacher")
    if asks_teacher:
        check_teacher_arguments(args)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    options = BuildOptions(
        task_path=args.task,
        run_dir=args.run_dir,
        embedder=args.embedder,
        settings=settings,
        output=args.output,
        data=args.data,
        split=args.split,
        student=args.student,
        gemini_base_url=args.base_url,
        merge=args.merge,
        resolve=args.resolve,
        workers=args.workers,
    )
    bars: list[tqdm[None]] = []

    def progress(description: str, total: int) -> Callable[[int], None]:
        bar: tqdm[None] = tqdm(total=total, desc=description, unit="rule", file=sys.stderr, disable=None)
        bars.append(bar)
        return bar.update

    call_cache = open_call_cache(args) if asks_teacher else None
    teacher = batch_or_live_teacher(args, call_cache) if call_cache is not None else None
    try:
        result = build(options, make_embedder(options), progress, teacher)
    finally:
        for bar in bars:
            bar.close()
        if call_cache is not None:
            call_cache.close()
    problems = batch_problems(teacher)
    if isinstance(result, BuildPending):
        return export_pending(args, teacher, f"the {result.stage} stage", result.waiting, problems)
    resolution = result.resolution
    print(
        f"wrote {result.path}: {result.rules} rules from {result.records} extracted rules in {result.clusters} "
        f"clusters ({result.noise} noise); {len(resolution.merged)} merged, {len(resolution.overrides)} overrides, "
        f"{len(resolution.allowed)} allow lines"
        + (f", {len(resolution.decisions)} teacher decisions" if args.resolve == "teacher" else "")
    )
    if teacher is not None and args.export_batch is None and not args.import_batch:
        stats = teacher.stats
        print(f"teacher {teacher.model}: {stats.requests} requests, {stats.cache_hits} cached answers")
    return 1 if problems else 0


def run_extract(args: argparse.Namespace) -> int:
    from pldc.data import load_dataset, sample_dataset
    from pldc.distill import ExtractionPrompt, ExtractStore
    from pldc.eval_cli import _field_map as field_map
    from pldc.pipeline import load_ruleset
    from pldc.teacher_cli import check_teacher_arguments, gemini_settings, make_teacher, open_call_cache

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.sample is not None and args.sample < 1:
        raise UsageError("--sample must be at least 1")
    check_teacher_arguments(args)
    batch_option = "--export-batch" if args.export_batch is not None else "--import-batch"
    if args.teacher != "gemini" and (args.export_batch is not None or args.import_batch is not None):
        raise UsageError(f"{batch_option} reads or writes Gemini Batch API files; it applies only to --teacher gemini")
    settings = gemini_settings(args) if args.teacher == "gemini" else None
    task = load_ruleset(args.task).ruleset.task
    if task is None:
        raise UsageError(f"{args.task}: no task block; extraction needs the task's inputs and labels")
    dataset = load_dataset(args.data, task, args.framing, field_map(args.map), args.label_field, args.limit)
    if args.sample is not None:
        dataset = sample_dataset(dataset, args.sample, args.seed)
    prompt = ExtractionPrompt.load(task, args.template)
    store = ExtractStore(args.run_dir)

    if args.export_batch is not None and settings is not None:
        from pldc.gemini_batch import export_batch

        written = export_batch(args.export_batch, dataset.examples, prompt, settings, store)
        print(f"wrote {written} batch requests to {args.export_batch} ({len(store.records)} examples already done)")
        return 0
    if args.import_batch is not None and settings is not None:
        return _import(args.import_batch, dataset.examples, store, settings.model)

    call_cache = open_call_cache(args)
    try:
        return _extract_live(dataset.examples, prompt, make_teacher(args, call_cache), store, args.workers)
    finally:
        call_cache.close()


def _extract_live(
    examples: Sequence[Example],
    prompt: ExtractionPrompt,
    client: Teacher,
    store: ExtractStore,
    workers: int,
) -> int:
    from tqdm import tqdm

    from pldc.distill import extract, pending_examples, summary_line

    pending = len(pending_examples(examples, store))
    with tqdm(total=pending, desc="extracting", unit="ex", file=sys.stderr, disable=None) as bar:
        report = extract(examples, prompt, client, store, workers=workers, progress=bar.update)
    stats = client.stats
    print(summary_line(report, len(examples), store.path))
    print(
        f"teacher {client.model}: {stats.requests} requests, {stats.cache_hits} cached answers, "
        f"{stats.retries} retries, {stats.reasks} re-asks"
    )
    if report.failures:
        raise ModelError(
            f"{len(report.failures)} examples have no rule ({', '.join(report.failures[:10])}"
            f"{', ...' if len(report.failures) > 10 else ''}); see the warnings above, then re-run to ask again"
        )
    return 0


def _import(path: Path, examples: Sequence[Example], store: ExtractStore, teacher: str) -> int:
    from pldc.gemini_batch import import_batch

    result = import_batch(path, examples, store, teacher)
    for problem in result.problems:
        print(f"pldc: {problem.render(path)}", file=sys.stderr)
    print(
        f"imported {result.imported} answers from {path} into {store.path}; "
        f"{result.already} already there, {len(result.problems)} problems"
    )
    return 1 if result.problems else 0
