"""Read and write the files pldc is given, turning OS and decoding errors into one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from pldc.errors import InputError


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, raising :class:`InputError` that names the file and the fix."""
    file = Path(path)
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; give a file path") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not valid UTF-8 at byte {error.start}; save the file as UTF-8") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read file: {error.strerror}") from None


def open_output(path: Path) -> TextIO:
    """Open a file for writing as UTF-8, raising :class:`InputError` when that is impossible."""
    try:
        return path.open("w", encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: directory {path.parent} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; give a file path") from None
    except OSError as error:
        raise InputError(f"{path}: cannot write: {error.strerror}") from None


def write_text(path: Path, text: str) -> None:
    with open_output(path) as handle:
        handle.write(text)
