"""``pldc distill``, stage 1: extract one rule per training example with a teacher model.

For each labelled example the teacher sees the task, the example's inputs and its gold label,
and answers with a rationale and one general rule (:class:`Extraction`). The rule's condition
is stated twice: in words, and as one to four typed features (``bool`` or ``one_of``, with the
value the rule requires), so that later stages can map rules onto ``.pld`` features and
conditions. The prompt is the template ``templates/extract.j2``; ``docs/distill.md`` documents
it and the answer schema.

Answers go to ``RUN_DIR/extract.jsonl``, one line per example id, appended as they arrive and
flushed to disk line by line. A re-run skips the ids already there, and the call cache answers
any request that was sent but not yet written, so an interrupted run resumes without repeating
a teacher call.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pldc import ast
from pldc.data import Example
from pldc.errors import InputError, ModelError, UsageError
from pldc.parse import KEYWORDS
from pldc.teacher import InvalidAnswerError, RefusalError, RejectedAnswer, Teacher, TeacherRequest, validate_answer

logger = logging.getLogger("pldc")

EXTRACT_FILE = "extract.jsonl"
MAX_FEATURES = 4
MAX_VALUES = 8
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")


# ---- the teacher's answer ---------------------------------------------------


def _check_identifier(name: str, what: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(f"{what} {name!r} is not a lower-case snake_case identifier")
    if name in KEYWORDS:
        raise ValueError(f"{what} {name!r} is a reserved word of the .pld language")
    return name


class RuleFeature(BaseModel):
    """A typed feature that a rule's condition tests, with the value the rule requires."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["bool", "one_of"]
    values: list[str] = Field(max_length=MAX_VALUES)
    definition: str = Field(min_length=1)
    value: str

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, name: str) -> str:
        return _check_identifier(name, "feature name")

    @model_validator(mode="after")
    def _value_fits_type(self) -> RuleFeature:
        if self.type == "bool":
            if self.values:
                raise ValueError(f"bool feature {self.name!r} must have an empty values list")
            if self.value not in ("true", "false"):
                raise ValueError(f"bool feature {self.name!r} has value {self.value!r}; use 'true' or 'false'")
            return self
        if len(self.values) < 2:
            raise ValueError(f"one_of feature {self.name!r} needs at least two values")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"one_of feature {self.name!r} lists a value twice")
        for value in self.values:
            _check_identifier(value, f"value of feature {self.name!r}")
        if self.value not in self.values:
            raise ValueError(f"feature {self.name!r} has value {self.value!r}, which is not one of its values")
        return self


class ExtractedRule(BaseModel):
    """One general rule: a title, its condition in words and as features, and the label it concludes."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1)
    condition: str = Field(min_length=1)
    label: str
    features: list[RuleFeature] = Field(min_length=1, max_length=MAX_FEATURES)

    @model_validator(mode="after")
    def _feature_names_unique(self) -> ExtractedRule:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError("the rule lists a feature twice")
        return self


class Extraction(BaseModel):
    """The teacher's answer for one example: why the gold label is right, and the rule it abstracts to."""

    model_config = ConfigDict(extra="forbid")

    rationale: str = Field(min_length=1)
    rule: ExtractedRule


def extraction_schema(task: ast.Task) -> dict[str, Any]:
    """Build the Gemini response schema of :class:`Extraction`, with the task's labels as an enum.

    ``propertyOrdering`` makes the model write the rationale before the rule.
    """
    feature = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "description": "lower-case snake_case identifier"},
            "type": {"type": "STRING", "enum": ["bool", "one_of"]},
            "values": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": MAX_VALUES},
            "definition": {"type": "STRING"},
            "value": {"type": "STRING"},
        },
        "required": ["name", "type", "values", "definition", "value"],
        "propertyOrdering": ["name", "type", "values", "definition", "value"],
    }
    rule = {
        "type": "OBJECT",
        "properties": {
            "title": {"type": "STRING"},
            "condition": {"type": "STRING"},
            "label": {"type": "STRING", "enum": [label.name.value for label in task.labels]},
            "features": {"type": "ARRAY", "items": feature, "minItems": 1, "maxItems": MAX_FEATURES},
        },
        "required": ["title", "condition", "label", "features"],
        "propertyOrdering": ["title", "condition", "label", "features"],
    }
    return {
        "type": "OBJECT",
        "properties": {"rationale": {"type": "STRING"}, "rule": rule},
        "required": ["rationale", "rule"],
        "propertyOrdering": ["rationale", "rule"],
    }


