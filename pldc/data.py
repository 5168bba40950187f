"""Read labelled data into examples whose inputs match a task's declared inputs.

Framings:

- ``stereoset-domain``: one example per StereoSet row; input ``sentence`` is the stereotype
  sentence (for intersentence rows, the context followed by it); label ``bias_type``.
- ``stereoset-candidate``: three examples per row, one per candidate; inputs ``context`` and
  ``candidate``; labels ``stereotype``, ``anti-stereotype``, ``unrelated``.
- ``contract-nli``: one example per NDA x hypothesis pair of the ContractNLI release format;
  inputs ``document`` then ``hypothesis``; label ``choice``. Examples of one document are
  adjacent, so the student can reuse the document's encoding.
- ``jsonl`` and ``csv``: generic files; ``--map INPUT=FIELD`` ties task inputs to fields
  (by default each input reads the field of the same name) and ``--label-field`` names the
  label column.

Every problem names the file and the row (1-based line for JSONL, data row for CSV) and the
field. Nothing is skipped silently.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pldc import ast
from pldc.errors import InputError, UsageError

FRAMINGS = ("stereoset-domain", "stereoset-candidate", "contract-nli", "jsonl", "csv")


@dataclass(frozen=True)
class Example:
    """One labelled input. ``shared`` counts the leading inputs that neighbours share."""

    id: str
    inputs: dict[str, str]
    label: str
    shared: int = 0
    source: str = ""


@dataclass(frozen=True)
class Dataset:
    examples: list[Example]
    framing: str
    path: str
    label_counts: dict[str, int] = field(default_factory=dict)


def sample_dataset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """Draw ``size`` examples with ``random.Random(seed).sample``, kept in file order with their ids.

    Raise :class:`UsageError` when the data has fewer examples than ``size``.
    """
    if size > len(dataset.examples):
        raise UsageError(f"{dataset.path}: --sample {size} is more than its {len(dataset.examples)} examples")
    chosen = sorted(random.Random(seed).sample(range(len(dataset.examples)), size))
    return Dataset([dataset.examples[index] for index in chosen], dataset.framing, dataset.path)


def guess_framing(path: Path) -> str:
    """Pick a framing from the file's name and shape."""
    name = path.name.lower()
    if path.suffix == ".json":
        return "contract-nli"
    if path.suffix == ".csv":
        return "csv"
    if "stereoset" in str(path).lower():
        return "stereoset-domain"
    if name.endswith(".jsonl"):
        return "jsonl"
    raise InputError(f"{path}: cannot tell the data format; pass --framing ({', '.join(FRAMINGS)})")


def load_dataset(
    path: Path,
    task: ast.Task,
    framing: str | None = None,
    field_map: Mapping[str, str] | None = None,
    label_field: str = "label",
    limit: int | None = None,
) -> Dataset:
    """Read ``path`` and map every row's label onto the task's labels.

    NOTE: the whole file is read into memory (a ContractNLI file is parsed as one JSON
    document), so memory grows with the file's size.
    """
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "data file not found"
        raise InputError(f"{path}: {what}")
    framing = framing or guess_framing(path)
    if framing not in FRAMINGS:
        raise InputError(f"unknown framing {framing!r}; use one of: {', '.join(FRAMINGS)}")
    if not path.is_file():
        raise InputError(f"{path}: data file not found")
    readers = {
        "stereoset-domain": lambda: _stereoset_domain(path),
        "stereoset-candidate": lambda: _stereoset_candidate(path),
        "contract-nli": lambda: _contract_nli(path),
        "jsonl": lambda: _generic(path, _jsonl_rows(path), task, field_map, label_field),
        "csv": lambda: _generic(path, _csv_rows(path), task, field_map, label_field),
    }
    expected = _framing_inputs(framing, task)
    declared = [i.name.value for i in task.inputs]
    if declared != expected:
        raise InputError(
            f"task {task.name.value!r} declares inputs ({', '.join(declared)}) but the {framing} framing "
            f"provides ({', '.join(expected)}); rename the task's inputs or use --framing jsonl with --map"
        )
    spellings = _spelling_index(task)
    examples: list[Example] = []
    counts: dict[str, int] = {}
    for example, raw_label, where in readers[framing]():
        label = spellings.get(raw_label.strip().casefold())
        if label is None:
            known = ", ".join(s for label in task.labels for s in label.all_spellings)
            raise InputError(
                f"{where}: label {raw_label!r} is not a label of task {task.name.value!r} (known: {known}); "
                "add it to a label's `spelled` list or fix the row"
            )
        examples.append(Example(example.id, example.inputs, label, example.shared, where))
        counts[label] = counts.get(label, 0) + 1
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise InputError(f"{path}: no examples found")
    return Dataset(examples, framing, str(path), counts)


