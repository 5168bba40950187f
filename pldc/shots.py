"""Draw the labelled examples of a k-shot prompt from a training split."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from pldc import ast
from pldc.data import Dataset, Example, load_dataset
from pldc.errors import UsageError

logger = logging.getLogger("pldc")


def draw_shots(examples: Sequence[Example], count: int, seed: int) -> list[Example]:
    """Return ``count`` examples drawn without replacement by ``random.Random(seed)``, in drawn order."""
    if count < 1:
        raise UsageError("--shots must be at least 1")
    if count > len(examples):
        raise UsageError(f"--shots {count} is more than the {len(examples)} examples of the training file")
    generator = random.Random(seed)
    return [examples[index] for index in generator.sample(range(len(examples)), count)]


def load_shots(
    path: Path,
    task: ast.Task,
    count: int,
    seed: int,
    evaluated: Dataset,
    field_map: Mapping[str, str] | None = None,
    label_field: str = "label",
) -> list[Example]:
    """Read the training file ``path`` with the evaluated data's framing and draw ``count`` shots.

    Raises:
        UsageError: ``path`` is the evaluated file itself, or it has fewer than ``count`` examples.
    """
    evaluated_path = Path(evaluated.path)
    if path.exists() and evaluated_path.exists() and path.resolve().samefile(evaluated_path.resolve()):
        raise UsageError(f"--shots-from {path} is the evaluated data file; draw shots from a training split instead")
    training = load_dataset(path, task, evaluated.framing, field_map, label_field)
    shots = draw_shots(training.examples, count, seed)
    evaluated_inputs = {tuple(sorted(example.inputs.items())) for example in evaluated.examples}
    leaked = [shot.id for shot in shots if tuple(sorted(shot.inputs.items())) in evaluated_inputs]
    if leaked:
        logger.warning(
            "%d of %d shots have the same inputs as evaluated examples (%s); their scores are not held out",
            len(leaked),
            len(shots),
            ", ".join(leaked[:5]),
        )
    return shots
