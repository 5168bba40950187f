"""``pldc distill build``, stage 3: merge each cluster of rules into one rule, deterministically.

- condition: the typed condition shared by the most members. A tie goes to the fewest
  literals, then the shortest text, then the first in lexicographic order;
- title and rationale: those of the member closest to the cluster centroid;
- label: the cluster's label;
- ``examples``: the sorted union of the members' example ids; ``support``: the member count;
- ``confidence``: the fraction of members whose condition equals the chosen one.

Rules are ordered by support (largest first), then by cluster id.

NOTE: the method asks a stronger teacher to merge each cluster in words. That step, through
``--export-batch`` and ``--import-batch`` like ``pldc distill extract``, is not written yet;
this stage chooses among the members' own conditions and never writes a new one.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pldc.errors import InputError
from pldc.stage_files import digest, read_stage, write_stage

logger = logging.getLogger("pldc")

SYNTHESIS_FILE = "synthesis.json"
CONFIDENCE_DECIMALS = 4


def synthesise(normalised: dict[str, Any], clustered: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Merge every cluster into one rule, write ``RUN_DIR/synthesis.json`` and return its content."""
    input_hash = digest({"features": normalised["input_hash"], "clusters": clustered["input_hash"]})
    path = run_dir / SYNTHESIS_FILE
    stored = read_stage(path, input_hash)
    if stored is not None:
        return stored

    rules_by_id = {rule["id"]: rule for rule in normalised["rules"]}
    merged = [_merge(cluster, rules_by_id) for cluster in clustered["clusters"]]
    position = {cluster["id"]: number for number, cluster in enumerate(clustered["clusters"])}
    merged.sort(key=lambda rule: (-rule["support"], position[rule["cluster"]]))
    counts: Counter[str] = Counter()
    for rule in merged:
        counts[rule["label"]] += 1
        rule["id"] = f"{rule['label']}_{counts[rule['label']]}"
    payload = {"input_hash": input_hash, "rules": merged}
    write_stage(path, payload)
    return payload


def _merge(cluster: dict[str, Any], rules_by_id: dict[str, dict[str, Any]]) -> dict[str, Any]:
    try:
        members = [rules_by_id[member] for member in cluster["members"]]
    except KeyError as error:
        missing = error.args[0]
        raise InputError(f"clusters.json names rule {missing!r}, not in features.json; delete both files") from None
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
