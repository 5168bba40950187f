"""``pldc distill build --merge teacher``: the teacher merges each cluster of rules into one rule.

Every cluster with two or more members becomes one request (the template
``templates/merge.j2``): the task, the features the rules use so far, and each member's title,
condition in words and typed condition. The answer has the shape of an extraction answer, with
the label fixed to the cluster's label, and is validated the same way. Its features are mapped
onto the feature table as extraction answers are (:func:`pldc.normalise.map_rule_features`).

The merged rule's provenance is the union of its members': ``examples`` lists every member's
example, ``support`` counts the members, and ``confidence`` is the fraction of members whose
typed condition implies the merged one (a member whose literals include all of the merged
rule's literals). Singleton clusters, noise included, keep their member's rule unchanged.

Requests run ``workers`` at a time, and the answers are applied in cluster order, so the same
answers give the same output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jinja2

from pldc import ast
from pldc.distill import Extraction, extraction_schema, parse_extraction, render_macros, task_context
from pldc.normalise import CONFIDENCE_DECIMALS, map_rule_features, render_condition
from pldc.teacher import AskRound, Teacher, TeacherRequest, ask_each

logger = logging.getLogger("pldc")

MERGE_TEMPLATE = "merge"


@dataclass(frozen=True)
class MergePrompt:
    """The merge template, rendered per cluster into a :class:`TeacherRequest`."""

    template: jinja2.Template
    task: ast.Task

    @classmethod
    def load(cls, task: ast.Task, template: str = MERGE_TEMPLATE) -> MergePrompt:
        from pldc.compile import load_template

        return cls(load_template(template), task)

    def request(
        self, label: str, members: Sequence[dict[str, Any]], features: Sequence[dict[str, Any]]
    ) -> TeacherRequest:
        cluster = {"label": label, "size": len(members), "members": members}
        system, user = render_macros(self.template, [task_context(self.task), features], [cluster])
        schema = extraction_schema(self.task)
        schema["properties"]["rule"]["properties"]["label"]["enum"] = [label]
        return TeacherRequest(system=system, user=user, response_mime_type="application/json", response_schema=schema)


class TeacherMerger:
    """The client of the merge stage: it asks the teacher to merge each cluster of two or more rules."""

    def __init__(self, teacher: Teacher, prompt: MergePrompt, template_hash: str, workers: int = 4) -> None:
        self.teacher = teacher
        self.prompt = prompt
        self.template_hash = template_hash
        self.workers = workers

    def identity(self) -> dict[str, Any]:
        return {"merge": "teacher", "teacher": self.teacher.model, "template": self.template_hash}

    def ask(
        self,
        clusters: Sequence[dict[str, Any]],
        rules_by_id: dict[str, dict[str, Any]],
        features: Sequence[dict[str, Any]],
        progress: Callable[[int], None] | None = None,
    ) -> AskRound[Extraction]:
        """Ask for every cluster with two or more members; all requests see the same feature table.

        The answers are keyed by request id, ``merge CLUSTER``.
        """
        requests = []
        for entry in clusters:
            if len(entry["members"]) < 2:
                continue
            members = [rules_by_id[member] for member in entry["members"]]
            request = self.prompt.request(entry["label"], members, features)
            requests.append((merge_id(entry), request, partial(parse_extraction, gold_label=entry["label"])))
        return ask_each(self.teacher, requests, self.workers, progress)


def merge_id(cluster: dict[str, Any]) -> str:
    return f"merge {cluster['id']}"


def merged_rule(
    cluster: dict[str, Any],
    members: Sequence[dict[str, Any]],
    extraction: Extraction,
    features: list[dict[str, Any]],
    teacher: str,
) -> dict[str, Any]:
    """Build the synthesised rule of a cluster from the teacher's answer, adding its features to ``features``."""
    literals = map_rule_features(extraction.rule.features, features, source="teacher-merge")
    required = {(literal.feature, literal.value) for literal in literals}
    matches = sum(
        1 for member in members if required <= {(item["feature"], item["value"]) for item in member["literals"]}
    )
    return {
        "cluster": cluster["id"],
        "label": cluster["label"],
        "title": extraction.rule.title,
        "rationale": extraction.rationale,
        "condition": render_condition(literals),
        "literals": [{"feature": literal.feature, "value": literal.value} for literal in literals],
        "examples": sorted(member["id"] for member in members),
        "support": len(members),
        "matches": matches,
        "confidence": round(matches / len(members), CONFIDENCE_DECIMALS),
        "teachers": sorted({member["teacher"] for member in members} | {teacher}),
        "representative": cluster["representative"],
        "noise": bool(cluster.get("noise")),
        "merged_by": teacher,
    }
