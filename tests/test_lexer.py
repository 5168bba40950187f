"""Editor support: the Pygments lexer and the TextMate grammar agree with grammar/pld.lark."""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT

pygments = pytest.importorskip("pygments")

from pygments.token import Comment, Error, Keyword, Name, Operator, String, _TokenType  # noqa: E402

from pldc.lexer import PldLexer  # noqa: E402

TEXTMATE = ROOT / "editors" / "pld.tmLanguage.json"
MALFORMED = FIXTURES / "malformed"
# Fixtures with an error the lexer can see: a bad escape, a line break in a string, a stray character.
LEXICAL_ERRORS = ("invalid_escape.pld", "unterminated_string.pld", "unexpected_character.pld")
VALID = sorted(
    [
        *(ROOT / "rulesets").glob("*.pld"),
        *(FIXTURES / "valid").glob("*.pld"),
        *(FIXTURES / "diff").glob("*.new.pld"),
        *(FIXTURES / "diff").glob("*.old.pld"),
        *(p for p in MALFORMED.glob("*.pld") if p.name not in LEXICAL_ERRORS),
    ]
)


def _keywords() -> set[str]:
    """Return the quoted keywords of the Lark grammar."""
    grammar = (ROOT / "grammar" / "pld.lark").read_text(encoding="utf-8")
    return set(re.findall(r'"([a-z]+)"', grammar))


def _tokens(source: str) -> list[tuple[_TokenType, str]]:
    return list(PldLexer().get_tokens(source))


def _token_of(source: str, text: str) -> _TokenType:
    return next(token for token, value in _tokens(source) if value == text)


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(ROOT)))
def test_lexer_has_no_error_tokens(path: Path) -> None:
    errors = [value for token, value in _tokens(path.read_text(encoding="utf-8")) if token in Error]
    assert errors == []


@pytest.mark.parametrize("name", LEXICAL_ERRORS)
def test_lexer_marks_lexical_errors(name: str) -> None:
    tokens = _tokens((MALFORMED / name).read_text(encoding="utf-8"))
    assert any(token in Error for token, _ in tokens)


def test_lexer_keeps_every_character() -> None:
    source = (ROOT / "rulesets" / "contract_nli.pld").read_text(encoding="utf-8")
    assert "".join(value for _, value in _tokens(source)) == source


def test_lexer_knows_every_grammar_keyword() -> None:
    lexed = {word: _tokens(word)[0] for word in _keywords()}
    assert all(value == word for word, (_, value) in lexed.items())
    not_keywords = sorted(word for word, (token, _) in lexed.items() if token not in Keyword and token not in Operator)
    assert not_keywords == []


@pytest.mark.parametrize("word", ["and", "or", "not", "is"])
def test_lexer_operator_words(word: str) -> None:
    assert _token_of(f"when a {word} b", word) in Operator.Word


def test_lexer_keyword_prefix_is_a_name() -> None:
    assert _token_of("when isolated", "isolated") is Name
    assert _token_of("when not-ready", "not-ready") is Name


def test_lexer_rule_id_is_a_function_name() -> None:
    assert _token_of('rule nda-1 "x" {}', "nda-1") is Name.Function


def test_lexer_strings_and_comments() -> None:
    source = 'because """\n    two\n    lines\n    """  # note\nteacher "a \\"b\\""\n'
    tokens = _tokens(source)
    assert (String.Doc, '"""') in tokens
    assert (Comment.Single, "# note") in tokens
    assert (String.Escape, '\\"') in tokens


def test_entry_point_names_the_lexer() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    target = project["entry-points"]["pygments.lexers"]["pld"]
    module, _, attribute = target.partition(":")
    assert getattr(importlib.import_module(module), attribute) is PldLexer
    assert "pld" in PldLexer.aliases
    assert "*.pld" in PldLexer.filenames


def test_pygments_is_an_optional_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(d.startswith("pygments") for d in project["dependencies"])
    assert any(d.startswith("pygments") for d in project["optional-dependencies"]["editor"])
    assert any(d.startswith("pygments") for d in project["optional-dependencies"]["dev"])


# ---- TextMate grammar -------------------------------------------------------


def _textmate() -> dict[str, object]:
    grammar: dict[str, object] = json.loads(TEXTMATE.read_text(encoding="utf-8"))
    return grammar


def _walk(node: object) -> list[dict[str, object]]:
    """Return every JSON object in the grammar, depth first."""
    found: list[dict[str, object]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def _scopes() -> set[str]:
    return {str(o["name"]) for o in _walk(_textmate()) if isinstance(o.get("name"), str) and "." in str(o["name"])}


def test_textmate_scope_name() -> None:
    grammar = _textmate()
    assert grammar["scopeName"] == "source.pld"
    assert grammar["fileTypes"] == ["pld"]


@pytest.mark.parametrize(
    "scope",
    [
        "comment.line.number-sign.pld",
        "string.quoted.double.pld",
        "string.quoted.triple.pld",
        "constant.character.escape.pld",
        "keyword.other.field.pld",
        "keyword.operator.logical.pld",
        "keyword.operator.comparison.pld",
        "constant.numeric.pld",
        "entity.name.function.pld",
    ],
)
def test_textmate_has_scope(scope: str) -> None:
    assert scope in _scopes()


def test_textmate_includes_resolve() -> None:
    grammar = _textmate()
    repository = grammar["repository"]
    assert isinstance(repository, dict)
    includes = {str(o["include"]) for o in _walk(grammar) if "include" in o}
    assert {i for i in includes if i.removeprefix("#") not in repository} == set()


def test_textmate_patterns_compile() -> None:
    # Python's re replaces Oniguruma (the engine of TextMate editors) here, because the patterns use
    # only syntax that both engines accept.
    patterns = [str(o[key]) for o in _walk(_textmate()) for key in ("match", "begin", "end") if key in o]
    assert len(patterns) > 10
    for pattern in patterns:
        re.compile(pattern)


def test_textmate_knows_every_grammar_keyword() -> None:
    keyword_patterns = [
        re.compile(str(o["match"]))
        for o in _walk(_textmate())
        if "match" in o and str(o.get("name", "")).startswith(("keyword.", "storage.type"))
    ]
    assert keyword_patterns
    missing = sorted(word for word in _keywords() if not any(p.fullmatch(word) for p in keyword_patterns))
    assert missing == []


def test_textmate_operator_words() -> None:
    logical = next(o for o in _walk(_textmate()) if o.get("name") == "keyword.operator.logical.pld")
    pattern = re.compile(str(logical["match"]))
    assert pattern.search("a and b")
    assert not pattern.search("a android b")
    assert not pattern.search("not-ready")
