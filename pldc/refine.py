"""``pldc distill refine``: the closed refinement loop of Prompt-Level Distillation.

One round:

1. The student classifies the training split with the rules and cites the rule it applied
   (:mod:`pldc.cite`).
2. The failures where it cited a rule of the ruleset and still gave the wrong label, and a
   sample of its correct answers, are drawn with ``random.Random`` seeded by the seed and the
   round number, and kept in data order.
3. The teacher reads the current rules and those examples (template ``templates/refine.j2``)
   and answers with a few edits (:mod:`pldc.refine_edits`).
4. Each edit is applied to the current ruleset and checked. An edit that checks is scored on
   the validation split with ordinary label scoring (:func:`pldc.evaluate.evaluate`), and it is
   kept only when validation macro-F1 rises strictly above the current ruleset's; otherwise the
   ruleset stays as it was.

The loop stops after a round that keeps no edit, a round with no cited failure to send, or
after the last round. Every student and teacher call goes through the call cache, so a re-run
with the same inputs replays the same rounds without calling a model.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from pldc import ast
from pldc.backend import StudentBackend
from pldc.cache import CallCache
from pldc.cite import CITE_MODES, DEFAULT_CITE_MAX_NEW_TOKENS, CitedPrediction, score_citations
from pldc.data import Dataset, Example
from pldc.errors import InputError, ModelError, UsageError
from pldc.format import format_source
from pldc.parse import ParseResult
from pldc.pipeline import CheckedRuleset, check_source
from pldc.refine_edits import (
    MAX_EDITS,
    EditFailed,
    Refinement,
    RuleEdit,
    apply_edit,
    parse_refinement,
    refinement_schema,
)
from pldc.stage_files import write_text
from pldc.teacher import InvalidAnswerError, RefusalError, Teacher, TeacherRequest

logger = logging.getLogger("pldc")

REFINE_LOG = "refine.jsonl"
REFINE_MANIFEST = "refine_manifest.json"
REFINED_FILE = "refined.pld"
DEFAULT_ROUNDS = 3
DEFAULT_FAILURES = 8
DEFAULT_SUCCESSES = 4
VALIDATION_SCORING = ("logprob", "generate")

Progress = Callable[[str, int], Callable[[int], None]]


def citations_file(round_number: int) -> str:
    """Name the file of a round's citations: every training example's gold, prediction and cited rule."""
    return f"citations_round{round_number}.jsonl"


def check_splits(train: Path, validation: Path) -> None:
    """Reject a split whose file name says test, and the same file as both splits."""
    for option, path in (("--train", train), ("--validation", validation)):
        if "test" in path.stem.casefold():
            raise UsageError(
                f"{option} {path}: the file name says it is a test split, which refinement never reads; "
                "pass a training or validation file"
            )
    same = train.resolve() == validation.resolve()
    if not same and train.exists() and validation.exists():
        same = train.resolve().samefile(validation.resolve())
    if same:
        raise UsageError(f"--train and --validation are the same file ({train}); hold out a separate validation split")


@dataclass(frozen=True)
class RefineSettings:
    """The loop's parameters."""

    rounds: int = DEFAULT_ROUNDS
    failures: int = DEFAULT_FAILURES
    successes: int = DEFAULT_SUCCESSES
    seed: int = 0
    cite: str = "choice"
    cite_max_new_tokens: int = DEFAULT_CITE_MAX_NEW_TOKENS
    scoring: str = "logprob"
    calibrate: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise UsageError("--rounds must be at least 1")
        if self.failures < 1:
            raise UsageError("--failures must be at least 1")
        if self.successes < 0:
            raise UsageError("--successes must be 0 or more")
        if self.cite not in CITE_MODES:
            raise UsageError(f"--cite must be one of {', '.join(CITE_MODES)}")
        if self.cite_max_new_tokens < 1:
            raise UsageError("--cite-max-new-tokens must be at least 1")
        if self.scoring not in VALIDATION_SCORING:
            raise UsageError(f"--scoring must be one of {', '.join(VALIDATION_SCORING)}")

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RefinePrompt:
    """The refinement template, rendered per round into a :class:`TeacherRequest`."""

    template: jinja2.Template
    task: ast.Task

    @classmethod
    def load(cls, task: ast.Task, template: str = "refine") -> RefinePrompt:
        from pldc.compile import load_template

        loaded = load_template(template)
        if not hasattr(loaded.module, "system") or not hasattr(loaded.module, "user"):
            raise InputError(f"{loaded.filename}: a refinement template must define macros system and user")
        return cls(loaded, task)

    def request(self, context: dict[str, Any]) -> TeacherRequest:
        task = {
            "name": self.task.name.value,
            "description": self.task.description or "",
            "inputs": [{"name": i.name.value, "description": i.description} for i in self.task.inputs],
            "labels": [{"name": label.name.value, "description": label.description} for label in self.task.labels],
            "default": self.task.default.value if self.task.default else "",
            "max_edits": MAX_EDITS,
        }
        module: Any = self.template.module
        try:
            system = str(module.system(task)).strip()
            user = str(module.user(context)).strip()
        except jinja2.TemplateError as error:
            raise InputError(f"{self.template.filename}: template error: {error}") from None
        schema = refinement_schema(self.task)
        return TeacherRequest(system=system, user=user, response_mime_type="application/json", response_schema=schema)


