"""Label parsing of generated answers: direct answers, reasoned answers, unparseable ones."""

from __future__ import annotations

import pytest

from pldc.answers import label_spellings, parse_answer
from pldc.pipeline import load_ruleset

from conftest import FIXTURES

SPELLINGS = label_spellings(load_ruleset(FIXTURES / "valid" / "minimal.pld").ruleset.task)  # type: ignore[arg-type]

DIRECT = [
    ("positive", "positive"),
    ("  Negative.\n", "negative"),
    ("**positive**", "positive"),
    ("Answer: neg", "negative"),
    ('"pos"', "positive"),
    ("The review is positive.", "positive"),
    ("\n\npositive\nnegative", "positive"),
    ("positive or negative", None),
    ("I cannot tell.", None),
    ("", None),
    ("positively", None),
]

REASONED = [
    ("The reviewer praises the motor, so rule P1 applies.\nAnswer: positive", "positive"),
    ("Answer: negative\nOn reflection the tone is warm.\nAnswer: positive", "positive"),
    ("**Answer:** neg", "negative"),
    ("The review is positive.", None),
    ("The tone is cold, so the review is", None),
    ("Answer: positive or negative", None),
]


@pytest.mark.parametrize(("text", "expected"), DIRECT)
def test_direct_answer_parsing(text: str, expected: str | None) -> None:
    assert parse_answer(text, SPELLINGS) == expected


@pytest.mark.parametrize(("text", "expected"), REASONED)
def test_reasoned_answer_parsing(text: str, expected: str | None) -> None:
    assert parse_answer(text, SPELLINGS, reasoning=True) == expected


def test_spellings_map_to_label_names() -> None:
    assert SPELLINGS == {"positive": "positive", "pos": "positive", "negative": "negative", "neg": "negative"}
