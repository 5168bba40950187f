"""Generate synthetic rulesets of a given size for benchmarks (seeded, deterministic)."""

from __future__ import annotations

import random


def generate_ruleset(
    rules: int, seed: int = 0, bool_features: int = 60, enum_features: int = 20, rules_per_topic: int | None = None
) -> str:
    """Return ``.pld`` source with ``rules`` rules over shared features.

    Each rule tests two to four features drawn from a pool, so many rules share features, as
    rules distilled from one training set do. With ``rules_per_topic``, a one-of feature
    ``topic`` gets one value per that many rules and every rule requires one topic, the way
    ContractNLI rules each address one of its hypotheses.
    """
    rng = random.Random(seed)
    labels = ["alpha", "beta", "gamma", "delta"]
    lines = [
        "pld 1.0",
        'meta source "synthetic benchmark ruleset"',
        "",
        "task synthetic {",
        '    description "A synthetic task for timing the compiler."',
        '    input text "The text to classify."',
        *[f'    label {label} "The {label} class."' for label in labels],
        "    default alpha",
        "    hit first",
        "}",
        "",
    ]
    bools = [f"b{i}" for i in range(bool_features)]
    enums = {f"e{i}": [f"v{j}" for j in range(5)] for i in range(enum_features)}
    lines += [f'feature {name}: bool "Whether property {name} holds."' for name in bools]
    lines += [f'feature {name}: one of [{", ".join(values)}] "Which {name} applies."' for name, values in enums.items()]
    topics = [f"t{i}" for i in range(max(1, rules // rules_per_topic))] if rules_per_topic else []
    if topics:
        lines.append(f'feature topic: one of [{", ".join(topics)}] "Which topic the input is about."')
    for index in range(rules):
        terms = []
        for _ in range(rng.randint(2, 4)):
            if rng.random() < 0.6:
                name = rng.choice(bools)
                terms.append(name if rng.random() < 0.7 else f"not {name}")
            else:
                name = rng.choice(sorted(enums))
                terms.append(f"{name} is {rng.choice(enums[name])}")
        condition = (
            " and ".join(terms)
            if rng.random() < 0.8
            else f"({terms[0]} or {terms[1]}) and " + " and ".join(terms[2:] or terms[:1])
        )
        if topics:
            condition = f"topic is {rng.choice(topics)} and {condition}"
        lines += [
            "",
            f'rule R{index:05d} "Synthetic rule {index}" {{',
            f"    when {condition}",
            f"    then {rng.choice(labels)}",
            f'    because "Generated rule number {index}."',
            f"    priority {rng.randint(0, 3)}",
            f'    examples "train:{rng.randint(1, 5000)}"',
            f"    support {rng.randint(1, 50)}",
            f"    confidence 0.{rng.randint(50, 99)}",
            "}",
        ]
    return "\n".join(lines) + "\n"