def parse_extraction(text: str, gold_label: str) -> Extraction:
    """Validate an answer text against :class:`Extraction` and the example's gold label."""
    extraction = validate_answer(Extraction, text)
    if extraction.rule.label != gold_label:
        raise RejectedAnswer(f"rule.label is {extraction.rule.label!r} but the gold label is {gold_label!r}")
    return extraction


# ---- the prompt -------------------------------------------------------------


def task_context(task: ast.Task) -> dict[str, Any]:
    """Describe the task for a teacher template: its name, description, inputs and labels."""
    return {
        "name": task.name.value,
        "description": task.description or "",
        "inputs": [{"name": i.name.value, "description": i.description} for i in task.inputs],
        "labels": [{"name": label.name.value, "description": label.description} for label in task.labels],
    }


def render_macros(template: jinja2.Template, system: Sequence[Any], user: Sequence[Any]) -> tuple[str, str]:
    """Render a teacher template's ``system`` and ``user`` macros with the given arguments."""
    module = template.module
    if not hasattr(module, "system") or not hasattr(module, "user"):
        raise InputError(f"{template.filename}: a teacher template must define macros system and user")
    try:
        return str(module.system(*system)).strip(), str(module.user(*user)).strip()
    except jinja2.TemplateError as error:
        raise InputError(f"{template.filename}: template error: {error}") from None


@dataclass(frozen=True)
class ExtractionPrompt:
    """The extraction template, rendered per example into a :class:`TeacherRequest`."""

    template: jinja2.Template
    task: ast.Task
    input_names: tuple[str, ...]

    @classmethod
    def load(cls, task: ast.Task, template: str = "extract") -> ExtractionPrompt:
        from pldc.compile import load_template

        return cls(load_template(template), task, tuple(i.name.value for i in task.inputs))

    def request(self, example: Example) -> TeacherRequest:
        context = {
            "id": example.id,
            "label": example.label,
            "inputs": [{"name": name, "value": example.inputs[name]} for name in self.input_names],
        }
        system, user = render_macros(self.template, [task_context(self.task)], [context])
        schema = extraction_schema(self.task)
        return TeacherRequest(system=system, user=user, response_mime_type="application/json", response_schema=schema)


# ---- the stage output -------------------------------------------------------


class ExtractRecord(BaseModel):
    """One line of ``extract.jsonl``: an example, its gold label and the teacher's answer."""

    model_config = ConfigDict(extra="forbid")

    id: str
    label: str
    source: str
    teacher: str
    rationale: str
    rule: ExtractedRule

    @classmethod
    def build(cls, example: Example, teacher: str, extraction: Extraction) -> ExtractRecord:
        return cls(
            id=example.id,
            label=example.label,
            source=example.source,
            teacher=teacher,
            rationale=extraction.rationale,
            rule=extraction.rule,
        )


