"""Statement shapes: SQL statements with every literal removed (MongoDB commands are shaped
by ``integrations.pymongo``, from the command document the driver sends).

A shape is ``(key, text)``: statements with the same key ran "the same statement" for
repetition counting; ``text`` is what events show. Neither ever holds a literal, a
parameter or a comment (sqlcommenter comments carry trace ids and would split shapes).

PostgreSQL statements are keyed by libpg_query's fingerprint (through ``pglast``, as
pganalyze does): it ignores literals, ``IN``-list lengths and savepoint names. Other
dialects, and PostgreSQL statements pglast cannot parse, go through a small tokenizer.
Both are cached by statement text: ORM statements are parameterised, so the set of texts
is small; the cache is bounded for code that inlines literals.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import pglast.parser

MAX_TEXT = 1000
"""Longest shape text kept (CONTRACT.md: at most 1,000 characters)."""

_MAX_INPUT = 20_000
"""Statements longer than this are shaped from their first 20,000 characters."""

# One pass over the statement: each alternative is a token kept or replaced. Quoted
# strings run to the end of the text when unterminated, so a hostile statement cannot
# smuggle a literal out by leaving its quote open. Backslash escapes exist in PostgreSQL's
# E'' strings and in every MySQL string; elsewhere a backslash is an ordinary character.
# PostgreSQL nests block comments (``/* a /* b */ c */`` is one comment): a comment that
# opens another before it closes runs to the end of the text, as an unterminated one does.
# MySQL also starts a comment with ``#``.
_LEXER = r"""
      (?P<comment>/\*(?:(?!/\*|\*/).)*\*/|/\*.*\Z|--[^\n]*{comments})
    | (?P<string>{strings})
    | (?P<dollar>\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`)
    | (?P<unterminated>["`].*\Z)
    | (?P<placeholder>%\(\w+\)s|%s|\$\d+|\?\d*|(?<![:\w]):[A-Za-z_]\w*)
    | (?P<number>(?<![\w$.])(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+
                               |\d[\d_]*\.?[\d_]*(?:[eE][-+]?\d+)?|\.\d[\d_]*(?:[eE][-+]?\d+)?))
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<space>\s+)
"""
_STANDARD_STRINGS = r"[Ee]'(?:[^'\\]|''|\\.)*(?:'|\Z)|(?:[NnBbXxUu]&?)?'(?:[^']|'')*(?:'|\Z)"
_BACKSLASH_STRINGS = r"(?:[NnEeBbXx])?'(?:[^'\\]|''|\\.)*(?:'|\Z)|\"(?:[^\"\\]|\"\"|\\.)*(?:\"|\Z)"
_TOKENS = re.compile(_LEXER.format(strings=_STANDARD_STRINGS, comments=""), re.VERBOSE | re.DOTALL)
# MySQL also quotes strings with double quotes (unless ANSI_QUOTES is on).
_MYSQL_TOKENS = re.compile(_LEXER.format(strings=_BACKSLASH_STRINGS, comments=r"|\#[^\n]*"), re.VERBOSE | re.DOTALL)
_BACKSLASH_SYSTEMS = frozenset({"mysql", "mariadb"})
# "(?, ?, ?)" and "(?), (?)" repeat one shape: collapse them so that IN-lists and multi-row
# VALUES of any length share a key.
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))*")
_PG_PLACEHOLDER = re.compile(r"%\(\w+\)s|%s")


_PLAIN_IDENTIFIER = re.compile(r'"[A-Za-z_][\w$]*"')


def _token(match: re.Match[str]) -> str:
    group = match.lastgroup
    if group in ("comment", "space"):
        return " "
    if group in ("ident", "word"):
        return match.group()
    return "?"


def _sqlite_token(match: re.Match[str]) -> str:
    # SQLite takes a double-quoted token that names no column as a string literal: keep the
    # ones that look like identifiers (as ORMs quote them), replace the rest.
    if match.lastgroup == "ident" and match.group().startswith('"') and not _PLAIN_IDENTIFIER.fullmatch(match.group()):
        return "?"
    return _token(match)


def normalize_sql(statement: str, system: str = "") -> str:
    """Return ``statement`` with literals, placeholders and comments replaced, spaces collapsed.

    >>> normalize_sql("SELECT * FROM t WHERE a = 'x' AND b IN (1, 2, 3) -- note")
    'SELECT * FROM t WHERE a = ? AND b IN (?)'
    """
    tokens = _MYSQL_TOKENS if system in _BACKSLASH_SYSTEMS else _TOKENS
    text = tokens.sub(_sqlite_token if system == "sqlite" else _token, statement[:_MAX_INPUT])
    text = _LIST.sub("(?)", " ".join(text.split()))[:MAX_TEXT]
    return text if text.isascii() else exportable(text)


def exportable(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes, as ``surrogateescape`` keeps them)
    replaced by ``?``: the OTLP encoder drops an attribute it cannot encode as UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


@lru_cache(maxsize=4096)
def sql_shape(statement: str, system: str) -> tuple[str, str]:
    """The shape of one SQL statement as ``(key, text)``; see the module docstring."""
    text = normalize_sql(statement, system)
    if system == "postgresql" and len(statement) <= _MAX_INPUT:
        try:
            # pglast parses PostgreSQL, not the driver's pyformat placeholders.
            return pglast.parser.fingerprint(_PG_PLACEHOLDER.sub("$1", statement)), text
        except (pglast.parser.ParseError, ValueError):
            pass
    return text, text


NO_SHAPE: Final[tuple[str, str]] = ("", "")
"""The shape of a call that repeats by design and must not count as a repeated statement."""
