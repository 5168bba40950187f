"""Review and test commands: ``pldc diff``, ``textconv``, ``git-diff-driver`` and ``test``.

``diff`` compares two rulesets by meaning, ``textconv`` and ``git-diff-driver`` plug that
comparison into ``git diff`` (see ``docs/git.md``), and ``test`` runs the in-file cases and
reports which rules they exercise.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pldc import ast
from pldc.errors import Diagnostic, DiagnosticError, InputError, PldError

logger = logging.getLogger("pldc")

EXIT_OK, EXIT_ERRORS, EXIT_INPUT = 0, 1, 3

STDIN = "-"
# git passes this path for the missing side of an added or deleted file.
DEV_NULL = "/dev/null"


class UsageError(PldError):
    """A command line that argparse accepts but the command cannot run."""

    exit_code = 2


def add_workflow_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    diff = commands.add_parser("diff", help="compare two .pld files by meaning: rules, conditions, order")
    diff.add_argument("old", metavar="OLD", help="the old .pld file, or - for standard input")
    diff.add_argument("new", metavar="NEW", help="the new .pld file, or - for standard input")
    diff.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when there are semantic changes")
    diff.set_defaults(handler=run_diff)

    textconv = commands.add_parser("textconv", help="print a .pld file in a canonical form for line-based diffs")
    textconv.add_argument("file", type=Path, metavar="FILE")
    textconv.set_defaults(handler=run_textconv)

    driver = commands.add_parser(
        "git-diff-driver", help="external diff for git (diff.pld.command); takes git's 7 arguments"
    )
    driver.add_argument("path", metavar="PATH")
    driver.add_argument(
        "git_arguments",
        nargs="*",
        metavar="ARG",
        help="OLD-FILE OLD-HEX OLD-MODE NEW-FILE NEW-HEX NEW-MODE [NEW-PATH RENAME-INFO]",
    )
    driver.set_defaults(handler=run_git_diff_driver)

    test = commands.add_parser("test", help="run the cases of .pld files and report rule coverage")
    test.add_argument("files", nargs="+", type=Path, metavar="FILE")
    test.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    test.add_argument(
        "--fail-under",
        type=_percentage,
        metavar="PCT",
        help="exit 1 when the share of rules that decide some case is below PCT percent",
    )
    test.set_defaults(handler=run_test)


def _percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid percentage {text!r}: expected a number from 0 to 100") from None
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"invalid percentage {text!r}: expected a number from 0 to 100")
    return value


# ---- reading --------------------------------------------------------------


def _read(argument: str) -> tuple[str, str]:
    """Return the text and display name of a file argument, reading standard input for ``-``."""
    from pldc.parse import read_source

    if argument != STDIN:
        return read_source(argument), argument
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8"), "<stdin>"
    except UnicodeDecodeError as error:
        raise InputError(f"<stdin>: not valid UTF-8 at byte {error.start}") from None


def _parse_both(old: tuple[str, str], new: tuple[str, str]) -> tuple[ast.Ruleset, ast.Ruleset]:
    """Parse both files, raising one :class:`DiagnosticError` with the syntax errors of both."""
    from pldc.parse import parse

    parsed: list[ast.Ruleset] = []
    diagnostics: list[Diagnostic] = []
    sources: dict[str, str] = {}
    for source, name in (old, new):
        try:
            parsed.append(parse(source, name).ruleset)
        except DiagnosticError as error:
            # The same file given twice fails twice with the same errors, so report them once.
            diagnostics.extend(d for d in error.diagnostics if d not in diagnostics)
            sources.update(error.sources)
    if diagnostics:
        raise DiagnosticError(diagnostics, sources)
    return parsed[0], parsed[1]


# ---- diff -----------------------------------------------------------------


def run_diff(args: argparse.Namespace) -> int:
    from pldc.diff import diff_rulesets, render_json, render_text

    if args.old == STDIN and args.new == STDIN:
        raise UsageError("diff: OLD and NEW cannot both be standard input (-)")
    old_source, old_name = _read(args.old)
    new_source, new_name = _read(args.new)
    old, new = _parse_both((old_source, old_name), (new_source, new_name))
    diff = diff_rulesets(old, new)
    render = render_json if args.format == "json" else render_text
    sys.stdout.write(render(diff, old_name, new_name))
    return EXIT_ERRORS if args.exit_code and diff else EXIT_OK


# ---- git integration ------------------------------------------------------


def run_textconv(args: argparse.Namespace) -> int:
    """Print the canonical text of a file, or the file unchanged when it does not parse.

    git stops the whole ``git diff`` when a textconv filter fails, so a broken file falls back to
    its own text, with a warning naming the first syntax error.
    """
    from pldc.diff import canonical_text
    from pldc.parse import parse, read_source

    source = read_source(args.file)
    try:
        parsed = parse(source, str(args.file))
    except DiagnosticError as error:
        first = error.diagnostics[0]
        logger.warning("%s: %s; showing the file unchanged", first.span, first.message)
        sys.stdout.write(source)
        return EXIT_OK
    sys.stdout.write(canonical_text(parsed))
    return EXIT_OK


def run_git_diff_driver(args: argparse.Namespace) -> int:
    """Act as git's external diff for one path (``GIT_EXTERNAL_DIFF`` calling convention).

    git passes ``path old-file old-hex old-mode new-file new-hex new-mode``, two more arguments
    for a rename, or the path alone for an unmerged file. Any exit status but 0 stops
    ``git diff``, so files that do not parse get a plain line diff and a warning instead.
    """
    from pldc.diff import diff_rulesets, render_text

    rest = args.git_arguments
    if not rest:
        print(f"* Unmerged path {args.path}")
        return EXIT_OK
    if len(rest) not in (6, 8):
        raise UsageError(
            f"git-diff-driver: expected PATH and 6 or 8 arguments from git, got {len(rest) + 1}; "
            "set it as diff.pld.command (see docs/git.md)"
        )
    old_file, new_file = rest[0], rest[3]
    new_path = rest[6] if len(rest) == 8 else args.path
    old_name = DEV_NULL if old_file == DEV_NULL else f"a/{args.path}"
    new_name = DEV_NULL if new_file == DEV_NULL else f"b/{new_path}"
    old_source = "" if old_file == DEV_NULL else _read(old_file)[0]
    new_source = "" if new_file == DEV_NULL else _read(new_file)[0]

    print(f"diff --pld a/{args.path} b/{new_path}")
    try:
        old, new = _parse_sides(old_source, old_name, new_source, new_name)
    except DiagnosticError as error:
        logger.warning("%s", error.render())
        logger.warning("%s: showing a line diff because a side does not parse", args.path)
        lines = difflib.unified_diff(
            old_source.splitlines(keepends=True), new_source.splitlines(keepends=True), old_name, new_name
        )
        sys.stdout.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
        return EXIT_OK
    sys.stdout.write(render_text(diff_rulesets(old, new), old_name, new_name))
    return EXIT_OK


def _parse_sides(old_source: str, old_name: str, new_source: str, new_name: str) -> tuple[ast.Ruleset, ast.Ruleset]:
    """Parse both sides, with an empty ruleset for the missing side of an added or deleted file."""
    from pldc.parse import parse

    if old_name == DEV_NULL:
        new = parse(new_source, new_name).ruleset
        return ast.Ruleset(version=new.version, path=DEV_NULL), new
    if new_name == DEV_NULL:
        old = parse(old_source, old_name).ruleset
        return old, ast.Ruleset(version=old.version, path=DEV_NULL)
    return _parse_both((old_source, old_name), (new_source, new_name))


# ---- test and coverage ----------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case: the label and rule that decided it, and its failures if any."""

    name: str
    label: str
    rule: str | None
    failures: tuple[Diagnostic, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True)