def _framing_inputs(framing: str, task: ast.Task) -> list[str]:
    fixed = {
        "stereoset-domain": ["sentence"],
        "stereoset-candidate": ["context", "candidate"],
        "contract-nli": ["document", "hypothesis"],
    }
    return fixed.get(framing, [i.name.value for i in task.inputs])


def _spelling_index(task: ast.Task) -> dict[str, str]:
    index: dict[str, str] = {}
    for label in task.labels:
        for spelling in label.all_spellings:
            index.setdefault(spelling.strip().casefold(), label.name.value)
    return index


Row = tuple[Example, str, str]


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield numbered lines, reporting invalid UTF-8 with its line instead of a decoding traceback."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                where = f"{path}:{number}"
                raise InputError(
                    f"{where}: not valid UTF-8 at column {error.start + 1}; save the file as UTF-8"
                ) from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in _utf8_lines(path):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            reason = error.msg.removesuffix(" at")
            raise InputError(f"{where}: invalid JSON at column {error.colno}: {reason}") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        yield where, row


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    # Long documents exceed the csv module's default field limit of 128 KiB.
    csv.field_size_limit(2**31 - 1)
    start = 1
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
        with handle:
            # strict: an unterminated quote raises at the end of the file instead of swallowing the rest.
            reader = csv.DictReader(handle, strict=True)
            header = reader.fieldnames or []
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:
                raise InputError(f"{path}:1: column {repeated[0]!r} appears more than once in the header")
            start = reader.line_num + 1
            for row in reader:
                # Report the physical line, so a quoted field spanning lines still points right.
                where = f"{path}:{reader.line_num}"
                if None in row:
                    raise InputError(f"{where}: more fields than the header has columns ({len(header)})")
                yield where, row
                start = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not valid UTF-8 at byte {error.start}; save the file as UTF-8") from None
    except csv.Error as error:
        hint = "; a quoted field that starts on this line is not closed" if "end of data" in str(error) else ""
        raise InputError(f"{path}:{start}: invalid CSV: {error}{hint}") from None