class RefineLog:
    """``RUN_DIR/refine.jsonl``: one JSON object per event, rewritten atomically after each one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        write_text(self.path, "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in self.entries))


@dataclass
class RefineOutcome:
    """The refined ruleset and what the loop did; ``error`` is set when the teacher failed."""

    parsed: ParseResult
    macro_f1_before: float
    macro_f1_after: float
    rounds: int = 0
    proposed: int = 0
    kept: list[str] = field(default_factory=list)
    stop_reason: str = ""
    error: ModelError | None = None


@dataclass
class Refiner:
    """Runs the refinement rounds on one ruleset; see the module docstring."""

    train: Dataset
    validation: Dataset
    student: StudentBackend
    teacher: Teacher
    cache: CallCache
    prompt: RefinePrompt
    settings: RefineSettings
    log: RefineLog
    progress: Progress

    def run(self, parsed: ParseResult) -> RefineOutcome:
        # Citation files of an earlier, longer run would otherwise sit beside this run's outputs.
        for stale in self.log.path.parent.glob("citations_round*.jsonl"):
            stale.unlink()
        checked = _checked(parsed)
        start = self._score_validation(checked, "validation (start)")
        outcome = RefineOutcome(parsed, start, start)
        self.log.add({"event": "start", "rules": len(parsed.ruleset.rules), "validation_macro_f1": start})
        for round_number in range(1, self.settings.rounds + 1):
            outcome.rounds = round_number
            kept = self._round(round_number, outcome)
            if outcome.stop_reason:
                break
            if not kept:
                outcome.stop_reason = f"round {round_number} kept no edit"
                break
        else:
            outcome.stop_reason = f"stopped after --rounds {self.settings.rounds}"
        self.log.add(
            {
                "event": "stop",
                "reason": outcome.stop_reason,
                "rounds": outcome.rounds,
                "validation_macro_f1_before": outcome.macro_f1_before,
                "validation_macro_f1_after": outcome.macro_f1_after,
                "kept": outcome.kept,
            }
        )
        return outcome

    def _round(self, number: int, outcome: RefineOutcome) -> int:
        """Run one round and return the number of edits it kept; set ``stop_reason`` to end the loop."""
        checked = _checked(outcome.parsed)
        bar = self.progress(f"round {number}: citing (train)", len(self.train.examples))
        cited = score_citations(
            checked,
            self.train,
            self.student,
            self.cache,
            self.settings.cite,
            self.settings.cite_max_new_tokens,
            progress=bar,
        )

        write_text(
            self.log.path.with_name(citations_file(number)),
            "".join(json.dumps({**p.to_json(), "reply": p.reply}, ensure_ascii=False) + "\n" for p in cited),
        )
        rng = random.Random(f"{self.settings.seed}:{number}")
        failures = _sample([p for p in cited if p.status == "cited" and not p.correct], self.settings.failures, rng)
        successes = _sample([p for p in cited if p.correct], self.settings.successes, rng)
        entry: dict[str, Any] = {
            "event": "round",
            "round": number,
            "train_accuracy": sum(p.correct for p in cited) / len(cited),
            "citations": dict(sorted(Counter(p.status for p in cited).items())),
            "cited_failures": sum(p.status == "cited" and not p.correct for p in cited),
            "failures": [p.to_json() for p in failures],
            "successes": [p.to_json() for p in successes],
        }
        if not failures:
            entry["stop"] = "the student made no error while citing a rule"
            self.log.add(entry)
            outcome.stop_reason = f"round {number}: no cited failures to send"
            return 0
        context = round_context(number, self.settings.rounds, checked, self.train, failures, successes)
        request = self.prompt.request(context)

        rule_ids = {rule.id.value for rule in checked.ruleset.rules}
        task = checked.ruleset.task
        assert task is not None
        labels = {label.name.value for label in task.labels}
        try:
            answer = self.teacher.ask(
                f"refine round {number}", request, lambda text: parse_refinement(text, rule_ids, labels)
            )
        except (RefusalError, InvalidAnswerError) as error:
            entry["teacher_error"] = str(error)
            self.log.add(entry)
            outcome.error = error
            outcome.stop_reason = f"round {number}: the teacher gave no valid answer"
            return 0

        refinement: Refinement = answer.value
        entry.update({"teacher": self.teacher.model, "cached": answer.cached, "analysis": refinement.analysis})
        entry["edits"] = len(refinement.edits)
        self.log.add(entry)
        outcome.proposed += len(refinement.edits)
        return sum(self._try_edit(number, index, edit, outcome) for index, edit in enumerate(refinement.edits))

    def _try_edit(self, number: int, index: int, edit: RuleEdit, outcome: RefineOutcome) -> bool:
        entry: dict[str, Any] = {
            "event": "edit",
            "round": number,
            "index": index,
            "description": edit.describe(),
            "edit": edit.model_dump(mode="json", exclude_none=True),
            "validation_macro_f1_before": outcome.macro_f1_after,
        }
        try:
            applied = apply_edit(outcome.parsed, edit, self.teacher.model)
        except EditFailed as error:
            logger.warning("round %d, edit %d (%s) rejected: %s", number, index + 1, edit.describe(), error)
            self.log.add({**entry, "check": str(error), "kept": False})
            return False
        after = self._score_validation(applied.checked, f"round {number}: edit {index + 1} (validation)")
        kept = after > outcome.macro_f1_after
        entry.update({"check": "ok", "rule": applied.rule_id, "changes": list(applied.changes)})
        self.log.add({**entry, "validation_macro_f1_after": after, "kept": kept})
        if kept:
            outcome.parsed = applied.checked.parsed
            outcome.macro_f1_after = after
            outcome.kept.append(edit.describe())
        logger.info(
            "round %d, edit %d (%s): macro-F1 %.4f, %s",
            number,
            index + 1,
            edit.describe(),
            after,
            "kept" if kept else "reverted",
        )
        return kept

    def _score_validation(self, checked: CheckedRuleset, description: str) -> float:
        from pldc.evaluate import evaluate

        bar = self.progress(description, len(self.validation.examples))
        result = evaluate(
            checked,
            self.validation,
            self.student,
            calibrate=self.settings.calibrate,
            progress=bar,
            scoring=self.settings.scoring,
            cache=self.cache,
        )
        return result.metrics.macro_f1


def round_context(
    number: int,
    rounds: int,
    checked: CheckedRuleset,
    train: Dataset,
    failures: Sequence[CitedPrediction],
    successes: Sequence[CitedPrediction],
) -> dict[str, Any]:
    """Build the refinement template's ``context``: the round, the current rules and features, the examples."""
    from pldc.format import format_condition

    by_id = {example.id: example for example in train.examples}
    rules = [
        {
            "id": rule.id.value,
            "title": rule.title,
            "condition": format_condition(rule.condition) if rule.condition is not None else "always",
            "label": rule.label.value if rule.label is not None else "",
        }
        for rule in checked.ordered
    ]
    # "choices", not "values": Jinja would resolve feature.values to the dict method.
    features = [
        {"name": f.name.value, "choices": list(f.value_names), "definition": f.definition}
        for f in checked.ruleset.features
    ]
    return {
        "round": number,
        "rounds": rounds,
        "rules": rules,
        "features": features,
        "failures": [_example_context(by_id[p.example_id], p, checked) for p in failures],
        "successes": [_example_context(by_id[p.example_id], p, checked) for p in successes],
    }


