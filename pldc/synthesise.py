"""``pldc distill build``, stage 3: merge each cluster of rules into one rule, deterministically.

- condition: the typed condition shared by the most members. A tie goes to the fewest
  literals, then the shortest text, then the first in lexicographic order;
- title and rationale: those of the member closest to the cluster centroid;
- label: the cluster's label;
- ``examples``: the sorted union of the members' example ids; ``support``: the member count;
- ``confidence``: the fraction of members whose condition equals the chosen one.

Rules are ordered by support (largest first), then by cluster id.

With ``--merge teacher`` (:mod:`pldc.merge`), the teacher writes the rule of every cluster with
two or more members instead, and the feature table grows by the features its answers define.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pldc.distill import Extraction
from pldc.errors import InputError, ModelError
from pldc.merge import merge_id, merged_rule
from pldc.normalise import CONFIDENCE_DECIMALS
from pldc.stage_files import digest, read_stage, write_stage

if TYPE_CHECKING:
    from pldc.merge import TeacherMerger

logger = logging.getLogger("pldc")

SYNTHESIS_FILE = "synthesis.json"


def synthesise(
    normalised: dict[str, Any],
    clustered: dict[str, Any],
    run_dir: Path,
    merger: TeacherMerger | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any] | None:
    """Merge every cluster into one rule, write ``RUN_DIR/synthesis.json`` and return its content.

    With a ``merger``, return None while some cluster waits for a batch answer; a cluster whose
    answer stays invalid raises :class:`~pldc.errors.ModelError` naming each such cluster.
    """
    parts: dict[str, Any] = {"features": normalised["input_hash"], "clusters": clustered["input_hash"]}
    if merger is not None:
        parts["merger"] = merger.identity()
    input_hash = digest(parts)
    path = run_dir / SYNTHESIS_FILE
    stored = read_stage(path, input_hash)
    if stored is not None:
        return stored

    rules_by_id = {rule["id"]: rule for rule in normalised["rules"]}
    _check_members(clustered["clusters"], rules_by_id)
    features = copy.deepcopy(normalised["features"])
    answers: dict[str, Extraction] = {}
    if merger is not None:
        outcome = merger.ask(clustered["clusters"], rules_by_id, normalised["features"], progress)
        if outcome.failures:
            clusters = ", ".join(failure.removeprefix("merge ") for failure in outcome.failures)
            raise ModelError(
                f"{merger.teacher.model} gave no valid merge for clusters {clusters} "
                "(see the warnings above); re-run to ask again"
            )
        if outcome.pending:
            return None
        answers = outcome.answers
    merged: list[dict[str, Any]] = []
    for entry in clustered["clusters"]:
        members = [rules_by_id[member] for member in entry["members"]]
        if merge_id(entry) in answers and merger is not None:
            merged.append(merged_rule(entry, members, answers[merge_id(entry)], features, merger.teacher.model))
        else:
            merged.append(_merge(entry, rules_by_id))
    position = {cluster["id"]: number for number, cluster in enumerate(clustered["clusters"])}
    merged.sort(key=lambda rule: (-rule["support"], position[rule["cluster"]]))
    counts: Counter[str] = Counter()
    for rule in merged:
        counts[rule["label"]] += 1
        rule["id"] = f"{rule['label']}_{counts[rule['label']]}"
    payload = {"input_hash": input_hash, "features": features, "rules": merged}
    write_stage(path, payload)
    return payload


def _check_members(clusters: Sequence[dict[str, Any]], rules_by_id: dict[str, dict[str, Any]]) -> None:
    for entry in clusters:
        for member in entry["members"]:
            if member not in rules_by_id:
                raise InputError(f"clusters.json names rule {member!r}, not in features.json; delete both files")


def _merge(cluster: dict[str, Any], rules_by_id: dict[str, dict[str, Any]]) -> dict[str, Any]:
    members = [rules_by_id[member] for member in cluster["members"]]
    conditions = Counter(member["condition"] for member in members)
    literal_counts = {member["condition"]: len(member["literals"]) for member in members}
    chosen = min(conditions, key=lambda text: (-conditions[text], literal_counts[text], len(text), text))
    literals = next(member["literals"] for member in members if member["condition"] == chosen)
    representative = rules_by_id[cluster["representative"]]
    return {
        "cluster": cluster["id"],
        "label": cluster["label"],
        "title": representative["title"],
        "rationale": representative["rationale"],
        "condition": chosen,
        "literals": literals,
        "examples": sorted(member["id"] for member in members),
        "support": len(members),
        "matches": conditions[chosen],
        "confidence": round(conditions[chosen] / len(members), CONFIDENCE_DECIMALS),
        "teachers": sorted({member["teacher"] for member in members}),
        "representative": cluster["representative"],
        "noise": bool(cluster.get("noise")),
    }
