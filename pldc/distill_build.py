"""``pldc distill build``, stage 4: resolve the synthesised rules and write the ``.pld`` file and manifest.

The synthesised rules are written as a ruleset and checked with :func:`pldc.pipeline.check_source`
and :func:`pldc.analysis.analyze`. Findings are then resolved in a fixed order until none is left
at warning or error level:

1. ``duplicate`` and ``subsumed``: the redundant rule (the later duplicate, or the narrower rule)
   is dropped, its examples and support move to the rule that covers it, and the rules are
   sorted by support again;
2. ``conflict`` and ``order-dependent``: the rule with more support (the earlier one) gets
   ``overrides`` naming the other. Rules are ordered by support, so ``overrides`` always points
   down the list and never forms a cycle;
3. anything else (such as ``shadowed``): an ``allow KIND "reason"`` line in the first rule the
   finding names, or in the task block for findings that name no rule.

Last, the rules are renamed ``LABEL_N`` in their final order.

The ruleset is printed with the canonical formatter, so the same inputs give the same bytes.
``manifest.json`` records the SHA-256 of every input and all parameters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

import pldc
from pldc import ast
from pldc.analysis import Finding, analyze
from pldc.arbitrate import ARBITRATED, Arbiter, Decision, ResolvePrompt, RuleView, finding_key, resolve_id
from pldc.cluster import (
    EMBEDDERS,
    ClusterSettings,
    Embedder,
    GeminiRuleEmbedder,
    MiniLMEmbedder,
    TfidfEmbedder,
    cluster,
)
from pldc.distill import EXTRACT_FILE, ExtractRecord, ExtractStore
from pldc.errors import DiagnosticError, InputError, ModelError, UsageError
from pldc.format import format_ruleset
from pldc.merge import MergePrompt, TeacherMerger
from pldc.normalise import condition_ast, literals_from_json, normalise, render_condition
from pldc.pipeline import check_source
from pldc.resources import resource_dir
from pldc.stage_files import sha256_file, write_stage, write_text
from pldc.synthesise import synthesise
from pldc.teacher import Teacher

logger = logging.getLogger("pldc")

RULESET_FILE = "ruleset.pld"
MANIFEST_FILE = "manifest.json"
ALLOW_REASONS = {
    "shadowed": "rules with more support cover this rule's condition; kept for its provenance",
    "gap": "no extracted rule covers these inputs, so the default label applies",
    "unused-label": "no extracted rule concludes this label; the default label or other rules cover it",
    "unused-feature": "declared in the task file and kept for reuse",
    "unsatisfiable": "the teacher's features contradict each other; kept for review",
}


@dataclass
class DraftRule:
    """A synthesised rule while findings are resolved."""

    id: str
    label: str
    title: str
    rationale: str
    literals: list[dict[str, Any]]
    examples: list[str]
    support: int
    matches: int
    teachers: list[str]
    overrides: list[str] = field(default_factory=list)
    allows: dict[str, str] = field(default_factory=dict)

    @property
    def confidence(self) -> float:
        return round(self.matches / self.support, 4)

    def absorb(self, other: DraftRule, equivalent: bool = False) -> None:
        """Take over the provenance of a redundant rule.

        With ``equivalent`` (a duplicate), the members that matched its condition match this
        rule's condition too; otherwise they count towards support only.
        """
        self.examples = sorted(set(self.examples) | set(other.examples))
        self.support += other.support
        if equivalent:
            self.matches += other.matches
        self.teachers = sorted(set(self.teachers) | set(other.teachers))

    def to_ast(self) -> ast.Rule:
        return ast.Rule(
            id=ast.Name(value=self.id),
            title=self.title,
            condition=condition_ast(literals_from_json(self.literals)),
            label=ast.Name(value=self.label),
            rationale=self.rationale,
            overrides=tuple(ast.Name(value=name) for name in self.overrides),
            examples=tuple(self.examples),
            support=self.support,
            confidence=self.confidence,
            teacher=", ".join(self.teachers),
            allows=tuple(
                ast.Allowance(kind=ast.Name(value=kind), reason=reason) for kind, reason in sorted(self.allows.items())
            ),
        )


@dataclass(frozen=True)
class BuildHeader:
    """The provenance that the ``meta`` lines of the built file record."""

    teacher: str
    student: str
    data: str
    split: str
    embedder: str
    clustering: str
    merge: str | None = None
    resolve: str | None = None


@dataclass
class Resolution:
    """The resolved rules and what was done to them.

    ``decisions`` records the teacher's decisions with the rule ids of ``synthesis.json``;
    ``deferred`` contains the findings whose decision could not be applied.
    """

    rules: list[DraftRule]
    merged: list[tuple[str, str]] = field(default_factory=list)
    overrides: list[tuple[str, str]] = field(default_factory=list)
    allowed: list[tuple[str, str]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    deferred: set[str] = field(default_factory=set)
    answered: dict[str, Decision] = field(default_factory=dict)


def draft_rules(synthesised: dict[str, Any]) -> list[DraftRule]:
    return [
        DraftRule(
            id=rule["id"],
            label=rule["label"],
            title=rule["title"],
            rationale=rule["rationale"],
            literals=list(rule["literals"]),
            examples=list(rule["examples"]),
            support=rule["support"],
            matches=rule["matches"],
            teachers=list(rule["teachers"]),
        )
        for rule in synthesised["rules"]
    ]


def build_ast(
    header: BuildHeader,
    task: ast.Task,
    features: Sequence[dict[str, Any]],
    rules: Sequence[DraftRule],
    task_allows: dict[str, str],
) -> ast.Ruleset:
    """Assemble the ruleset: header, the task block, the features the rules test, then the rules."""
    used = {literal["feature"] for rule in rules for literal in rule.literals}
    meta = [
        ("teacher", header.teacher),
        ("student", header.student),
        ("data", header.data),
        ("split", header.split),
        ("pldc", pldc.__version__),
        ("embedder", header.embedder),
        ("clustering", header.clustering),
    ]
    if header.merge is not None:
        meta.append(("merge", header.merge))
    if header.resolve is not None:
        meta.append(("resolve", header.resolve))
    allows = {allowance.kind.value: allowance.reason for allowance in task.allows}
    allows.update(task_allows)
    built_task = task.model_copy(
        update={
            "allows": tuple(
                ast.Allowance(kind=ast.Name(value=kind), reason=reason) for kind, reason in sorted(allows.items())
            )
        }
    )
    items: list[ast.Item] = [built_task]
    for feature in features:
        if feature["name"] not in used:
            continue
        values = tuple(ast.Name(value=value) for value in feature["values"]) if feature["type"] == "one_of" else None
        items.append(ast.Feature(name=ast.Name(value=feature["name"]), values=values, definition=feature["definition"]))
    items.extend(rule.to_ast() for rule in rules)
    return ast.Ruleset(
        version="1.0", meta=tuple(ast.Meta(key=ast.Name(value=k), value=v) for k, v in meta), items=tuple(items)
    )


def resolve_rules(
    header: BuildHeader,
    task: ast.Task,
    features: Sequence[dict[str, Any]],
    rules: list[DraftRule],
    path: str,
    progress: Callable[[int], None] | None = None,
    arbiter: Arbiter | None = None,
) -> tuple[str, Resolution] | None:
    """Resolve findings until the ruleset checks clean, and return its canonical text.

    With an ``arbiter``, findings between two rules go to the teacher first; return None while
    one of them waits for a batch answer.
    """
    resolution = Resolution(rules)
    task_allows: dict[str, str] = {}
    # Each round removes a rule, adds overrides, or adds allow lines, so the rounds are bounded.
    # The limit only stops a bug that would otherwise loop forever.
    limit = 4 * len(rules) ** 2 + 10
    for _ in range(limit):
        text = format_ruleset(build_ast(header, task, features, resolution.rules, task_allows))
        checked = check_source(text, path)
        if checked.diagnostics:
            raise DiagnosticError(checked.diagnostics, {path: text})
        analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
        open_findings = [finding for finding, level in analysis.findings if level in ("warning", "error")]
        if progress is not None:
            progress(1)
        if not open_findings:
            if _renumber(resolution):
                continue
            return text, resolution
        if arbiter is not None:
            applied = _arbitrate(arbiter, open_findings, resolution)
            if applied is None:
                return None
            if applied:
                continue
        if _merge_redundant(open_findings, resolution):
            continue
        if _order_conflicts(open_findings, resolution):
            continue
        _allow_rest(open_findings, resolution, task_allows)
    raise InputError(f"{path}: findings were still open after {limit} rounds of resolution; report this as a bug")


def _arbitrate(arbiter: Arbiter, findings: Sequence[Finding], resolution: Resolution) -> bool | None:
    """Ask the teacher about the open findings between two rules and apply its decisions.

    A decision is kept per finding kind and pair of rules, so a pair that comes back in a later
    round (in the other order, or with other support counts) is not asked about again. Return
    whether a decision changed the rules, or None when an answer is still pending.
    """
    by_id = {rule.id: rule for rule in resolution.rules}
    candidates = [
        finding
        for finding in findings
        if finding.kind in ARBITRATED and len(finding.rules) >= 2 and finding_key(finding) not in resolution.deferred
    ]
    if not candidates:
        return False
    unknown: dict[str, Finding] = {}
    for finding in candidates:
        if finding_key(finding) not in resolution.answered:
            unknown.setdefault(finding_key(finding), finding)
    if unknown:
        views = [(finding, [_view(by_id[rule_id]) for rule_id in finding.rules[:2]]) for finding in unknown.values()]
        decided = arbiter.decide(views)
        if decided.failures:
            raise ModelError(
                f"{arbiter.teacher.model} gave no valid decision for {len(decided.failures)} findings "
                f"({'; '.join(decided.failures[:5])}); see the warnings above, then re-run to ask again"
            )
        if decided.pending:
            return None
        for key, finding in unknown.items():
            resolution.answered[key] = decided.answers[resolve_id(finding)]
    changed = False
    done: set[str] = set()
    for finding in candidates:
        key = finding_key(finding)
        first, second = finding.rules[:2]
        # A rule dropped earlier in this round leaves its findings to the next round.
        if key in done or first not in by_id or second not in by_id:
            continue
        done.add(key)
        decision = resolution.answered[key]
        applied = _apply_decision(finding, decision, by_id, resolution)
        resolution.decisions.append(
            {
                "finding": key,
                "action": decision.action,
                "rule": decision.rule,
                "reason": decision.reason,
                "applied": applied,
            }
        )
        if applied:
            changed = True
        else:
            resolution.deferred.add(key)
            logger.warning(
                "finding %s: the teacher's decision (%s %s) cannot apply; resolved without it",
                key,
                decision.action,
                decision.rule,
            )
    return changed


def _apply_decision(finding: Finding, decision: Decision, by_id: dict[str, DraftRule], resolution: Resolution) -> bool:
    """Apply one decision; return False when it cannot apply (a cycle, or already in place)."""
    first, second = finding.rules[:2]
    named = by_id[decision.rule]
    other = by_id[second if decision.rule == first else first]
    if decision.action == "override":
        if other.id in named.overrides or _reaches(resolution.rules, other.id, named.id):
            return False
        named.overrides = [*named.overrides, other.id]
        resolution.overrides.append((named.id, other.id))
        return True
    if decision.action == "drop":
        other.absorb(named, equivalent=finding.kind == "duplicate")
        del by_id[named.id]
        resolution.rules = [rule for rule in resolution.rules if rule.id != named.id]
        for rule in resolution.rules:
            rule.overrides = [target for target in rule.overrides if target != named.id]
        resolution.overrides = [pair for pair in resolution.overrides if named.id not in pair]
        resolution.allowed = [pair for pair in resolution.allowed if pair[1] != named.id]
        resolution.merged.append((named.id, other.id))
        return True
    # The analysis reads an allow line in the first rule that a finding names, whichever rule the teacher named.
    target = by_id[first]
    if finding.kind in target.allows:
        return False
    target.allows[finding.kind] = f"teacher: {decision.reason}"
    resolution.allowed.append((finding.kind, target.id))
    return True


def _reaches(rules: Sequence[DraftRule], start: str, goal: str) -> bool:
    """Return whether ``start`` overrides ``goal``, directly or through other rules."""
    graph = nx.DiGraph()
    graph.add_nodes_from(rule.id for rule in rules)
    graph.add_edges_from((rule.id, target) for rule in rules for target in rule.overrides)
    return start in graph and goal in graph and nx.has_path(graph, start, goal)


def _view(rule: DraftRule) -> RuleView:
    return RuleView(
        id=rule.id,
        title=rule.title,
        condition=render_condition(literals_from_json(rule.literals)),
        label=rule.label,
        rationale=rule.rationale,
        support=rule.support,
    )


def _renumber(resolution: Resolution) -> bool:
    """Rename the rules ``LABEL_N`` in their final order; return whether any id changed.

    ``merged`` keeps the ids of ``synthesis.json``, and ``renamed`` maps those ids to the final ones.
    """
    counts: dict[str, int] = {}
    mapping: dict[str, str] = {}
    for rule in resolution.rules:
        counts[rule.label] = counts.get(rule.label, 0) + 1
        mapping[rule.id] = f"{rule.label}_{counts[rule.label]}"
    if all(old == new for old, new in mapping.items()):
        return False
    for rule in resolution.rules:
        rule.id = mapping[rule.id]
        rule.overrides = [mapping[name] for name in rule.overrides]
    original = {current: first for first, current in resolution.renamed.items()} if resolution.renamed else {}
    resolution.renamed = {original.get(old, old): new for old, new in mapping.items() if original.get(old, old) != new}
    resolution.overrides = [(mapping[first], mapping[second]) for first, second in resolution.overrides]
    resolution.allowed = [(kind, mapping.get(target, target)) for kind, target in resolution.allowed]
    return True


def _merge_redundant(findings: Sequence[Finding], resolution: Resolution) -> bool:
    by_id = {rule.id: rule for rule in resolution.rules}
    dropped: set[str] = set()
    for finding in findings:
        if finding.kind not in ("duplicate", "subsumed"):
            continue
        # Both kinds name the rule to drop first: the later duplicate, or the narrower rule.
        redundant, keeper = finding.rules
        if redundant in dropped or keeper in dropped:
            continue
        by_id[keeper].absorb(by_id[redundant], equivalent=finding.kind == "duplicate")
        dropped.add(redundant)
        resolution.merged.append((redundant, keeper))
        logger.info("rule %s merged into %s (%s)", redundant, keeper, finding.kind)
    if not dropped:
        return False
    # A merge raises the keeper's support, so the rules are sorted by support again. Overrides and
    # allow lines are cleared and found again, so that overrides keep pointing down the list.
    kept = [rule for rule in resolution.rules if rule.id not in dropped]
    position = {rule.id: number for number, rule in enumerate(kept)}
    resolution.rules = sorted(kept, key=lambda rule: (-rule.support, position[rule.id]))
    for rule in resolution.rules:
        rule.overrides = []
        rule.allows = {}
    resolution.overrides.clear()
    resolution.allowed.clear()
    return True


def _order_conflicts(findings: Sequence[Finding], resolution: Resolution) -> bool:
    position = {rule.id: number for number, rule in enumerate(resolution.rules)}
    by_id = {rule.id: rule for rule in resolution.rules}
    changed = False
    for finding in findings:
        if finding.kind not in ("conflict", "order-dependent"):
            continue
        first, second = sorted(finding.rules[:2], key=lambda rule_id: position[rule_id])
        if second not in by_id[first].overrides:
            by_id[first].overrides = sorted([*by_id[first].overrides, second], key=lambda rule_id: position[rule_id])
            resolution.overrides.append((first, second))
            changed = True
    return changed


def _allow_rest(findings: Sequence[Finding], resolution: Resolution, task_allows: dict[str, str]) -> None:
    by_id = {rule.id: rule for rule in resolution.rules}
    for finding in findings:
        reason = ALLOW_REASONS.get(finding.kind, f"accepted by pldc distill build: {finding.message}")
        if finding.rules:
            target = by_id[finding.rules[0]]
            if finding.kind in target.allows:
                raise InputError(f"rule {target.id}: {finding.kind} is still reported after an allow line; report this")
            target.allows[finding.kind] = reason
            resolution.allowed.append((finding.kind, target.id))
        else:
            if finding.kind in task_allows:
                raise InputError(f"task: {finding.kind} is still reported after an allow line; report this")
            task_allows[finding.kind] = reason
            resolution.allowed.append((finding.kind, "task"))


# ---- the manifest ------------------------------------------------------------------


def template_hashes(names: Sequence[str]) -> dict[str, str]:
    directory = resource_dir("templates")
    return {name: sha256_file(directory / f"{name}.j2") for name in names}


def write_outputs(
    run_dir: Path, output: Path | None, text: str, manifest: dict[str, Any], resolution: Resolution
) -> Path:
    """Write the ruleset (to ``output`` or ``RUN_DIR/ruleset.pld``) and ``RUN_DIR/manifest.json``."""
    target = output if output is not None else run_dir / RULESET_FILE
    write_text(target, text)
    manifest = {
        **manifest,
        "output": {"path": str(target), "sha256": sha256_file(target)},
        "resolution": {
            "merged": [list(pair) for pair in resolution.merged],
            "overrides": [list(pair) for pair in resolution.overrides],
            "allowed": [list(pair) for pair in resolution.allowed],
            "renamed": resolution.renamed,
            "decisions": resolution.decisions,
        },
    }
    write_stage(run_dir / MANIFEST_FILE, manifest)
    return target


# ---- the whole build -----------------------------------------------------------------

SOURCE_PATH = re.compile(r"^(?P<path>.+?):\d+(?: |$)")


@dataclass(frozen=True)
class BuildOptions:
    """The ``pldc distill build`` options."""

    task_path: Path
    run_dir: Path
    embedder: str = "tfidf"
    settings: ClusterSettings = field(default_factory=ClusterSettings)
    output: Path | None = None
    data: Path | None = None
    split: str | None = None
    student: str = "embedded"
    gemini_base_url: str | None = None
    merge: str = "vote"
    resolve: str = "rules"
    workers: int = 4


@dataclass(frozen=True)
class BuildResult:
    """The path of the built ruleset, with counts for the summary line."""

    path: Path
    records: int
    clusters: int
    noise: int
    rules: int
    resolution: Resolution


@dataclass(frozen=True)
class BuildPending:
    """A build stopped because a teacher stage waits for batch answers."""

    stage: str
    waiting: int


def make_embedder(options: BuildOptions) -> Embedder:
    """Create the embedder that ``--embedder`` names."""
    if options.embedder == "tfidf":
        return TfidfEmbedder()
    if options.embedder == "minilm":
        return MiniLMEmbedder()
    if options.embedder == "gemini":
        from pldc.cache import CallCache
        from pldc.gemini import GeminiClient, GeminiSettings
        from pldc.gemini_embed import GeminiEmbedder

        client = GeminiClient(GeminiSettings(base_url=options.gemini_base_url), CallCache())
        return GeminiRuleEmbedder(GeminiEmbedder(client))
    raise UsageError(f"--embedder {options.embedder!r} is not one of {', '.join(EMBEDDERS)}")


def data_file(records: Sequence[ExtractRecord], given: Path | None, extract_path: Path) -> Path:
    """Return the training data file: ``given``, else the one file that every record's ``source`` names."""
    if given is not None:
        return given
    paths = set()
    for record in records:
        match = SOURCE_PATH.match(record.source)
        if match is None:
            raise InputError(
                f"{extract_path}: record {record.id!r} has source {record.source!r} without a file; pass --data"
            )
        paths.add(match.group("path"))
    if len(paths) != 1:
        raise InputError(
            f"{extract_path}: records come from {len(paths)} data files; pass --data to name the one to record"
        )
    return Path(paths.pop())