class FileReport:
    """The case outcomes of one file and its rule ids. Any ``errors`` mean that no case ran."""

    path: str
    source: str
    rules: tuple[str, ...] = ()
    cases: tuple[CaseResult, ...] = ()
    errors: tuple[Diagnostic, ...] = ()
    io_error: str | None = None

    @property
    def covered(self) -> tuple[str, ...]:
        """Rule ids that decide at least one case, passing or failing, in file order."""
        deciding = {case.rule for case in self.cases}
        return tuple(rule_id for rule_id in self.rules if rule_id in deciding)

    @property
    def uncovered(self) -> tuple[str, ...]:
        covered = set(self.covered)
        return tuple(rule_id for rule_id in self.rules if rule_id not in covered)

    @property
    def failed(self) -> int:
        return sum(not case.passed for case in self.cases)

    @property
    def ok(self) -> bool:
        return self.io_error is None and not self.errors and not self.failed


@dataclass
class Coverage:
    """Rule coverage over one or more files. A set of files without rules counts as fully covered."""

    rules: int = 0
    covered: int = 0
    uncovered: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.rules if self.rules else 100.0

    def to_json(self) -> dict[str, object]:
        return {
            "rules": self.rules,
            "covered": self.covered,
            "percent": round(self.percent, 2),
            "uncovered": self.uncovered,
        }


