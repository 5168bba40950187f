"""Hypothesis strategies that generate valid rulesets and print them in a messy layout."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from pldc import ast
from pldc.format import format_condition, format_number, quote

KEYWORDS = {
    "pld", "meta", "task", "description", "input", "label", "spelled", "default", "hit", "feature", "bool",
    "one", "of", "group", "rule", "when", "then", "because", "priority", "overrides", "examples", "support",
    "confidence", "teacher", "tags", "not", "and", "or", "is", "case", "given", "expect", "by", "allow",
}  # fmt: skip

names = st.from_regex(r"[a-zA-Zéλ_][a-zA-Z0-9_éλ]{0,7}", fullmatch=True).filter(lambda n: n not in KEYWORDS)
# Any text a .pld string can hold: no control characters but newline and tab (escapes cover \r).
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f")
    | st.sampled_from('\n\t\r"\\{}%#'),
    max_size=40,
)


def _name(value: str) -> ast.Name:
    return ast.Name(value=value)


@st.composite
def conditions(draw: st.DrawFn, bools: list[str], enums: dict[str, list[str]], depth: int = 0) -> Any:
    leaves = []
    if bools:
        leaves.append(st.sampled_from(bools).map(lambda f: ast.Predicate(feature=_name(f))))
    if enums:
        leaves.append(
            st.sampled_from(sorted(enums)).flatmap(
                lambda f: st.sampled_from(enums[f]).map(lambda v: ast.IsValue(feature=_name(f), value=_name(v)))
            )
        )
    leaf = st.one_of(leaves)
    if depth >= 3:
        return draw(leaf)
    kind = draw(st.sampled_from(["leaf", "leaf", "not", "and", "or"]))
    if kind == "leaf":
        return draw(leaf)
    if kind == "not":
        return ast.Not(operand=draw(conditions(bools, enums, depth + 1)))
    operands = tuple(draw(st.lists(conditions(bools, enums, depth + 1), min_size=2, max_size=3)))
    return ast.And(operands=operands) if kind == "and" else ast.Or(operands=operands)


@st.composite
def rulesets(draw: st.DrawFn) -> ast.Ruleset:
    """A ruleset that parses and resolves: every reference points at a declared name."""
    # Label spellings match without regard to case, so names must differ in more than case.
    all_names = draw(st.lists(names, min_size=12, max_size=20, unique_by=str.casefold))
    labels, rest = all_names[:3], all_names[3:]
    bools = rest[:2]
    enum_name = rest[2]
    enum_values = rest[3:6]
    inputs = rest[6:8]
    task = ast.Task(
        name=_name(draw(names)),
        description=draw(st.none() | text),
        inputs=tuple(ast.Input(name=_name(n), description=draw(text)) for n in inputs),
        labels=tuple(
            ast.Label(
                name=_name(n), description=draw(text), spellings=tuple(draw(st.lists(st.just(n + "_x"), max_size=1)))
            )
            for n in labels
        ),
        default=_name(labels[0]),
        hit=draw(st.none() | st.sampled_from(ast.HIT_POLICIES).map(_name)),
    )
    features = [ast.Feature(name=_name(b), definition=draw(text)) for b in bools]
    features.append(ast.Feature(name=_name(enum_name), values=tuple(map(_name, enum_values)), definition=draw(text)))
    enums = {enum_name: enum_values}
    rule_ids = [f"R{i}" for i in range(draw(st.integers(1, 5)))]
    rules = []
    for position, rule_id in enumerate(rule_ids):
        earlier = rule_ids[position + 1 :]
        rules.append(
            ast.Rule(
                id=_name(rule_id),
                title=draw(text),
                condition=draw(conditions(bools, enums)),
                label=_name(draw(st.sampled_from(labels))),
                rationale=draw(st.none() | text),
                priority=draw(st.none() | st.integers(-5, 5)),
                overrides=tuple(map(_name, draw(st.lists(st.sampled_from(earlier), max_size=1)) if earlier else [])),
                examples=tuple(draw(st.lists(text, max_size=2))),
                support=draw(st.none() | st.integers(0, 1000)),
                confidence=draw(st.none() | st.floats(0, 1, allow_nan=False)),
                teacher=draw(st.none() | text),
                tags=tuple(map(_name, draw(st.lists(names, max_size=2)))),
            )
        )
    items: list[Any] = [task, *features]
    if draw(st.booleans()):
        group = draw(names)
        items.append(
            ast.Group(
                name=_name(group),
                title=draw(st.none() | text),
                rules=tuple(r.model_copy(update={"group": group}) for r in rules),
            )
        )
    else:
        items.extend(rules)
    return ast.Ruleset(version="1.0", meta=(ast.Meta(key=_name("source"), value=draw(text)),), items=tuple(items))


def messy_source(ruleset: ast.Ruleset, seed: int) -> str:
    """Print ``ruleset`` with random spacing, line breaks, comments and field order."""
    rng = random.Random(seed)

    def gap() -> str:
        return rng.choice([" ", "  ", "\n", " \n\t", "  # note ü\n ", "\n\n"])

    def comment() -> str:
        return rng.choice(["", "", f"# comment {rng.randint(0, 99)} ✓\n"])

    out = [comment(), f"pld{gap()}{ruleset.version}\n"]
    for meta in ruleset.meta:
        out.append(f"meta {meta.key.value}{gap()}{quote(meta.value)}\n")
    for item in ruleset.items:
        out.append(comment())
        if isinstance(item, ast.Task):
            fields = []
            if item.description is not None:
                fields.append(f"description{gap()}{quote(item.description)}")
            fields += [f"input {i.name.value}{gap()}{quote(i.description)}" for i in item.inputs]
            for label in item.labels:
                spelled = (" spelled " + ", ".join(quote(s) for s in label.spellings)) if label.spellings else ""
                fields.append(f"label {label.name.value} {quote(label.description)}{spelled}")
            assert item.default is not None
            fields.append(f"default{gap()}{item.default.value}")
            if item.hit is not None:
                fields.append(f"hit {item.hit.value}")
            out.append(f"task {item.name.value}{gap()}{{{gap()}" + gap().join(fields) + f"{gap()}}}\n")
        elif isinstance(item, ast.Feature):
            kind = "bool" if item.values is None else "one of [" + ",".join(v.value for v in item.values) + ",]"
            out.append(f"feature {item.name.value}:{gap()}{kind} {quote(item.definition)}\n")
        elif isinstance(item, ast.Group):
            title = f" {quote(item.title)}" if item.title is not None else ""
            body = gap().join(_messy_rule(rule, rng, gap) for rule in item.rules)
            out.append(f"group {item.name.value}{title} {{{gap()}{body}{gap()}}}\n")
        elif isinstance(item, ast.Rule):
            out.append(_messy_rule(item, rng, gap) + "\n")
    out.append(comment())
    return "".join(out)


def _messy_rule(rule: ast.Rule, rng: random.Random, gap: Any) -> str:
    assert rule.condition is not None and rule.label is not None
    fields = [f"when{gap()}{_messy_condition(rule.condition, rng)}", f"then {rule.label.value}"]
    if rule.rationale is not None:
        fields.append(f"because {quote(rule.rationale)}")
    if rule.priority is not None:
        fields.append(f"priority {rule.priority:+d}" if rng.random() < 0.3 else f"priority {rule.priority}")
    if rule.overrides:
        fields.append("overrides " + ",".join(o.value for o in rule.overrides))
    if rule.examples:
        fields.append("examples " + ", ".join(quote(e) for e in rule.examples))
    if rule.support is not None:
        fields.append(f"support {rule.support}")
    if rule.confidence is not None:
        fields.append(f"confidence {format_number(rule.confidence)}")
    if rule.teacher is not None:
        fields.append(f"teacher {quote(rule.teacher)}")
    if rule.tags:
        fields.append("tags " + ", ".join(t.value for t in rule.tags))
    rng.shuffle(fields)
    return f"rule {rule.id.value} {quote(rule.title)}{gap()}{{{gap()}" + gap().join(fields) + f"{gap()}}}"


def _messy_condition(condition: ast.Condition, rng: random.Random) -> str:
    text = format_condition(condition)
    # Redundant outer parentheses do not change the tree.
    return f"( {text} )" if rng.random() < 0.3 else text
