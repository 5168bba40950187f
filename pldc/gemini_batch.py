"""Gemini Batch API files: write request lines for the extraction stage and read the results back.

An input file has one JSON object per line, ``{"key": ID, "request": GenerateContentRequest}``,
with the request in the REST shape (camelCase field names). The pydantic models below describe
the subset of that shape pldc writes, and every exported line is validated against them. A
result file has one line per request, ``{"key": ID, "response": GenerateContentResponse}`` or
``{"key": ID, "error": Status}``; pldc accepts camelCase and snake_case field names in it.

Importing never drops a line silently: every malformed line, failed request, refusal, invalid
answer, unknown or repeated key, and every expected key with no line is reported with its line
number (where it has one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pldc.data import Example
from pldc.distill import ExtractionPrompt, ExtractRecord, ExtractStore, parse_extraction, pending_examples
from pldc.files import open_output, read_text
from pldc.gemini import REFUSAL_REASONS, GeminiSettings
from pldc.teacher import RejectedAnswer

# ---- the request shape ------------------------------------------------------


class _Rest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Part(_Rest):
    """A text part of a Content."""

    text: str


class Content(_Rest):
    """A turn of the conversation (``role`` is omitted in a system instruction)."""

    role: Literal["user", "model"] | None = None
    parts: list[Part] = Field(min_length=1)


class ThinkingConfig(_Rest):
    """Either a thinking token budget (-1 dynamic, 0 off, or a token count) or a thinking level."""

    thinkingBudget: int | None = Field(default=None, ge=-1)
    thinkingLevel: Literal["MINIMAL", "LOW", "MEDIUM", "HIGH"] | None = None

    @model_validator(mode="after")
    def _one_control(self) -> ThinkingConfig:
        if (self.thinkingBudget is None) == (self.thinkingLevel is None):
            raise ValueError("set exactly one of thinkingBudget and thinkingLevel")
        return self


class GenerationConfig(_Rest):
    """The generation options pldc sets."""

    responseMimeType: Literal["application/json", "text/x.enum"]
    responseSchema: dict[str, Any]
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    maxOutputTokens: int | None = Field(default=None, ge=1)
    thinkingConfig: ThinkingConfig | None = None


class GenerateContentRequest(_Rest):
    """The request body of ``models.generateContent``, less the fields pldc never sets."""

    contents: list[Content] = Field(min_length=1)
    systemInstruction: Content | None = None
    generationConfig: GenerationConfig


class BatchRequestLine(_Rest):
    """One line of a Batch API input file."""

    key: str = Field(min_length=1)
    request: GenerateContentRequest


# ---- export -----------------------------------------------------------------


def export_batch(
    path: Path, examples: Sequence[Example], prompt: ExtractionPrompt, settings: GeminiSettings, store: ExtractStore
) -> int:
    """Write a request line for every example not yet in ``store``; return how many were written."""
    pending = pending_examples(examples, store)
    lines: list[str] = []
    for example in pending:
        request = prompt.request(example)
        checked = BatchRequestLine.model_validate({"key": example.id, "request": settings.rest_body(request)})
        lines.append(checked.model_dump_json(exclude_none=True))
    with open_output(path) as handle:
        for line in lines:
            handle.write(line + "\n")
    return len(lines)


# ---- import -----------------------------------------------------------------


@dataclass(frozen=True)
class BatchProblem:
    """A result line (or a missing one) that produced no record; ``path`` names the file when known."""

    key: str | None
    line: int | None
    message: str
    path: Path | None = None

    def render(self, path: Path | None = None) -> str:
        source = path if path is not None else self.path
        where = f"{source}:{self.line}" if self.line is not None else str(source)
        key = f"key {self.key!r}: " if self.key is not None else ""
        return f"{where}: {key}{self.message}"


@dataclass
class BatchImport:
    """The outcome of an import: records written, keys already extracted, and every problem."""

    imported: int = 0
    already: int = 0
    problems: list[BatchProblem] = field(default_factory=list)


def import_batch(path: Path, examples: Sequence[Example], store: ExtractStore, teacher: str) -> BatchImport:
    """Validate each result line of ``path`` and append the valid answers to ``store``.

    Valid answers are written even when other lines have problems, so that a second import of
    a corrected or re-run batch only needs the failed keys.
    """
    store.check_teacher(teacher)
    by_id = {example.id: example for example in examples}
    expected = {example.id for example in pending_examples(examples, store)}
    result = BatchImport()
    seen: set[str] = set()
    for number, raw in enumerate(read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        line = read_result_line(raw)
        key = line.key
        if key is None:
            result.problems.append(BatchProblem(None, number, line.problem or "malformed line"))
            continue
        if key in seen:
            result.problems.append(BatchProblem(key, number, "key appears more than once; only the first is used"))
            continue
        seen.add(key)
        example = by_id.get(key)
        if example is None:
            result.problems.append(BatchProblem(key, number, "not an example id of the data file"))
            continue
        if line.text is None:
            result.problems.append(BatchProblem(key, number, line.problem or "no answer text"))
            continue
        if key not in expected:
            result.already += 1
            continue
        try:
            extraction = parse_extraction(line.text, example.label)
        except RejectedAnswer as error:
            result.problems.append(BatchProblem(key, number, f"invalid answer: {error}"))
            continue
        store.append(ExtractRecord.build(example, teacher, extraction))
        result.imported += 1
    for example in examples:
        if example.id in expected and example.id not in seen:
            result.problems.append(BatchProblem(example.id, None, "no result line for this example"))
    return result


@dataclass(frozen=True)
class ResultLine:
    """A result line's key and either its answer text or the reason it has none."""

    key: str | None
    text: str | None = None
    problem: str | None = None


def read_result_line(raw: str) -> ResultLine:
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        return ResultLine(None, problem=f"malformed line: not valid JSON ({error.msg} at character {error.pos})")
    if not isinstance(document, dict):
        return ResultLine(None, problem="malformed line: not a JSON object")
    key = document.get("key")
    if not isinstance(key, str) or not key:
        return ResultLine(None, problem="malformed line: no string 'key'")
    if "error" in document:
        status = document["error"] if isinstance(document["error"], dict) else {}
        code = " ".join(str(status[name]) for name in ("code", "status") if status.get(name)) or "no status"
        return ResultLine(key, problem=f"request failed ({code}): {status.get('message', 'no message')}")
    response = document.get("response")
    if not isinstance(response, dict):
        return ResultLine(key, problem="malformed line: neither 'response' nor 'error'")
    return _response_text(key, response)


def _response_text(key: str, response: dict[str, Any]) -> ResultLine:
    feedback = _get(response, "promptFeedback", "prompt_feedback") or {}
    blocked = _get(feedback, "blockReason", "block_reason")
    if blocked:
        return ResultLine(key, problem=f"refused: prompt blocked ({blocked})")
    candidates = response.get("candidates") or []
    if not candidates:
        return ResultLine(key, problem="refused: no candidates in the response")
    candidate = candidates[0]
    finish = _get(candidate, "finishReason", "finish_reason") or ""
    if finish in REFUSAL_REASONS:
        return ResultLine(key, problem=f"refused: finishReason {finish}")
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text", "") for part in parts if not part.get("thought"))
    if not text:
        return ResultLine(
            key, problem=f"malformed line: the candidate has no text (finishReason {finish or 'missing'})"
        )
    return ResultLine(key, text=text)


def _get(document: dict[str, Any], camel: str, snake: str) -> Any:
    return document.get(camel, document.get(snake))
