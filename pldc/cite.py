"""Score a student that cites the rule it applied, and parse its citations.

The prompt is the template ``templates/cite.j2``: the default prompt's task, features and rules,
with an output format of two fixed lines::

    Rule: RULE_ID
    Answer: LABEL

``RULE_ID`` is the id of the rule the student applied, or ``none``. Two modes produce the reply:

- ``choice`` (the default): the student scores every well-formed reply (each rule id and
  ``none``, combined with each label) by the sum of its tokens' log-probabilities, minus the
  same reply's score on a content-free input (every input ``N/A``), and the best reply is taken.
  Small students that ignore the format still give a reply that parses.
- ``generate``: the student answers with greedy decoding and :func:`parse_citation` reads the
  answer; a reply that breaks the format counts as not citing, and a missing label as wrong.

Every call goes through the call cache, like ``pldc eval``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pldc.answers import UNPARSEABLE, label_spellings, parse_answer
from pldc.backend import StudentBackend
from pldc.cache import CallCache
from pldc.calls import CachedRun, call_parts, run_cached
from pldc.compile import compile_prompt
from pldc.data import Dataset, Example
from pldc.errors import UsageError
from pldc.pipeline import CheckedRuleset
from pldc.student import content_free

CITE_TEMPLATE = "cite"
CITE_MODES = ("choice", "generate")
# A reply is two short lines; the longest rule ids of the shipped rulesets take about ten tokens.
DEFAULT_CITE_MAX_NEW_TOKENS = 32
NO_RULE = "none"

_RULE_LINE = re.compile(r"^\s*[*_]*rule[*_]*\s*:(.*)$", re.IGNORECASE | re.MULTILINE)
_WRAPPING = " \t\"'`*_[]()"


@dataclass(frozen=True)
class Citation:
    """What a reply states: the cited rule id and the label, each None when absent.

    ``status`` is ``cited`` (a rule of the ruleset), ``none`` (the reply states that no rule applied),
    ``unknown`` (an id that is not a rule of the ruleset) or ``missing`` (no ``Rule:`` line).
    Only ``cited`` counts as citing a rule.
    """

    rule: str | None
    label: str | None
    status: str


def parse_citation(text: str, rule_ids: Sequence[str], spellings: Mapping[str, str]) -> Citation:
    """Read the first ``Rule:`` line and the last ``Answer:`` line of a reply.

    The rule id is compared case-insensitively after dropping quotes, brackets, asterisks and a
    trailing ``.``, and an exact match wins over a match that differs only in case. The label is
    parsed as in ``--scoring cot`` (see :mod:`pldc.answers`).
    """
    label = parse_answer(text, spellings, reasoning=True)
    match = _RULE_LINE.search(text)
    if match is None:
        return Citation(None, label, "missing")
    value = match.group(1).strip().strip(_WRAPPING).rstrip(".!:").strip(_WRAPPING)
    if value in rule_ids:
        return Citation(value, label, "cited")
    folded = [rule_id for rule_id in rule_ids if rule_id.casefold() == value.casefold()]
    if len(folded) == 1:
        return Citation(folded[0], label, "cited")
    if value.casefold() == NO_RULE:
        return Citation(None, label, "none")
    return Citation(None, label, "unknown")


@dataclass(frozen=True)
class CitedPrediction:
    """One example scored with citations: gold and predicted label, the cited rule and the reply."""

    example_id: str
    gold: str
    predicted: str
    cited: str | None
    status: str
    reply: str

    @property
    def correct(self) -> bool:
        return self.predicted == self.gold

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.example_id,
            "gold": self.gold,
            "predicted": self.predicted,
            "cited": self.cited,
            "citation": self.status,
        }


def reply_text(rule_id: str, label: str) -> str:
    """Write a reply in the format that ``cite.j2`` requests."""
    return f"Rule: {rule_id}\nAnswer: {label}"


def score_citations(
    checked: CheckedRuleset,
    dataset: Dataset,
    student: StudentBackend,
    cache: CallCache,
    mode: str = "choice",
    max_new_tokens: int = DEFAULT_CITE_MAX_NEW_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> list[CitedPrediction]:
    """Ask the student for a cited rule and a label on every example of ``dataset``.

    Raises:
        UsageError: an unknown mode, or ``choice`` with a backend that has no log-probabilities.
    """
    if mode not in CITE_MODES:
        raise UsageError(f"unknown citation mode {mode!r}; use one of: {', '.join(CITE_MODES)}")
    if mode == "choice" and not student.supports_logprobs:
        raise UsageError(
            f"backend {student.name!r} returns no log-probabilities, so it cannot choose a citation; "
            "pass --cite generate"
        )
    task = checked.ruleset.task
    assert task is not None
    labels = [label.name.value for label in task.labels]
    input_names = [item.name.value for item in task.inputs]
    rule_ids = [rule.id.value for rule in checked.ordered]
    prompt = compile_prompt(checked.ruleset, checked.ordered, CITE_TEMPLATE).text
    examples = dataset.examples
    if mode == "choice":
        replies = _choose_replies(student, cache, prompt, examples, [*rule_ids, NO_RULE], labels, input_names, progress)
    else:
        scoring = {"mode": "cite", "decoding": "greedy", "max_new_tokens": max_new_tokens}
        parts = [call_parts("generate", student.identity(), scoring, prompt, e, input_names, labels) for e in examples]

        def compute(chunk: list[Example]) -> list[dict[str, Any]]:
            generations = student.generate(prompt, chunk, input_names, max_new_tokens, progress=progress)
            return [{"text": g.text, "tokens": g.tokens} for g in generations]

        run = run_cached(examples, parts, compute, cache, progress=progress)
        replies = [str(result["text"]) for result in run.results]
    spellings = label_spellings(task)
    predictions = []
    for example, reply in zip(examples, replies, strict=True):
        citation = parse_citation(reply, rule_ids, spellings)
        predicted = citation.label or UNPARSEABLE
        predictions.append(CitedPrediction(example.id, example.label, predicted, citation.rule, citation.status, reply))
    return predictions


def _choose_replies(
    student: StudentBackend,
    cache: CallCache,
    prompt: str,
    examples: list[Example],
    citations: list[str],
    labels: list[str],
    input_names: list[str],
    progress: Callable[[int], None] | None,
) -> list[str]:
    """Return, per example, the well-formed reply with the highest calibrated log-probability."""
    candidates = [reply_text(rule_id, label) for rule_id in citations for label in labels]

    def scores(batch: list[Example], report: Callable[[int], None] | None) -> CachedRun:
        parts = [
            call_parts("score", student.identity(), {"mode": "cite-choice"}, prompt, e, input_names, candidates)
            for e in batch
        ]

        def compute(chunk: list[Example]) -> list[dict[str, Any]]:
            rows = student.score(prompt, chunk, candidates, input_names, progress=report)
            return [{"scores": row} for row in rows]

        return run_cached(batch, parts, compute, cache, progress=report)

    offsets = scores([content_free(examples[0])], None).results[0]["scores"]
    replies = []
    for result in scores(examples, progress).results:
        adjusted = [score - offset for score, offset in zip(result["scores"], offsets, strict=True)]
        replies.append(candidates[max(range(len(candidates)), key=adjusted.__getitem__)])
    return replies
