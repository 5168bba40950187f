"""k-shot prompts: seeded draws from a training file, never from the evaluated file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pldc.compile import TemplateFailed, compile_prompt
from pldc.data import Dataset, load_dataset
from pldc.errors import UsageError
from pldc.pipeline import CheckedRuleset, load_ruleset
from pldc.shots import draw_shots, load_shots

from conftest import FIXTURES, run_pldc

RULESET = FIXTURES / "valid" / "minimal.pld"
EVALUATED = FIXTURES / "data" / "reviews.jsonl"
TRAIN = FIXTURES / "data" / "reviews_train.jsonl"
FIELDS = {"review": "body"}


@pytest.fixture
def checked() -> CheckedRuleset:
    return load_ruleset(RULESET)


@pytest.fixture
def evaluated(checked: CheckedRuleset) -> Dataset:
    assert checked.ruleset.task is not None
    return load_dataset(EVALUATED, checked.ruleset.task, "jsonl", FIELDS, "sentiment")


def test_same_seed_draws_same_shots(checked: CheckedRuleset, evaluated: Dataset) -> None:
    assert checked.ruleset.task is not None
    first = load_shots(TRAIN, checked.ruleset.task, 3, 7, evaluated, FIELDS, "sentiment")
    again = load_shots(TRAIN, checked.ruleset.task, 3, 7, evaluated, FIELDS, "sentiment")
    other = load_shots(TRAIN, checked.ruleset.task, 3, 8, evaluated, FIELDS, "sentiment")
    assert [shot.id for shot in first] == [shot.id for shot in again]
    assert [shot.id for shot in first] != [shot.id for shot in other]
    assert len({shot.id for shot in first}) == 3
    assert all(shot.id.startswith("t") for shot in first)


def test_shots_from_evaluated_file_rejected(checked: CheckedRuleset, evaluated: Dataset) -> None:
    assert checked.ruleset.task is not None
    with pytest.raises(UsageError, match="is the evaluated data file"):
        load_shots(EVALUATED, checked.ruleset.task, 1, 0, evaluated, FIELDS, "sentiment")


def test_shots_from_evaluated_file_through_link_rejected(
    checked: CheckedRuleset, evaluated: Dataset, tmp_path: Path
) -> None:
    assert checked.ruleset.task is not None
    link = tmp_path / "train.jsonl"
    link.symlink_to(EVALUATED)
    with pytest.raises(UsageError, match="is the evaluated data file"):
        load_shots(link, checked.ruleset.task, 1, 0, evaluated, FIELDS, "sentiment")


def test_more_shots_than_examples_rejected(evaluated: Dataset) -> None:
    with pytest.raises(UsageError, match="more than the 3 examples"):
        draw_shots(evaluated.examples, 4, 0)


def test_eval_cli_rejects_shots_from_evaluated_file() -> None:
    result = run_pldc(
        "eval",
        str(RULESET),
        "--data",
        str(EVALUATED),
        "--map",
        "review=body",
        "--label-field",
        "sentiment",
        "--shots",
        "2",
        "--shots-from",
        str(EVALUATED),
    )
    assert result.returncode == 2
    assert "is the evaluated data file" in result.stderr
    assert "Traceback" not in result.stderr


def test_prompt_renders_shots_in_drawn_order(checked: CheckedRuleset, evaluated: Dataset) -> None:
    assert checked.ruleset.task is not None
    shots = load_shots(TRAIN, checked.ruleset.task, 2, 3, evaluated, FIELDS, "sentiment")
    prompt = compile_prompt(checked.ruleset, checked.ordered, include_rules=False, shots=shots)
    first = prompt.text.index(f"review: {shots[0].inputs['review']}\nAnswer: {shots[0].label}")
    second = prompt.text.index(f"review: {shots[1].inputs['review']}\nAnswer: {shots[1].label}")
    assert first < second
    assert "Example 2:" in prompt.text
    assert "Example 3:" not in prompt.text
    assert [region.kind for region in prompt.regions].count("examples") == 1


def test_template_ignoring_shots_rejected(checked: CheckedRuleset, evaluated: Dataset, tmp_path: Path) -> None:
    template = tmp_path / "plain.j2"
    template.write_text("Classify the review as {{ task.labels | map(attribute='name') | join(' or ') }}.\n")
    with pytest.raises(TemplateFailed, match="does not render the `examples` variable"):
        compile_prompt(checked.ruleset, checked.ordered, str(template), shots=evaluated.examples[:1])
    with pytest.raises(TemplateFailed, match="ignores the `reasoning` variable"):
        compile_prompt(checked.ruleset, checked.ordered, str(template), reasoning=True)


def test_reasoning_prompt_asks_for_final_answer_line(checked: CheckedRuleset) -> None:
    prompt = compile_prompt(checked.ruleset, checked.ordered, reasoning=True)
    assert 'end your reply with one final line of the form "Answer: LABEL"' in prompt.text
    assert "Answer with exactly one label and nothing else" not in prompt.text
