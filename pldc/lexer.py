"""Pygments lexer for ``.pld`` files.

pldc itself never imports this module, so Pygments stays optional (``pip install "pldc[editor]"``).
The package registers the lexer as the ``pygments.lexers`` entry point ``pld``, so
``pygmentize -l pld FILE`` and ``pygments.lexers.get_lexer_by_name("pld")`` find it once pldc is
installed.
The token rules follow ``grammar/pld.lark``.
"""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

__all__ = ["PldLexer"]

# A name as in the grammar: a letter or underscore, then word characters and inner hyphens.
NAME = r"[^\W\d]\w*(?:-\w+)*"

DECLARATION_KEYWORDS = ("pld", "meta", "task", "feature", "group", "rule", "case")
FIELD_KEYWORDS = (
    "description",
    "input",
    "label",
    "spelled",
    "default",
    "hit",
    "when",
    "then",
    "because",
    "priority",
    "overrides",
    "examples",
    "support",
    "confidence",
    "teacher",
    "tags",
    "allow",
    "given",
    "expect",
    "by",
)
TYPE_KEYWORDS = ("bool", "one", "of")
OPERATOR_WORDS = ("and", "or", "not", "is")

# A keyword is a whole name: it must not continue with a word character or an inner hyphen.
_KEYWORD_END = r"(?!\w|-\w)"


class PldLexer(RegexLexer):
    """Lexer for ``.pld`` rule files of the pldc Prompt-Level Distillation compiler."""

    name = "PLD"
    aliases: ClassVar[list[str]] = ["pld"]
    filenames: ClassVar[list[str]] = ["*.pld"]
    mimetypes: ClassVar[list[str]] = ["text/x-pld"]

    tokens: ClassVar[dict[str, list[object]]] = {
        "root": [
            (r"\s+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"""', String.Doc, "long-string"),
            (r'"', String.Double, "string"),
            # Declarations name what they declare; the name gets its own token type.
            (rf"(rule|case)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (rf"(task|group)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (rf"(feature)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (rf"(meta)(\s+)({NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Attribute)),
            (rf"(input|label)(\s+)({NAME})", bygroups(Keyword, Whitespace, Name.Constant)),
            (r"(pld)(\s+)(\d+(?:\.\d+)?)", bygroups(Keyword.Namespace, Whitespace, Number)),
            (words(DECLARATION_KEYWORDS, suffix=_KEYWORD_END), Keyword.Declaration),
            (words(FIELD_KEYWORDS, suffix=_KEYWORD_END), Keyword),
            (words(TYPE_KEYWORDS, suffix=_KEYWORD_END), Keyword.Type),
            (words(OPERATOR_WORDS, suffix=_KEYWORD_END), Operator.Word),
            include("numbers"),
            (NAME, Name),
            (r"=", Operator),
            (r"[{}\[\](),:]", Punctuation),
        ],
        "numbers": [
            (r"[+-]?\d+\.\d+(?:[eE][+-]?\d+)?", Number.Float),
            (r"[+-]?\d+[eE][+-]?\d+", Number.Float),
            (r"[+-]?\d+", Number.Integer),
        ],
        "escapes": [
            (r'\\[\\"ntr]', String.Escape),
            # Any other escape is error E004 in pldc.
            (r"\\.", Error),
        ],
        "string": [
            (r'[^"\\\n]+', String.Double),
            include("escapes"),
            (r'"', String.Double, "#pop"),
            # A line break before the closing quote is error E003 (unterminated string).
            (r"\n", Error, "#pop"),
        ],
        "long-string": [
            (r'[^"\\]+', String.Doc),
            include("escapes"),
            (r'"""', String.Doc, "#pop"),
            (r'"', String.Doc),
        ],
    }
