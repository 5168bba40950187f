"""Compile a checked ruleset into a student system prompt through a Jinja template.

Rule text is passed to the template as data and never rendered as a template itself, so a
rationale that contains ``{{ 7*7 }}`` appears in the prompt as those characters. Templates
run with ``StrictUndefined``: a misspelled variable is an error, not an empty string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2

from pldc import ast
from pldc.data import Example
from pldc.errors import InputError, PldError
from pldc.format import format_condition
from pldc.resources import resource_dir

OutputFormat = Literal["text", "messages", "sourcemap"]
DEFAULT_TEMPLATE = "default"

# Markers wrap each region the template marks, so the source map can find its lines.
# The parser rejects control characters in .pld files, so rule text cannot contain them.
_BEGIN, _SEP, _END = "\x00", "\x01", "\x02"
_MARKER = re.compile("\x00([^\x01]*)\x01|\x02")


class TemplateFailed(PldError):
    """A template that does not exist, does not parse or uses an undefined variable."""


@dataclass(frozen=True)
class MappedRegion:
    """Lines ``start``..``end`` (1-based, inclusive) of the prompt and where they came from."""

    kind: str
    start: int
    end: int
    rule: str | None = None
    span: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompiledPrompt:
    """A rendered system prompt with its source map and the rule order it used."""

    text: str
    regions: tuple[MappedRegion, ...]
    order: tuple[str, ...]
    template: str
    extra: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[dict[str, str]]:
        """Return the prompt as an OpenAI-style message list."""
        return [{"role": "system", "content": self.text}]

    def render(self, output: OutputFormat) -> str:
        """Serialise in the requested ``--format``."""
        if output == "text":
            return self.text
        if output == "messages":
            return json.dumps(self.messages(), ensure_ascii=False, indent=2) + "\n"
        payload = {
            "template": self.template,
            "order": list(self.order),
            "regions": [{k: v for k, v in region.__dict__.items() if v is not None} for region in self.regions],
        }
        return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"


def template_environment(search_path: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(search_path)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env


def load_template(name_or_path: str) -> jinja2.Template:
    """Load a shipped template by name (``default``) or a template file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix or candidate.parent != Path("."):
        if not candidate.is_file():
            raise InputError(f"{name_or_path}: template file not found")
        directory, filename = candidate.resolve().parent, candidate.name
    else:
        directory, filename = resource_dir("templates"), f"{name_or_path}.j2"
        if not (directory / filename).is_file():
            shipped = sorted(p.stem for p in directory.glob("*.j2"))
            raise InputError(f"unknown template {name_or_path!r}; shipped templates: {', '.join(shipped)}")
    try:
        return template_environment(directory).get_template(filename)
    except UnicodeDecodeError as error:
        raise TemplateFailed(f"{candidate}: template is not valid UTF-8 at byte {error.start}") from None
    except jinja2.TemplateSyntaxError as error:
        raise TemplateFailed(
            f"{error.filename or filename}:{error.lineno}: template syntax error: {error.message}"
        ) from None


def compile_prompt(
    ruleset: ast.Ruleset,
    ordered: list[ast.Rule],
    template: str = DEFAULT_TEMPLATE,
    include_rules: bool = True,
    *,
    shots: Sequence[Example] = (),
    reasoning: bool = False,
) -> CompiledPrompt:
    """Render ``ruleset`` with its rules in ``ordered`` order.

    With ``include_rules=False`` the prompt keeps the task, labels and output format but no
    features or rules: the zero-shot baseline for the same task. ``shots`` are labelled
    examples that the template shows the student (the template variable ``examples``), and
    ``reasoning`` asks the template for the instruction to reason before a final
    ``Answer: LABEL`` line (the template variable ``reasoning``).

    Raises:
        TemplateFailed: the template fails, or it ignores ``shots`` or ``reasoning`` when
            they are given, which would silently score a different baseline.
    """
    task = ruleset.task
    if task is None:
        raise PldError(f"{ruleset.path}: no task block to compile")
    rules = ordered if include_rules else []
    context = _context(ruleset, task, rules, include_rules)
    jinja_template = load_template(template)
    context["mark"] = _mark
    shot_entries = [_shot_entry(example, task) for example in shots]
    raw = _render(jinja_template, template, {**context, "examples": shot_entries, "reasoning": reasoning})
    if shots and raw == _render(jinja_template, template, {**context, "examples": [], "reasoning": reasoning}):
        raise TemplateFailed(
            f"template {template!r} does not render the `examples` variable; shots need a template that does"
        )
    if reasoning and raw == _render(
        jinja_template, template, {**context, "examples": shot_entries, "reasoning": False}
    ):
        raise TemplateFailed(
            f"template {template!r} ignores the `reasoning` variable; chain-of-thought needs a template that uses it"
        )
    text, regions = _extract_regions(raw, {r.id.value: r for r in rules})
    return CompiledPrompt(text=text, regions=tuple(regions), order=tuple(r.id.value for r in rules), template=template)


