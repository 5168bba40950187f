"""Locate the grammar and templates, in an installed wheel or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the directory ``name`` (``grammar`` or ``templates``).

    A wheel carries both inside the package; a source checkout or an editable install keeps
    them at the repository root, next to the package.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pldc resource directory {name!r} not found beside {_PACKAGE_DIR}")