def run_file_cases(path: Path) -> FileReport:
    """Run the cases of one file and record which rule decided each."""
    from pldc.cases import case_values, decide, run_cases
    from pldc.order import order_rules
    from pldc.parse import parse, read_source
    from pldc.resolve import resolve

    name = str(path)
    try:
        source = read_source(path)
    except InputError as error:
        return FileReport(name, "", io_error=str(error))
    try:
        ruleset = parse(source, name).ruleset
    except DiagnosticError as error:
        return FileReport(name, source, errors=tuple(error.diagnostics))
    # As in `pldc check`, cases run only on a file without name, type or order errors.
    errors = resolve(ruleset)
    ordering = order_rules(ruleset)
    errors.extend(ordering.errors)
    rules = tuple(rule.id.value for rule in ruleset.rules)
    task = ruleset.task
    if errors or task is None:
        return FileReport(name, source, rules, errors=tuple(errors))
    results = []
    for case in ruleset.cases:
        decision = decide(task, ordering.rules, case_values(case), ordering.priorities)
        # run_cases checks every case of a ruleset; a copy holding only this case isolates its failures.
        alone = ruleset.model_copy(update={"items": (task, case)})
        failures = run_cases(alone, ordering.rules, ordering.priorities)
        rule = decision.rule.id.value if decision.rule else None
        results.append(CaseResult(case.name.value, decision.label, rule, tuple(failures)))
    return FileReport(name, source, rules, tuple(results))


def run_test(args: argparse.Namespace) -> int:
    reports = [run_file_cases(path) for path in args.files]
    total = Coverage()
    for report in reports:
        if report.io_error is None and not report.errors:
            total.rules += len(report.rules)
            total.covered += len(report.covered)
            total.uncovered.extend(f"{report.path}:{rule_id}" for rule_id in report.uncovered)
    if args.format == "json":
        payload = {
            "files": [_report_json(r) for r in reports],
            "coverage": total.to_json(),
            "ok": all(r.ok for r in reports),
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        _print_reports(reports, total)
    below = args.fail_under is not None and total.percent < args.fail_under
    if below:
        print(f"pldc: rule coverage {total.percent:.1f}% is below --fail-under {args.fail_under:g}%", file=sys.stderr)
    if any(r.io_error is not None for r in reports):
        return EXIT_INPUT
    return EXIT_ERRORS if below or not all(r.ok for r in reports) else EXIT_OK


def _report_json(report: FileReport) -> dict[str, object]:
    entry: dict[str, object] = {"path": report.path, "ok": report.ok}
    if report.io_error is not None:
        return {**entry, "io_error": report.io_error}
    if report.errors:
        return {**entry, "diagnostics": [d.to_json() for d in report.errors]}
    cases = [
        {
            "name": case.name,
            "passed": case.passed,
            "label": case.label,
            "rule": case.rule,
            "diagnostics": [d.to_json() for d in case.failures],
        }
        for case in report.cases
    ]
    coverage = Coverage(len(report.rules), len(report.covered), list(report.uncovered))
    return {**entry, "cases": cases, "coverage": coverage.to_json()}


def _print_reports(reports: list[FileReport], total: Coverage) -> None:
    for report in reports:
        if report.io_error is not None:
            print(f"pldc: error: {report.io_error}", file=sys.stderr)
            continue
        diagnostics = report.errors or tuple(d for case in report.cases for d in case.failures)
        for diagnostic in diagnostics:
            print(diagnostic.render(report.source), file=sys.stderr)
        if report.errors:
            print(f"{report.path}: cases not run, the file has errors", file=sys.stderr)
            continue
        coverage = Coverage(len(report.rules), len(report.covered))
        passed = len(report.cases) - report.failed
        print(
            f"{report.path}: {passed} of {len(report.cases)} cases passed; "
            f"coverage {coverage.covered} of {coverage.rules} rules ({coverage.percent:.1f}%)"
        )
        if report.uncovered:
            print(f"  uncovered: {', '.join(report.uncovered)}")
    if len(reports) > 1:
        cases = sum(len(r.cases) for r in reports)
        failed = sum(r.failed for r in reports)
        print(
            f"total: {cases - failed} of {cases} cases passed; "
            f"coverage {total.covered} of {total.rules} rules ({total.percent:.1f}%)"
        )