def build(
    options: BuildOptions,
    embedder: Embedder,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    teacher: Teacher | None = None,
) -> BuildResult | BuildPending:
    """Run normalise, cluster, synthesise and resolve on ``RUN_DIR/extract.jsonl``.

    ``progress(description, total)`` returns a callback that advances a progress bar.
    ``teacher`` answers the requests of ``--merge teacher`` and ``--resolve teacher``; when it
    queues requests for a batch instead, the build stops at that stage and returns
    :class:`BuildPending`.
    """
    if teacher is None and (options.merge == "teacher" or options.resolve == "teacher"):
        raise UsageError("--merge teacher and --resolve teacher need a teacher")
    from pldc.pipeline import load_ruleset

    run_dir = options.run_dir
    extract_path = run_dir / EXTRACT_FILE
    if not extract_path.is_file():
        raise InputError(f"{extract_path}: not found; run pldc distill extract with --run-dir {run_dir} first")
    checked = load_ruleset(options.task_path)
    task = checked.ruleset.task
    if task is None:
        raise UsageError(f"{options.task_path}: no task block; the build needs the task's inputs and labels")
    records = list(ExtractStore(run_dir).records.values())
    if not records:
        raise InputError(f"{extract_path}: no records; run pldc distill extract first")
    data_path = data_file(records, options.data, extract_path)
    if not data_path.is_file():
        raise InputError(f"{data_path}: data file not found; pass --data with the file the rules were extracted from")

    normalised = normalise(records, checked.ruleset.features, run_dir)
    labels = [label.name.value for label in task.labels]
    embed_progress = progress("embedding", len(records)) if progress is not None else None
    clustered = cluster(normalised, labels, embedder, options.settings, run_dir, embed_progress)
    merger: TeacherMerger | None = None
    if options.merge == "teacher" and teacher is not None:
        merger = TeacherMerger(teacher, MergePrompt.load(task), template_hashes(["merge"])["merge"], options.workers)
    multi = sum(1 for entry in clustered["clusters"] if len(entry["members"]) > 1)
    merge_progress = progress("merging", multi) if progress is not None and merger is not None else None
    synthesised = synthesise(normalised, clustered, run_dir, merger, merge_progress)
    if synthesised is None:
        return BuildPending("merge", _waiting(teacher))
    arbiter: Arbiter | None = None
    if options.resolve == "teacher" and teacher is not None:
        arbiter = Arbiter(teacher, ResolvePrompt.load(task), template_hashes(["resolve"])["resolve"], options.workers)

    parameters = clustered["parameters"]
    if parameters["eps"] is None:
        clustering = f"{parameters['method']}, k per label by cosine silhouette"
    else:
        clustering = f"{parameters['method']}, eps {parameters['eps']['eps']} ({parameters['eps']['source']}), "
        clustering += f"min_samples {parameters['min_samples']}"
    header = BuildHeader(
        teacher=", ".join(sorted({record.teacher for record in records})),
        student=options.student,
        data=str(data_path),
        split=options.split or data_path.stem,
        embedder=_describe_embedder(embedder.identity()),
        clustering=clustering,
        merge=f"{teacher.model} (templates/merge.j2)" if merger is not None and teacher is not None else None,
        resolve=f"{teacher.model} (templates/resolve.j2)" if arbiter is not None and teacher is not None else None,
    )
    target = options.output if options.output is not None else run_dir / RULESET_FILE
    rules = draft_rules(synthesised)
    resolve_progress = progress("resolving", len(rules)) if progress is not None else None
    features = synthesised.get("features", normalised["features"])
    resolved = resolve_rules(header, task, features, rules, str(target), resolve_progress, arbiter)
    if resolved is None:
        return BuildPending("resolve", _waiting(teacher))
    text, resolution = resolved
    templates = ["extract", "default"]
    if merger is not None:
        templates.append("merge")
    if arbiter is not None:
        templates.append("resolve")
    manifest = {
        "pldc": pldc.__version__,
        "inputs": {
            "data": {"path": str(data_path), "sha256": sha256_file(data_path)},
            "task": {"path": str(options.task_path), "sha256": sha256_file(options.task_path)},
            "extract": {"path": str(extract_path), "sha256": sha256_file(extract_path)},
            "templates": template_hashes(templates),
        },
        "embedder": embedder.identity(),
        "parameters": {
            "method": options.settings.method,
            "eps": options.settings.eps if options.settings.eps is not None else _eps_option(options.settings),
            "min_samples": options.settings.min_samples,
            "chosen": parameters,
            "split": header.split,
            "student": options.student,
            "merge": merger.identity() if merger is not None else "vote",
            "resolve": arbiter.identity() if arbiter is not None else "rules",
        },
        "stages": {
            "normalise": normalised["input_hash"],
            "cluster": clustered["input_hash"],
            "synthesise": synthesised["input_hash"],
        },
    }
    path = write_outputs(run_dir, options.output, text, manifest, resolution)
    noise = sum(1 for entry in clustered["clusters"] if entry.get("noise"))
    return BuildResult(path, len(records), len(clustered["clusters"]), noise, len(resolution.rules), resolution)


def _waiting(teacher: Teacher | None) -> int:
    pending = getattr(teacher, "pending", None)
    return len(pending) if pending is not None else 0


def _eps_option(settings: ClusterSettings) -> str:
    """Return the ``--eps`` word for an automatic eps: ``auto`` for the default rule, else the rule's name."""
    return "auto" if settings.eps_rule == "silhouette" else settings.eps_rule


def _describe_embedder(identity: dict[str, Any]) -> str:
    details = ", ".join(f"{key} {value}" for key, value in sorted(identity.items()) if key != "name")
    return f"{identity['name']} ({details})" if details else str(identity["name"])