def _field(row: Mapping[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        raise InputError(f"{where}: missing field {name!r}")
    if not isinstance(value, str):
        raise InputError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where}: field {name!r} contains an unpaired surrogate (invalid text)") from None
    return value


def _stereoset_domain(path: Path) -> Iterator[Row]:
    for where, row in _jsonl_rows(path):
        kind = _field(row, "type", where)
        stereotype = _field(row, "stereotype", where)
        if kind == "intersentence":
            sentence = f"{_field(row, 'context', where)} {stereotype}"
        elif kind == "intrasentence":
            sentence = stereotype
        else:
            raise InputError(f"{where}: field 'type' is {kind!r}, expected intrasentence or intersentence")
        example_id = f"{path.name}:{where.rsplit(':', 1)[1]}"
        yield (
            Example(example_id, {"sentence": sentence}, ""),
            _field(row, "bias_type", where),
            f"{where} field 'bias_type'",
        )


def _stereoset_candidate(path: Path) -> Iterator[Row]:
    for where, row in _jsonl_rows(path):
        context = _field(row, "context", where)
        line = where.rsplit(":", 1)[1]
        for kind in ("stereotype", "anti-stereotype", "unrelated"):
            candidate = _field(row, kind, where)
            example = Example(f"{path.name}:{line}:{kind}", {"context": context, "candidate": candidate}, "", shared=1)
            yield example, kind, f"{where} field {kind!r}"


def _contract_nli(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}:{error.colno}: invalid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not valid UTF-8 at byte {error.start}; save the file as UTF-8") from None
    if not isinstance(data, dict) or "documents" not in data or "labels" not in data:
        raise InputError(f"{path}: expected a ContractNLI object with 'documents' and 'labels'")
    hypotheses = data["labels"]
    if not isinstance(data["documents"], list):
        raise InputError(f"{path}: field 'documents' must be a list of documents")
    if not isinstance(hypotheses, dict) or not all(isinstance(v, dict) for v in hypotheses.values()):
        raise InputError(f"{path}: field 'labels' must map hypothesis keys to objects with a 'hypothesis' text")
    for number, document in enumerate(data["documents"], 1):
        where = f"{path} document {number}"
        if not isinstance(document, dict):
            raise InputError(f"{where}: expected a document object, got {type(document).__name__}")
        doc_id = document.get("id")
        text = document.get("text")
        if doc_id is None or not isinstance(text, str):
            raise InputError(f"{where}: missing field 'id' or 'text'")
        try:
            annotations = document["annotation_sets"][0]["annotations"]
        except (KeyError, IndexError, TypeError):
            raise InputError(f"{where} (id {doc_id}): missing field 'annotation_sets[0].annotations'") from None
        if not isinstance(annotations, dict):
            raise InputError(f"{where} (id {doc_id}): field 'annotations' must be an object")
        for key in sorted(hypotheses, key=_nda_number):
            if key not in annotations:
                raise InputError(f"{where} (id {doc_id}): no annotation for hypothesis {key!r}")
            hypothesis = hypotheses[key].get("hypothesis")
            if not isinstance(hypothesis, str):
                raise InputError(f"{path}: labels[{key!r}] has no 'hypothesis' text")
            annotation = annotations[key]
            choice = annotation.get("choice") if isinstance(annotation, dict) else None
            if not isinstance(choice, str):
                raise InputError(f"{where} (id {doc_id}) hypothesis {key}: missing field 'choice'")
            example = Example(f"{path.name}:{doc_id}/{key}", {"document": text, "hypothesis": hypothesis}, "", shared=1)
            yield example, choice, f"{where} (id {doc_id}) hypothesis {key} field 'choice'"


def _nda_number(key: str) -> tuple[int, str]:
    prefix, _, number = key.rpartition("-")
    return (int(number), prefix) if number.isdigit() else (0, key)


def _generic(
    path: Path,
    rows: Iterator[tuple[str, dict[str, Any]]],
    task: ast.Task,
    field_map: Mapping[str, str] | None,
    label_field: str,
) -> Iterator[Row]:
    mapping = dict(field_map or {})
    inputs: Sequence[str] = [i.name.value for i in task.inputs]
    unknown = sorted(set(mapping) - set(inputs))
    if unknown:
        raise InputError(f"--map names {', '.join(unknown)}, which the task does not declare as inputs")
    for where, row in rows:
        values = {name: _field(row, mapping.get(name, name), where) for name in inputs}
        raw_id = row.get("id")
        example_id = str(raw_id) if raw_id is not None else f"{path.name}:{where.rsplit(':', 1)[1]}"
        label = row.get(label_field)
        if label is None or label == "":
            raise InputError(f"{where}: missing field {label_field!r} (the label; set --label-field)")
        if not isinstance(label, str):
            raise InputError(f"{where}: field {label_field!r} must be a string label, got {type(label).__name__}")
        yield Example(example_id, values, ""), label, f"{where} field {label_field!r}"
