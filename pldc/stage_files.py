"""JSON outputs of the ``pldc distill build`` stages, skipped on re-run when their inputs are unchanged.

Every stage output records ``input_hash``: the SHA-256 of the stage's inputs and parameters in
canonical JSON. A stage whose output file exists with the same hash is not run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pldc.errors import InputError

logger = logging.getLogger("pldc")


def canonical_json(value: Any) -> str:
    """Serialise ``value`` with sorted keys and a fixed layout, so equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def digest(value: Any) -> str:
    """Return the SHA-256 of ``value`` in canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror}") from None


def read_stage(path: Path, input_hash: str) -> dict[str, Any] | None:
    """Return the stage output at ``path`` when it was written from inputs with ``input_hash``."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        logger.warning("%s: unreadable stage output (%s); running the stage again", path, error)
        return None
    if not isinstance(stored, dict) or stored.get("input_hash") != input_hash:
        return None
    logger.info("%s: inputs unchanged, stage skipped", path)
    return stored


def write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file, so an interrupted run never leaves half a file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        raise InputError(f"{path}: cannot write: {error.strerror}") from None


def write_stage(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, canonical_json(payload))
