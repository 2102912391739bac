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

The fingerprint is libpg_query's own ``pg_query_fingerprint``, the C function ``pglast.parser.fingerprint``
calls, reached with ctypes in the extension pglast ships: importing pglast builds its
Python enums and AST classes, about 180 M instructions (70 ms) at every start of a process and
of a test run, for one function (measured: loading the extension alone costs 3 M). The call is
checked once against a known fingerprint; where it cannot be made or the check fails (another
libpg_query layout), pglast's own function is used.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Final

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


class _Error(ctypes.Structure):
    _fields_ = (("message", ctypes.c_char_p), ("funcname", ctypes.c_char_p), ("filename", ctypes.c_char_p),
                ("lineno", ctypes.c_int), ("cursorpos", ctypes.c_int), ("context", ctypes.c_char_p))  # fmt: skip


class _Fingerprint(ctypes.Structure):
    """libpg_query's ``PgQueryFingerprintResult`` (pg_query.h, since its 13-2.0.0 release)."""

    _fields_ = (("fingerprint", ctypes.c_uint64), ("fingerprint_str", ctypes.c_char_p),
                ("stderr_buffer", ctypes.c_char_p), ("error", ctypes.POINTER(_Error)))  # fmt: skip


_RELEASES: Final = frozenset({"7", "8"})
"""pglast's major releases whose extension holds libpg_query 17 (``PgQueryFingerprintResult`` as above)."""
_KNOWN: Final = ("SELECT 1", "50fde20626009aba")
"""A statement and its fingerprint by libpg_query 17 (pglast 7 and 8), to check the call."""


def _libpg_query() -> Callable[[str], str | None] | None:
    """``pg_query_fingerprint`` from pglast's extension, without importing pglast; None if it
    cannot be found or does not give the known fingerprint."""
    try:
        # The result's layout is read before it can be checked: only the releases it was read from.
        if importlib.metadata.version("pglast").split(".")[0] not in _RELEASES:
            return None
        spec = importlib.util.find_spec("pglast")
        folders = spec.submodule_search_locations if spec is not None else None
        found = [
            path
            for folder in folders or ()
            for suffix in importlib.machinery.EXTENSION_SUFFIXES
            if (path := Path(folder, f"parser{suffix}")).is_file()
        ]
        if not found:
            return None
        library = ctypes.CDLL(str(found[0]))
        call, free = library.pg_query_fingerprint, library.pg_query_free_fingerprint_result
    except (OSError, AttributeError, ImportError, ValueError, importlib.metadata.PackageNotFoundError):
        return None
    call.argtypes, call.restype = (ctypes.c_char_p,), _Fingerprint
    free.argtypes, free.restype = (_Fingerprint,), None

    def fingerprint(statement: str) -> str | None:
        """The statement's fingerprint, or None when libpg_query cannot parse it."""
        result = call(statement.encode("utf-8"))
        try:
            if result.error or not result.fingerprint_str:
                return None
            return str(result.fingerprint_str, "ascii")
        finally:
            free(result)

    return fingerprint if fingerprint(_KNOWN[0]) == _KNOWN[1] else None


def _pglast() -> Callable[[str], str | None]:
    import pglast.parser

    def fingerprint(statement: str) -> str | None:
        try:
            found: str = pglast.parser.fingerprint(statement)
            return found
        except pglast.parser.ParseError:
            return None

    return fingerprint


_fingerprint: Callable[[str], str | None] | None = None


def fingerprint(statement: str) -> str | None:
    """libpg_query's fingerprint of a PostgreSQL statement, or None when it cannot parse it."""
    global _fingerprint  # noqa: PLW0603 - found at the first PostgreSQL statement, not at import
    if _fingerprint is None:
        _fingerprint = _libpg_query() or _pglast()
    return _fingerprint(statement)


@lru_cache(maxsize=4096)
def sql_shape(statement: str, system: str) -> tuple[str, str]:
    """The shape of one SQL statement as ``(key, text)``; see the module docstring."""
    text = normalize_sql(statement, system)
    if system == "postgresql" and len(statement) <= _MAX_INPUT:
        try:
            # libpg_query parses PostgreSQL, not the driver's pyformat placeholders.
            key = fingerprint(_PG_PLACEHOLDER.sub("$1", statement))
        except ValueError:  # a lone surrogate, as pglast
            key = None
        if key is not None:
            return key, text
    return text, text


ROUND_TRIP: Final = sys.intern("\x00round trip")
"""The key of a round trip's shape (``round_trip``), told by identity (``shape[0] is ROUND_TRIP``):
no statement's key is this object, whatever its text."""


def round_trip(command: str) -> tuple[str, str]:
    """The shape of one of the driver's own exchanges with the server, not a statement the
    application executed: a transaction's ``BEGIN``, ``COMMIT``, ``ROLLBACK``, a server-side
    cursor's ``FETCH``, ``MOVE`` and ``CLOSE``, a MongoDB ``getMore``. It counts as a round trip,
    never as a query, and never as a repeated statement (six transactions are not an N+1, nor
    is a large result read in chunks); its text is its command's first word, which names it
    without any name or literal the command carries (a cursor's, a savepoint's, a two-phase id).

    >>> round_trip('FETCH FORWARD 2000 FROM "_django_curs_1_sync_1"')[1]
    'FETCH'
    """
    words = command.split(None, 1)
    word = words[0] if words else ""
    return ROUND_TRIP, word.upper() if word.isalpha() else "(round trip)"