def _render(jinja_template: jinja2.Template, template: str, context: dict[str, Any]) -> str:
    try:
        return jinja_template.render(**context)
    except jinja2.UndefinedError as error:
        raise TemplateFailed(f"template {template!r}: {error.message}") from None
    except jinja2.TemplateError as error:
        raise TemplateFailed(f"template {template!r}: {error}") from None
    except RecursionError:
        raise TemplateFailed(f"template {template!r} recurses without end (an include of itself?)") from None
    except Exception as error:  # noqa: BLE001 - a user template can raise anything; report it on one line
        raise TemplateFailed(f"template {template!r} failed: {type(error).__name__}: {error}") from None


def _shot_entry(example: Example, task: ast.Task) -> dict[str, Any]:
    inputs = [{"name": i.name.value, "value": example.inputs[i.name.value]} for i in task.inputs]
    return {"id": example.id, "inputs": inputs, "label": example.label}


def _context(ruleset: ast.Ruleset, task: ast.Task, rules: list[ast.Rule], with_features: bool) -> dict[str, Any]:
    sections: list[dict[str, Any]] = []
    titles = {g.name.value: (g.title or g.name.value) for g in ruleset.groups}
    for number, rule in enumerate(rules, 1):
        entry = {
            "number": number,
            "id": rule.id.value,
            "title": rule.title,
            "condition": format_condition(rule.condition) if rule.condition is not None else "",
            "label": rule.label.value if rule.label is not None else "",
            "rationale": rule.rationale,
            "priority": rule.effective_priority,
            "tags": [t.value for t in rule.tags],
            "group": rule.group,
        }
        if not sections or sections[-1]["group"] != rule.group:
            sections.append({"group": rule.group, "title": titles.get(rule.group or "", None), "rules": []})
        sections[-1]["rules"].append(entry)
    features = [
        {"name": f.name.value, "choices": list(f.value_names) if f.values else None, "definition": f.definition}
        for f in ruleset.features
    ]
    return {
        "task": {
            "name": task.name.value,
            "description": task.description,
            "inputs": [{"name": i.name.value, "description": i.description} for i in task.inputs],
            "labels": [{"name": label.name.value, "description": label.description} for label in task.labels],
            "default": task.default.value if task.default else "",
            "hit_policy": task.hit_policy,
        },
        "features": features if with_features else [],
        "sections": sections,
        "rules": [entry for section in sections for entry in section["rules"]],
    }


def _mark(kind: str, rule_id: str | None = None, *, caller: Any) -> str:
    key = kind if rule_id is None else f"{kind}:{rule_id}"
    # The region ends at its last line; the newline after it belongs to the surrounding text.
    return f"{_BEGIN}{key}{_SEP}{str(caller()).rstrip(chr(10))}{_END}\n"


def _extract_regions(raw: str, rules: dict[str, ast.Rule]) -> tuple[str, list[MappedRegion]]:
    text_parts: list[str] = []
    regions: list[MappedRegion] = []
    open_regions: list[tuple[str, int]] = []
    line = 1
    position = 0
    for match in _MARKER.finditer(raw):
        chunk = raw[position : match.start()]
        text_parts.append(chunk)
        line += chunk.count("\n")
        position = match.end()
        if match.group(0).startswith(_BEGIN):
            open_regions.append((match.group(1), line))
            continue
        key, start = open_regions.pop()
        end = line
        kind, _, rule_id = key.partition(":")
        rule = rules.get(rule_id) if rule_id else None
        span = rule.span.model_dump() if rule is not None else None
        regions.append(MappedRegion(kind=kind, start=start, end=end, rule=rule_id or None, span=span))
    text_parts.append(raw[position:])
    regions.sort(key=lambda r: (r.start, r.end))
    return "".join(text_parts), regions
