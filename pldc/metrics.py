"""Classification metrics of a scored run, computed with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Macro-F1, accuracy, per-class figures and the confusion matrix (rows gold, columns predicted)."""

    labels: tuple[str, ...]
    macro_f1: float
    accuracy: float
    per_class: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "labels": list(self.labels),
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "per_class": [c.__dict__ for c in self.per_class],
            "confusion_matrix": [list(row) for row in self.confusion],
        }


def compute_metrics(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Metrics:
    """Score predictions over every task label, including labels absent from the data.

    A label with no predictions gets precision 0 rather than a warning, so a student that
    never predicts a class is penalised in macro-F1.
    """
    label_list = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=label_list, zero_division=0
    )
    present = [i for i, s in enumerate(support) if s > 0]
    macro = float(sum(f1[i] for i in present) / len(present)) if present else 0.0
    matrix = confusion_matrix(gold, predicted, labels=label_list)
    return Metrics(
        labels=tuple(label_list),
        macro_f1=macro,
        accuracy=float(accuracy_score(gold, predicted)),
        per_class=tuple(
            ClassMetrics(label, float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, label in enumerate(label_list)
        ),
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
    )
