"""The ``pldc`` command line.

Exit codes: 0 success; 1 the input has errors (diagnostics, failed cases, a ``--check`` that
found a difference); 2 invalid command-line usage; 3 a missing or unreadable file or invalid
data; 4 a model that cannot be loaded or run; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pldc import __version__
from pldc.errors import DiagnosticError, InputError, PldError, Severity, UsageError

if TYPE_CHECKING:
    from pldc.analysis import AnalysisConfig

logger = logging.getLogger("pldc")

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _configure_logging(args.verbose)
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except DiagnosticError as error:
        print(error.render(), file=sys.stderr)
        return EXIT_ERRORS
    except PldError as error:
        print(f"pldc: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("pldc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except OSError as error:
        # Standard output itself failed, for example a full disk.
        print(f"pldc: error: cannot write output: {error.strerror}", file=sys.stderr)
        return EXIT_INPUT


def _configure_logging(verbosity: int) -> None:
    levels = {0: logging.WARNING, 1: logging.INFO}
    level = levels.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pldc: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pldc", description="Prompt-Level Distillation compiler.")
    parser.add_argument("--version", action="version", version=f"pldc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-v) or debug detail (-vv)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="parse, resolve and run the cases of .pld files")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--format", choices=("text", "json"), default="text", help="diagnostic output format")
    check.add_argument("--strict", action="store_true", help="treat analysis warnings as errors")
    check.add_argument("--deny", action="append", default=[], metavar="KIND", help="make a finding kind an error")
    check.add_argument("--warn", action="append", default=[], metavar="KIND", help="make a finding kind a warning")
    check.add_argument("--allow", action="append", default=[], metavar="KIND", help="do not report a finding kind")
    check.add_argument("--no-analysis", action="store_true", help="skip conflict, redundancy and gap analysis")
    check.set_defaults(handler=_run_check)

    fmt = commands.add_parser("fmt", help="rewrite .pld files in the canonical layout")
    fmt.add_argument("files", nargs="+", type=Path, metavar="FILE")
    fmt.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    fmt.add_argument("--stdout", action="store_true", help="print the formatted text instead of rewriting files")
    fmt.set_defaults(handler=_run_fmt)

    compile_ = commands.add_parser("compile", help="compile a ruleset into a student system prompt")
    compile_.add_argument("file", type=Path, metavar="FILE")
    compile_.add_argument("--template", default="default", help="shipped template name or path to a .j2 file")
    compile_.add_argument("--format", choices=("text", "messages", "sourcemap"), default="text")
    compile_.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    compile_.add_argument("--check", type=Path, metavar="OUT", help="exit 1 if OUT differs from the compiled output")
    compile_.add_argument("--no-rules", action="store_true", help="leave out features and rules (zero-shot prompt)")
    compile_.set_defaults(handler=_run_compile)

    from pldc.eval_cli import add_eval_commands

    add_eval_commands(commands)

    from pldc.ablate_cli import add_ablate_commands

    add_ablate_commands(commands)

    from pldc.analysis_cli import add_analysis_commands
    from pldc.workflow_cli import add_workflow_commands

    add_workflow_commands(commands)
    add_analysis_commands(commands)

    from pldc.distill_cli import add_distill_commands

    add_distill_commands(commands)
    return parser


# ---- check ---------------------------------------------------------------


def _analysis_config(args: argparse.Namespace) -> AnalysisConfig:
    from pldc.analysis import AnalysisConfig

    config = AnalysisConfig(strict=args.strict)
    try:
        config.set_level(args.warn, "warning")
        config.set_level(args.deny, "error")
        config.set_level(args.allow, "off")
    except ValueError as error:
        raise UsageError(str(error)) from None
    return config


def _run_check(args: argparse.Namespace) -> int:
    from pldc.analysis import analyze
    from pldc.parse import read_source
    from pldc.pipeline import check_source

    config = _analysis_config(args)
    results: list[dict[str, object]] = []
    failed = 0
    io_errors = 0
    for path in args.files:
        name = str(path)
        try:
            source = read_source(path)
        except InputError as error:
            results.append({"path": name, "ok": False, "io_error": str(error), "diagnostics": []})
            print(f"pldc: error: {error}", file=sys.stderr)
            io_errors += 1
            continue
        report: dict[str, object] = {"path": name}
        try:
            checked = check_source(source, name)
            diagnostics = checked.diagnostics
            report.update(rules=len(checked.ruleset.rules), cases=len(checked.ruleset.cases))
        except DiagnosticError as error:
            diagnostics = error.diagnostics
            checked = None
        findings = []
        if checked is not None and not diagnostics and not args.no_analysis:
            analysis = analyze(checked.ruleset, checked.ordered, checked.priorities, config)
            findings = analysis.diagnostics()
            report["findings"] = [f.to_json(level) for f, level in analysis.findings]
            report["allowed"] = [f.to_json("allowed", reason) for f, reason in analysis.allowed]
            report["order"] = [r.id.value for r in checked.ordered]
        has_errors = bool(diagnostics) or any(d.severity == Severity.ERROR for d in findings)
        failed += has_errors
        report["ok"] = not has_errors
        report["diagnostics"] = [d.to_json() for d in diagnostics]
        results.append(report)
        if args.format == "text":
            for diagnostic in [*diagnostics, *findings]:
                print(diagnostic.render(source), file=sys.stderr)
            if not has_errors and checked is not None:
                notes = _count(len(findings), "finding")
                allowed = _count(len(report.get("allowed", [])), "allowed finding")  # type: ignore[arg-type]
                counts = f"{len(checked.ruleset.rules)} rules, {len(checked.ruleset.cases)} cases passed"
                print(f"{name}: ok ({counts}{notes}{allowed})")
    if args.format == "json":
        print(json.dumps({"files": results, "ok": failed == 0 and io_errors == 0}, indent=2, ensure_ascii=False))
    elif failed > 1:
        print(f"pldc: {failed} of {len(args.files)} files have errors", file=sys.stderr)
    if io_errors:
        return EXIT_INPUT
    return EXIT_ERRORS if failed else EXIT_OK


def _count(number: int, noun: str) -> str:
    if not number:
        return ""
    return f", {number} {noun}" + ("" if number == 1 else "s")


# ---- fmt -----------------------------------------------------------------


def _run_fmt(args: argparse.Namespace) -> int:
    from pldc.files import write_text
    from pldc.format import format_source
    from pldc.parse import parse, read_source

    unformatted = 0
    failed = 0
    for path in args.files:
        try:
            source = read_source(path)
            parsed = parse(source, str(path))
            if parsed.diagnostics:
                # Formatting would drop what the errors point at (a repeated field), so refuse.
                raise DiagnosticError(list(parsed.diagnostics), {str(path): source})
        except (DiagnosticError, InputError) as error:
            message = error.render() if isinstance(error, DiagnosticError) else f"pldc: error: {error}"
            print(message, file=sys.stderr)
            failed += 1
            continue
        formatted = format_source(parsed)
        if args.stdout:
            sys.stdout.write(formatted)
        elif source != formatted:
            unformatted += 1
            if args.check:
                print(f"{path}: not formatted; run `pldc fmt {path}`", file=sys.stderr)
            else:
                write_text(path, formatted)
                logger.info("formatted %s", path)
    if failed:
        return EXIT_ERRORS
    return EXIT_ERRORS if args.check and unformatted else EXIT_OK


def _compile_options(args: argparse.Namespace) -> list[str]:
    """List the options that change the output, as they would be typed."""
    options = []
    if args.template != "default":
        options.append(f"--template {args.template}")
    if args.format != "text":
        options.append(f"--format {args.format}")
    if args.no_rules:
        options.append("--no-rules")
    return options


# ---- compile -------------------------------------------------------------


def _run_compile(args: argparse.Namespace) -> int:
    from pldc.compile import compile_prompt
    from pldc.files import read_text, write_text
    from pldc.pipeline import load_ruleset

    checked = load_ruleset(args.file)
    prompt = compile_prompt(checked.ruleset, checked.ordered, args.template, include_rules=not args.no_rules)
    output = prompt.render(args.format)
    if args.check is not None:
        current = read_text(args.check)
        if current != output:
            command = " ".join(["pldc compile", str(args.file), *_compile_options(args), "-o", str(args.check)])
            print(f"{args.check}: out of date; run `{command}`", file=sys.stderr)
            return EXIT_ERRORS
        return EXIT_OK
    if args.output is not None:
        write_text(args.output, output)
    else:
        sys.stdout.write(output)
    return EXIT_OK
