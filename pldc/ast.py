"""Syntax tree of a parsed ``.pld`` file.

Every node is a frozen pydantic model that carries the :class:`~pldc.errors.Span` it was
parsed from. Spans are excluded from equality so that two files that differ only in layout
compare equal after parsing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from pldc.errors import Span


class Node(BaseModel):
    """Base of all syntax nodes: immutable, with a source span that equality ignores."""

    model_config = ConfigDict(frozen=True)

    span: Span = Field(default_factory=Span.unknown, exclude=True, repr=False)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        assert isinstance(other, Node)
        return self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(repr(self.model_dump()))


class Name(Node):
    """An identifier with its own span, so diagnostics can point at a reference."""

    value: str


# ---- conditions ---------------------------------------------------------


class Predicate(Node):
    """A boolean feature used as a condition: ``mentions_religion``."""

    kind: Literal["predicate"] = "predicate"
    feature: Name


class IsValue(Node):
    """An enumerated feature compared with one of its values: ``speaker is woman``."""

    kind: Literal["is"] = "is"
    feature: Name
    value: Name


class Not(Node):
    """Negation of a condition."""

    kind: Literal["not"] = "not"
    operand: Condition


class And(Node):
    """Conjunction of two or more conditions."""

    kind: Literal["and"] = "and"
    operands: tuple[Condition, ...]


class Or(Node):
    """Disjunction of two or more conditions."""

    kind: Literal["or"] = "or"
    operands: tuple[Condition, ...]


Condition = Annotated[Predicate | IsValue | Not | And | Or, Field(discriminator="kind")]


# ---- declarations -------------------------------------------------------


class Meta(Node):
    """A header entry such as ``meta teacher "..."``: free-form provenance of the file."""

    key: Name
    value: str


class Input(Node):
    """A named input of the task, with the description the student reads."""

    name: Name
    description: str


class Label(Node):
    """A label of the task; ``spellings`` are the strings the data uses for it."""

    name: Name
    description: str
    spellings: tuple[str, ...] = ()

    @property
    def all_spellings(self) -> tuple[str, ...]:
        """The label's name followed by its declared spellings, without repeats."""
        return tuple(dict.fromkeys((self.name.value, *self.spellings)))


class Allowance(Node):
    """A finding kind accepted on purpose, with the reason: ``allow shadowed "..."``."""

    kind: Name
    reason: str


HitPolicy = Literal["first", "priority"]
HIT_POLICIES: tuple[str, ...] = ("first", "priority")


class Task(Node):
    """The classification task: inputs, labels, the default label and the hit policy."""

    name: Name
    description: str | None = None
    inputs: tuple[Input, ...] = ()
    labels: tuple[Label, ...] = ()
    default: Name | None = None
    hit: Name | None = None
    allows: tuple[Allowance, ...] = ()
    field_spans: dict[str, Span] = Field(default_factory=dict, exclude=True, repr=False)

    @property
    def hit_policy(self) -> str:
        """The declared hit policy, ``first`` when none is declared."""
        return self.hit.value if self.hit else "first"


class Feature(Node):
    """A typed feature: boolean when ``values`` is None, otherwise one of ``values``."""

    name: Name
    values: tuple[Name, ...] | None = None
    definition: str

    @property
    def is_bool(self) -> bool:
        return self.values is None

    @property
    def value_names(self) -> tuple[str, ...]:
        return tuple(v.value for v in self.values or ())


class Rule(Node):
    """A decision rule: when ``condition`` holds, conclude ``label``."""

    id: Name
    title: str
    condition: Condition | None = None
    label: Name | None = None
    rationale: str | None = None
    priority: int | None = None
    overrides: tuple[Name, ...] = ()
    examples: tuple[str, ...] = ()
    support: int | None = None
    confidence: float | None = None
    teacher: str | None = None
    tags: tuple[Name, ...] = ()
    allows: tuple[Allowance, ...] = ()
    group: str | None = None
    field_spans: dict[str, Span] = Field(default_factory=dict, exclude=True, repr=False)

    @property
    def effective_priority(self) -> int:
        return self.priority if self.priority is not None else 0


class Group(Node):
    """A named section of rules; it becomes a heading in the compiled prompt."""

    name: Name
    title: str | None = None
    rules: tuple[Rule, ...] = ()


class Assignment(Node):
    """One feature value in a case: ``x`` (true), ``not x`` (false) or ``x = value``."""

    feature: Name
    value: Name | bool


class Case(Node):
    """A decision-table test: given feature values, expect a label (optionally by a rule)."""

    name: Name
    title: str | None = None
    given: tuple[Assignment, ...] = ()
    expect: Name | None = None
    by: Name | None = None


Item = Task | Feature | Group | Rule | Case


class Ruleset(Node):
    """A whole ``.pld`` file."""

    path: str = Field(default="<string>", exclude=True)
    version: str
    meta: tuple[Meta, ...] = ()
    items: tuple[Item, ...] = ()

    @property
    def task(self) -> Task | None:
        return next((i for i in self.items if isinstance(i, Task)), None)

    @property
    def features(self) -> tuple[Feature, ...]:
        return tuple(i for i in self.items if isinstance(i, Feature))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """All rules in file order, including those inside groups."""
        found: list[Rule] = []
        for item in self.items:
            if isinstance(item, Rule):
                found.append(item)
            elif isinstance(item, Group):
                found.extend(item.rules)
        return tuple(found)

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(i for i in self.items if isinstance(i, Group))

    @property
    def cases(self) -> tuple[Case, ...]:
        return tuple(i for i in self.items if isinstance(i, Case))

    def meta_value(self, key: str) -> str | None:
        return next((m.value for m in self.meta if m.key.value == key), None)


Not.model_rebuild()
And.model_rebuild()
Or.model_rebuild()
Rule.model_rebuild()
