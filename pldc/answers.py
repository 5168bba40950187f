"""Parse a generated answer into one of the task's labels, as a deployed system would.

Rule for a direct answer (``--scoring generate``):

1. Take the first non-empty line of the answer.
2. Normalise it: drop an ``Answer:`` or ``Label:`` prefix, then surrounding whitespace, quotes,
   backticks and asterisks, and trailing ``.``, ``!`` or ``:``. Compare case-insensitively.
3. If the line equals a label's name or one of its declared spellings, that label is the answer.
4. Otherwise, if exactly one label is named in the line as a whole word (by name or spelling),
   that label is the answer.
5. Otherwise the answer is unparseable: it names no label or several labels.

Rule for a reasoned answer (``--scoring cot``): the answer is the last line that starts with
``Answer:``, parsed by steps 2 to 5. An answer with no such line is unparseable, for example
one cut off by the token limit before its final line.

An unparseable answer is never dropped: it counts as wrong for every metric.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pldc import ast

UNPARSEABLE = "<unparseable>"

_PREFIX = re.compile(r"^\s*(?:answer|label)\s*:\s*", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*[*_]*answer[*_]*\s*:(.*)$", re.IGNORECASE | re.MULTILINE)
_WRAPPING = " \t\"'`*_"


def label_spellings(task: ast.Task) -> dict[str, str]:
    """Map every case-folded label name and spelling to its label name."""
    index: dict[str, str] = {}
    for label in task.labels:
        for spelling in label.all_spellings:
            index.setdefault(spelling.strip().casefold(), label.name.value)
    return index


def parse_answer(text: str, spellings: Mapping[str, str], reasoning: bool = False) -> str | None:
    """Return the label that ``text`` answers, or None when it is unparseable (see the module rule)."""
    if reasoning:
        matches = _ANSWER_LINE.findall(text)
        if not matches:
            return None
        line = matches[-1]
    else:
        line = next((candidate for candidate in text.splitlines() if candidate.strip()), "")
    normalised = _normalise(line)
    if normalised in spellings:
        return spellings[normalised]
    named = {
        label
        for spelling, label in spellings.items()
        if re.search(rf"(?<!\w){re.escape(spelling)}(?!\w)", normalised) is not None
    }
    return named.pop() if len(named) == 1 else None


def _normalise(line: str) -> str:
    text = _PREFIX.sub("", line.strip())
    text = text.strip(_WRAPPING).rstrip(".!:").strip(_WRAPPING)
    return text.casefold()
