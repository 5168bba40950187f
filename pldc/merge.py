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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jinja2

from pldc import ast
from pldc.batch_teacher import PendingAnswer
from pldc.distill import Extraction, extraction_schema, parse_extraction, render_macros, task_context
from pldc.normalise import CONFIDENCE_DECIMALS, map_rule_features, render_condition
from pldc.teacher import InvalidAnswerError, RefusalError, Teacher, TeacherRequest

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


@dataclass
class MergeOutcome:
    """The clusters the teacher merged, and those still waiting for an answer or without a valid one."""

    merged: dict[str, Extraction] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


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
    ) -> MergeOutcome:
        """Ask for every cluster with two or more members; all requests see the same feature table."""
        outcome = MergeOutcome()
        wanted = [entry for entry in clusters if len(entry["members"]) > 1]

        def one(entry: dict[str, Any]) -> tuple[str, Extraction | None, str | None]:
            members = [rules_by_id[member] for member in entry["members"]]
            request = self.prompt.request(entry["label"], members, features)
            try:
                answer = self.teacher.ask(
                    f"merge {entry['id']}", request, lambda text: parse_extraction(text, entry["label"])
                )
            except PendingAnswer:
                return entry["id"], None, None
            except (InvalidAnswerError, RefusalError) as error:
                return entry["id"], None, str(error)
            finally:
                if progress is not None:
                    progress(1)
            return entry["id"], answer.value, None

        with ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="pldc-merge") as pool:
            for cluster_id, extraction, failure in pool.map(one, wanted):
                if extraction is not None:
                    outcome.merged[cluster_id] = extraction
                elif failure is not None:
                    logger.warning("%s", failure)
                    outcome.failures.append(cluster_id)
                else:
                    outcome.pending.append(cluster_id)
        return outcome


def merged_rule(
    cluster: dict[str, Any],
    members: Sequence[dict[str, Any]],
    extraction: Extraction,
    features: list[dict[str, Any]],
    teacher: str,
) -> dict[str, Any]:
    """Build the synthesised rule of a cluster from the teacher's answer, adding its features to ``features``."""
    literals = map_rule_features(extraction.rule.features, features, source="teacher-merge")
    wanted = {(literal.feature, literal.value) for literal in literals}
    matches = sum(
        1 for member in members if wanted <= {(item["feature"], item["value"]) for item in member["literals"]}
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