def _example_context(example: Example, prediction: CitedPrediction, checked: CheckedRuleset) -> dict[str, Any]:
    task = checked.ruleset.task
    assert task is not None
    inputs = [{"name": i.name.value, "value": example.inputs[i.name.value]} for i in task.inputs]
    return {
        "id": example.id,
        "inputs": inputs,
        "gold": prediction.gold,
        "predicted": prediction.predicted,
        "cited": prediction.cited,
    }


def _sample(pool: list[CitedPrediction], size: int, rng: random.Random) -> list[CitedPrediction]:
    """Draw up to ``size`` predictions and return them in data order."""
    chosen = sorted(rng.sample(range(len(pool)), min(size, len(pool))))
    return [pool[index] for index in chosen]


def _checked(parsed: ParseResult) -> CheckedRuleset:
    checked = check_source(format_source(parsed), parsed.ruleset.path)
    if checked.diagnostics:
        first = checked.diagnostics[0]
        raise InputError(f"{parsed.ruleset.path}: the ruleset does not check ({first.code}: {first.message})")
    return checked


def with_meta(parsed: ParseResult, entries: dict[str, str]) -> str:
    """Return the canonical text of ``parsed`` with ``meta`` lines set to ``entries`` (replaced or added)."""
    kept = [meta for meta in parsed.ruleset.meta if meta.key.value not in entries]
    added = [ast.Meta(key=ast.Name(value=key), value=value) for key, value in entries.items()]
    ruleset = parsed.ruleset.model_copy(update={"meta": (*kept, *added)})
    return format_source(ParseResult(ruleset, parsed.comments, parsed.source))
