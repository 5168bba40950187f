"""Decide whether boxes cover a box with a SAT solver (MiniSat 2.2 through python-sat).

The cover test in :mod:`pldc.analysis.cubes` splits boxes and is fast when a piece escapes
every cover, but proving that dozens of small boxes cover a region can take it hundreds of
thousands of splits. A CDCL solver learns from each dead end instead. The question "is some
point of ``box`` outside every cover?" becomes a formula in conjunctive normal form:

- a bool feature is one variable;
- a one-of feature gets one variable per value that the query mentions, plus one variable
  standing for all the values it does not mention (they behave alike), with exactly one true;
- ``box`` contributes one clause per feature it restricts (the feature takes an allowed value);
- each cover contributes one clause: some feature it restricts takes a value it excludes.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from pysat.solvers import Solver

from pldc.analysis.cubes import Box, Domains
from pldc.analysis.logic import Value

_REST = object()


class _Encoding:
    """Variables of one query: bool features and the mentioned values of one-of features."""

    def __init__(self, boxes: Sequence[Box], domains: Domains) -> None:
        self.domains = domains
        mentioned: dict[str, set[Value]] = {}
        for box in boxes:
            for name, values in box.items():
                mentioned.setdefault(name, set()).update(values)
        self.variables: dict[tuple[str, object], int] = {}
        self.options: dict[str, list[tuple[object, int]]] = {}
        self.clauses: list[list[int]] = []
        for name in sorted(mentioned):
            domain = domains[name]
            if _is_bool(domain):
                self.variables[(name, True)] = len(self.variables) + 1
                continue
            # Values in a fixed order, without walking the domain (a topic may have thousands).
            options: list[object] = sorted(mentioned[name], key=lambda v: (type(v).__name__, str(v)))
            if len(options) < len(domain):
                options.append(_REST)
            ids = []
            for option in options:
                self.variables[(name, option)] = len(self.variables) + 1
                ids.append(len(self.variables))
            self.options[name] = list(zip(options, ids, strict=True))
            self.clauses.append(ids)
            self.clauses.extend([-a, -b] for a, b in combinations(ids, 2))

    def member(self, name: str, values: frozenset[Value], inside: bool = True) -> list[int]:
        """Return literals whose disjunction holds when ``name`` takes one of ``values``.

        With ``inside`` false, the disjunction holds when it takes a value outside them.
        """
        if _is_bool(self.domains[name]):
            variable = self.variables[(name, True)]
            pairs = ((variable, True), (-variable, False))
            return [literal for literal, value in pairs if (value in values) == inside]
        # Every value of a box is mentioned, so the rest variable lies outside every box.
        return [id_ for option, id_ in self.options[name] if (option is not _REST and option in values) == inside]

    def point(self, model: Sequence[int]) -> dict[str, Value]:
        """Return the feature values that a model sets, naming each mentioned feature once."""
        true = {literal for literal in model if literal > 0}
        point: dict[str, Value] = {}
        for (name, option), id_ in self.variables.items():
            domain = self.domains[name]
            if _is_bool(domain):
                point[name] = id_ in true
            elif id_ in true and option is _REST:
                point[name] = next(v for v in domain if (name, v) not in self.variables)
            elif id_ in true:
                assert isinstance(option, (bool, str))
                point[name] = option
        return point


def _is_bool(domain: Sequence[Value]) -> bool:
    # One-of values are names (strings); only bool domains hold False and True.
    return isinstance(domain[0], bool)


def covered(box: Box, covers: Sequence[Box], domains: Domains) -> bool:
    """Test whether every point of ``box`` lies in some box of ``covers``."""
    encoding = _Encoding([box, *covers], domains)
    with Solver(name="minisat22", bootstrap_with=_query(encoding, box, covers)) as solver:
        return not solver.solve()


def _query(encoding: _Encoding, box: Box, covers: Sequence[Box]) -> list[list[int]]:
    clauses = list(encoding.clauses)
    clauses.extend(encoding.member(name, values) for name, values in box.items())
    for cover in covers:
        clauses.append([literal for name, values in cover.items() for literal in encoding.member(name, values, False)])
    return clauses


def escape(box: Box, covers: Sequence[Box], domains: Domains) -> dict[str, Value] | None:
    """Return a point of ``box`` in no box of ``covers``, or None when they cover ``box``."""
    encoding = _Encoding([box, *covers], domains)
    clauses = _query(encoding, box, covers)
    with Solver(name="minisat22", bootstrap_with=clauses) as solver:
        if not solver.solve():
            return None
        model = solver.get_model()
    assert model is not None
    return encoding.point(model)
