"""What every student backend provides, and the user message every backend sends.

A backend answers in one of two ways: it scores each label by log-probability (``score``), or
it generates free text that the caller parses into a label (``generate``). Backends that cannot
return log-probabilities set ``supports_logprobs`` to False and only generate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pldc.data import Example


@dataclass(frozen=True)
class Generation:
    """One generated answer, with its cost."""

    text: str
    tokens: int
    seconds: float


def user_content(example: Example, input_names: Sequence[str]) -> str:
    """Return the user turn for ``example``: one ``name: value`` paragraph per task input, in task order."""
    return "\n\n".join(f"{name}: {example.inputs[name]}" for name in input_names)


class StudentBackend(Protocol):
    """A student model behind some interface: transformers in-process, or a server."""

    name: str
    supports_logprobs: bool

    def identity(self) -> dict[str, Any]:
        """Return what identifies the model's output in the call cache (no credentials)."""
        ...

    def score(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        labels: Sequence[str],
        input_names: Sequence[str],
        progress: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        """Per example, the log-probability of each label, in ``labels`` order."""
        ...

    def generate(
        self,
        system_prompt: str,
        examples: Sequence[Example],
        input_names: Sequence[str],
        max_new_tokens: int,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Per example, the greedy (temperature 0) answer to the system prompt and its user turn."""
        ...
