"""Data adapters: the shared datasets and generic files, with row-level errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pldc.data import load_dataset
from pldc.errors import InputError
from pldc.pipeline import load_ruleset

from conftest import FIXTURES, ROOT, run_pldc

REVIEWS = FIXTURES / "valid" / "minimal.pld"


def _task(path: Path):  # type: ignore[no-untyped-def]
    task = load_ruleset(path).ruleset.task
    assert task is not None
    return task


def test_stereoset_domain_full_dev_split(data_dir: Path) -> None:
    dataset = load_dataset(data_dir / "stereoset" / "dev.jsonl", _task(ROOT / "rulesets" / "stereoset_domain.pld"))
    assert dataset.framing == "stereoset-domain"
    assert len(dataset.examples) == 866
    assert sum(dataset.label_counts.values()) == 866
    assert set(dataset.label_counts) == {"gender", "profession", "race", "religion"}
    first = dataset.examples[0]
    assert first.id == "dev.jsonl:1"
    assert first.inputs == {"sentence": "The chess player was asian."}
    second = dataset.examples[1]
    assert second.inputs["sentence"] == "I know many people who are Russian. They love their vodka!"


def test_stereoset_candidate_framing(data_dir: Path, tmp_path: Path) -> None:
    ruleset = tmp_path / "candidate.pld"
    ruleset.write_text(
        'pld 1.0\ntask c {\n    input context "C"\n    input candidate "S"\n    label stereotype "S"\n'
        '    label anti "A" spelled "anti-stereotype"\n    label unrelated "U"\n    default unrelated\n}\n'
    )
    dataset = load_dataset(data_dir / "stereoset" / "dev.jsonl", _task(ruleset), framing="stereoset-candidate")
    assert len(dataset.examples) == 3 * 866
    assert dataset.label_counts == {"stereotype": 866, "anti": 866, "unrelated": 866}
    assert dataset.examples[0].shared == 1
    assert dataset.examples[0].inputs["context"] == dataset.examples[2].inputs["context"]


def test_contract_nli_pairs_grouped_by_document(data_dir: Path) -> None:
    dataset = load_dataset(data_dir / "contract_nli" / "dev.json", _task(ROOT / "rulesets" / "contract_nli.pld"))
    assert len(dataset.examples) == 1037
    assert dataset.label_counts == {"Entailment": 519, "Contradiction": 95, "NotMentioned": 423}
    documents = [e.inputs["document"] for e in dataset.examples]
    # All 17 hypotheses of a document are adjacent, so its encoding can be reused.
    assert all(documents[i] == documents[i - i % 17] for i in range(len(documents)))
    assert dataset.examples[0].shared == 1
    assert list(dataset.examples[0].inputs) == ["document", "hypothesis"]


def test_generic_jsonl_with_field_map() -> None:
    dataset = load_dataset(
        FIXTURES / "data" / "reviews.jsonl", _task(REVIEWS), field_map={"review": "body"}, label_field="sentiment"
    )
    assert [e.id for e in dataset.examples] == ["r1", "r2", "r3"]
    assert [e.label for e in dataset.examples] == ["positive", "negative", "positive"]
    assert dataset.examples[1].inputs == {"review": "Broke after a week."}


def test_generic_csv_quoted_fields() -> None:
    with pytest.raises(InputError) as error:
        load_dataset(FIXTURES / "data" / "reviews.csv", _task(REVIEWS))
    assert (
        str(error.value)
        == f"{FIXTURES / 'data' / 'reviews.csv'}:5: missing field 'label' (the label; set --label-field)"
    )
    dataset = load_dataset(FIXTURES / "data" / "reviews.csv", _task(REVIEWS), limit=2)
    assert dataset.examples[0].inputs["review"] == 'Works well, "great" value'
    assert dataset.examples[1].inputs["review"] == "Two\nline review"


def test_csv_unterminated_quote_names_its_line() -> None:
    path = FIXTURES / "data" / "reviews_unterminated.csv"
    with pytest.raises(InputError) as error:
        load_dataset(path, _task(REVIEWS))
    assert str(error.value) == (
        f"{path}:3: invalid CSV: unexpected end of data; a quoted field that starts on this line is not closed"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("reviews_bad_label.jsonl", ":2 field 'sentiment': label 'mixed' is not a label of task 'sentiment'"),
        ("reviews_missing_field.jsonl", ":3: missing field 'body'"),
        ("reviews_invalid_json.jsonl", ":2: invalid JSON at column 32: Invalid control character"),
    ],
)
def test_bad_rows_name_row_and_field(name: str, message: str) -> None:
    path = FIXTURES / "data" / name
    with pytest.raises(InputError) as error:
        load_dataset(path, _task(REVIEWS), field_map={"review": "body"}, label_field="sentiment")
    assert str(error.value).startswith(str(path) + message)


def test_framing_inputs_must_match_task(data_dir: Path) -> None:
    with pytest.raises(InputError, match=r"declares inputs \(review\) but the contract-nli framing provides"):
        load_dataset(data_dir / "contract_nli" / "dev.json", _task(REVIEWS))


def test_eval_cli_reports_bad_row_without_traceback() -> None:
    path = FIXTURES / "data" / "reviews_bad_label.jsonl"
    result = run_pldc(
        "eval",
        str(REVIEWS),
        "--data",
        str(path),
        "--framing",
        "jsonl",
        "--map",
        "review=body",
        "--label-field",
        "sentiment",
    )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"pldc: error: {path}:2 field 'sentiment': label 'mixed'")


def test_eval_cli_missing_data_file() -> None:
    result = run_pldc("eval", str(REVIEWS), "--data", "missing.jsonl", "--framing", "jsonl")
    assert result.returncode == 3
    assert result.stderr.strip() == "pldc: error: missing.jsonl: data file not found"