class ExtractStore:
    """``RUN_DIR/extract.jsonl``: reads the ids already extracted and appends new records durably."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / EXTRACT_FILE
        self.records: dict[str, ExtractRecord] = {}
        self._lock = threading.Lock()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{run_dir}: cannot create the run directory: {error.strerror}") from None
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise InputError(f"{self.path}: cannot read: {error.strerror}") from None
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for number, raw in enumerate(complete, start=1):
            try:
                record = ExtractRecord.model_validate_json(raw)
            except ValidationError as error:
                raise InputError(
                    f"{self.path}:{number}: invalid record ({error.errors()[0]['msg']}); "
                    "fix or delete the line, then re-run to extract that example again"
                ) from None
            if record.id in self.records:
                raise InputError(f"{self.path}:{number}: example id {record.id!r} appears twice; delete one line")
            self.records[record.id] = record
        if tail.strip():
            # A run killed while writing leaves a last line without its newline: drop it so the
            # example is extracted again (from the call cache when its answer was stored).
            logger.warning("%s:%d: dropping an incomplete last line left by an interrupted run", self.path, len(lines))
            self._truncate(len(data) - len(tail))

    def _truncate(self, size: int) -> None:
        try:
            with self.path.open("r+b") as handle:
                handle.truncate(size)
        except OSError as error:
            raise InputError(f"{self.path}: cannot repair the file: {error.strerror}") from None

    def check_teacher(self, teacher: str) -> None:
        """Raise :class:`UsageError` when earlier records came from another teacher model."""
        others = sorted({record.teacher for record in self.records.values()} - {teacher})
        if others:
            raise UsageError(
                f"{self.path} contains records from {', '.join(others)}, not {teacher}; "
                "use another --run-dir or the same --model"
            )

    def append(self, record: ExtractRecord) -> None:
        line = record.model_dump_json() + "\n"
        with self._lock:
            try:
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise InputError(f"{self.path}: cannot write: {error.strerror}") from None
            self.records[record.id] = record


# ---- the stage --------------------------------------------------------------


@dataclass
class ExtractReport:
    """The outcome of an extraction run: examples extracted now, found in the run directory, and failed."""

    extracted: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)


def pending_examples(examples: Sequence[Example], store: ExtractStore) -> list[Example]:
    """Return the examples that have no record yet, raising on duplicate example ids."""
    seen: set[str] = set()
    pending: list[Example] = []
    for example in examples:
        if example.id in seen:
            raise InputError(f"{example.source}: example id {example.id!r} appears twice; ids must be unique")
        seen.add(example.id)
        if example.id not in store.records:
            pending.append(example)
    return pending


def extract(
    examples: Sequence[Example],
    prompt: ExtractionPrompt,
    client: Teacher,
    store: ExtractStore,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> ExtractReport:
    """Ask the teacher for each pending example's rule and append each answer to ``store``.

    A refusal or an answer that stays invalid after the re-asks is logged and counted in the
    report, and the run goes on. Any other :class:`ModelError` (an exhausted retry, a rejected
    request) stops the run: requests not yet sent are cancelled, and answers already stored
    stay in the store and the cache.
    """
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    store.check_teacher(client.model)
    pending = pending_examples(examples, store)
    report = ExtractReport(skipped=len(examples) - len(pending))
    requests = [(example, prompt.request(example)) for example in pending]

    def ask(example: Example, request: TeacherRequest) -> Extraction:
        answer = client.ask(example.id, request, lambda text: parse_extraction(text, example.label))
        return answer.value

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pldc-teacher") as pool:
        queue = iter(requests)
        running: dict[Future[Extraction], Example] = {}
        _submit(pool, ask, queue, running, workers)
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    example = running.pop(future)
                    _collect(future, example, client, store, report)
                    if progress is not None:
                        progress(1)
                _submit(pool, ask, queue, running, workers - len(running))
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return report


def _submit(
    pool: ThreadPoolExecutor,
    ask: Callable[[Example, TeacherRequest], Extraction],
    queue: Iterator[tuple[Example, TeacherRequest]],
    running: dict[Future[Extraction], Example],
    count: int,
) -> None:
    """Start up to ``count`` more requests, so that at most ``workers`` are queued at a time."""
    for _ in range(count):
        item = next(queue, None)
        if item is None:
            return
        example, request = item
        running[pool.submit(ask, example, request)] = example


def _collect(
    future: Future[Extraction], example: Example, client: Teacher, store: ExtractStore, report: ExtractReport
) -> None:
    try:
        extraction = future.result()
    except (RefusalError, InvalidAnswerError) as error:
        logger.warning("%s", error)
        report.failures.append(example.id)
        return
    except ModelError:
        raise
    store.append(ExtractRecord.build(example, client.model, extraction))
    report.extracted += 1


def summary_line(report: ExtractReport, total: int, path: Path) -> str:
    """Describe an extraction run in one line."""
    return (
        f"{report.extracted} extracted, {report.skipped} already in {path}, "
        f"{len(report.failures)} failed, of {total} examples"
    )
