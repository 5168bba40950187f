"""``pldc distill build --resolve teacher``: the teacher decides each finding between two rules.

A ``conflict``, ``order-dependent``, ``duplicate``, ``subsumed`` or ``shadowed`` finding goes to
the teacher (the template ``templates/resolve.j2``) with the finding's message, its witness
(an input on which it shows) and both rules. The answer is a :class:`Decision`:

- ``override``: the named rule gets ``overrides`` naming the other one;
- ``drop``: the named rule is removed and the other rule takes over its examples and support;
- ``allow``: both rules stay, and the finding is accepted with an ``allow KIND "teacher: REASON"``
  line in the first rule the finding names (where the analysis reads it).

An answer whose ``rule`` is not one of the finding's two rules is re-asked. An ``override``
that would close a cycle of ``overrides`` is not applied: it is logged and recorded in the
manifest, and the finding is resolved as without a teacher (see :mod:`pldc.distill_build`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from pldc import ast
from pldc.analysis import Finding
from pldc.distill import render_macros, task_context
from pldc.teacher import AskRound, RejectedAnswer, Teacher, TeacherRequest, ask_each, validate_answer

logger = logging.getLogger("pldc")

RESOLVE_TEMPLATE = "resolve"
ARBITRATED = ("conflict", "order-dependent", "duplicate", "subsumed", "shadowed")


class Decision(BaseModel):
    """The teacher's decision on one finding."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1)
    action: Literal["override", "drop", "allow"]
    rule: str


def decision_schema(rule_ids: Sequence[str]) -> dict[str, Any]:
    """Build the Gemini response schema of :class:`Decision`, with the finding's rule ids as an enum."""
    return {
        "type": "OBJECT",
        "properties": {
            "reason": {"type": "STRING"},
            "action": {"type": "STRING", "enum": ["override", "drop", "allow"]},
            "rule": {"type": "STRING", "enum": list(rule_ids)},
        },
        "required": ["reason", "action", "rule"],
        "propertyOrdering": ["reason", "action", "rule"],
    }


def parse_decision(text: str, rule_ids: Sequence[str]) -> Decision:
    """Validate an answer text against :class:`Decision` and the finding's rules."""
    decision = validate_answer(Decision, text)
    if decision.rule not in rule_ids:
        raise RejectedAnswer(f"rule is {decision.rule!r}, not one of the finding's rules {', '.join(rule_ids)}")
    return decision


def finding_key(finding: Finding) -> str:
    """Name a finding by its kind and its two rules in sorted order, whatever their order in the finding."""
    return f"{finding.kind} {' '.join(sorted(finding.rules[:2]))}"


@dataclass(frozen=True)
class RuleView:
    """The fields of a rule that the resolve template shows."""

    id: str
    title: str
    condition: str
    label: str
    rationale: str
    support: int


@dataclass(frozen=True)
class ResolvePrompt:
    """The resolve template, rendered per finding into a :class:`TeacherRequest`."""

    template: jinja2.Template
    task: ast.Task

    @classmethod
    def load(cls, task: ast.Task, template: str = RESOLVE_TEMPLATE) -> ResolvePrompt:
        from pldc.compile import load_template

        return cls(load_template(template), task)

    def request(self, finding: Finding, rules: Sequence[RuleView]) -> TeacherRequest:
        context = {
            "kind": finding.kind,
            "message": finding.message,
            "witness": {name: _value_text(value) for name, value in sorted((finding.witness or {}).items())},
            "rules": rules,
        }
        system, user = render_macros(self.template, [task_context(self.task)], [context])
        schema = decision_schema([rule.id for rule in rules])
        return TeacherRequest(system=system, user=user, response_mime_type="application/json", response_schema=schema)


def _value_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


class Arbiter:
    """The client of the resolve stage: it asks the teacher to decide findings between two rules."""

    def __init__(self, teacher: Teacher, prompt: ResolvePrompt, template_hash: str, workers: int = 4) -> None:
        self.teacher = teacher
        self.prompt = prompt
        self.template_hash = template_hash
        self.workers = workers

    def identity(self) -> dict[str, Any]:
        return {"resolve": "teacher", "teacher": self.teacher.model, "template": self.template_hash}

    def decide(self, findings: Sequence[tuple[Finding, Sequence[RuleView]]]) -> AskRound[Decision]:
        """Ask about each finding; the answers are keyed by request id, ``resolve KIND RULE RULE``."""
        requests = [
            (
                resolve_id(finding),
                self.prompt.request(finding, rules),
                partial(parse_decision, rule_ids=[rule.id for rule in rules]),
            )
            for finding, rules in findings
        ]
        return ask_each(self.teacher, requests, self.workers)


def resolve_id(finding: Finding) -> str:
    return f"resolve {finding.kind} {' '.join(finding.rules[:2])}"
