"""A parser for the OTTL conditions the collector configurations use: the grammar of OTTL's
boolean expressions (pkg/ottl/LANGUAGE.md at the pinned contrib version: ``or``, ``and``,
``not``, parentheses, comparisons of paths, literals and enums), and the paths each context
offers (pkg/ottl/contexts/ottlspan and ottlspanevent READMEs).

What it proves: each condition is well formed, compares two values with a comparison operator
OTTL has, and reads only paths its context has. What only a real collector proves: the types
OTTL infers at run time (a comparison of mismatched types is false, not an error), converter
functions (none is used here), and the component's own handling of a condition it cannot run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# The first segment of a path, per context (the fields each context's README lists).
PATHS: Final = {
    "span": {
        "attributes",
        "name",
        "kind",
        "status",
        "trace_id",
        "span_id",
        "parent_span_id",
        "trace_state",
        "start_time_unix_nano",
        "end_time_unix_nano",
        "start_time",
        "end_time",
        "dropped_attributes_count",
        "events",
        "dropped_events_count",
        "links",
        "dropped_links_count",
        "resource",
        "instrumentation_scope",
        "cache",
    },
    "spanevent": {
        "attributes",
        "name",
        "time_unix_nano",
        "time",
        "dropped_attributes_count",
        "span",
        "resource",
        "instrumentation_scope",
        "cache",
        "event_index",
    },
}
# Fields under a first segment that has them.
SUBPATHS: Final = {"status": {"code", "message"}, "kind": {"string", "deprecated_string"}}
ENUMS: Final = {
    *(f"STATUS_CODE_{name}" for name in ("UNSET", "OK", "ERROR")),
    *(f"SPAN_KIND_{name}" for name in ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")),
}
_TOKEN: Final = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op>==|!=|<=|>=|<|>)
    | (?P<punct>[()\[\].])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class OttlError(ValueError):
    pass


@dataclass
class _Tokens:
    items: list[tuple[str, str]]
    at: int = 0

    def peek(self) -> tuple[str, str]:
        return self.items[self.at] if self.at < len(self.items) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.at += 1
        return token


def tokens(text: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while at < len(text.rstrip()):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise OttlError(f"{text!r}: unexpected {text[at:].strip()[:10]!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        at = match.end()
    return found


def check(condition: str, context: str) -> None:
    """Raise ``OttlError`` unless ``condition`` is an OTTL condition over ``context``'s paths."""
    stream = _Tokens(tokens(condition))
    _expression(stream, context, condition)
    if stream.peek()[0] != "end":
        raise OttlError(f"{condition!r}: unexpected {stream.peek()[1]!r}")


def _expression(stream: _Tokens, context: str, text: str) -> None:
    _term(stream, context, text)
    while stream.peek() == ("word", "or"):
        stream.take()
        _term(stream, context, text)


def _term(stream: _Tokens, context: str, text: str) -> None:
    _factor(stream, context, text)
    while stream.peek() == ("word", "and"):
        stream.take()
        _factor(stream, context, text)


def _factor(stream: _Tokens, context: str, text: str) -> None:
    if stream.peek() == ("word", "not"):
        stream.take()
        _factor(stream, context, text)
        return
    if stream.peek() == ("punct", "("):
        stream.take()
        _expression(stream, context, text)
        if stream.take() != ("punct", ")"):
            raise OttlError(f"{text!r}: missing ')'")
        return
    _value(stream, context, text)
    kind, op = stream.take()
    if kind != "op":
        raise OttlError(f"{text!r}: expected a comparison, found {op!r}")
    _value(stream, context, text)


def _value(stream: _Tokens, context: str, text: str) -> None:
    kind, value = stream.take()
    if kind in ("string", "number") or value in ("true", "false", "nil"):
        return
    if kind != "word":
        raise OttlError(f"{text!r}: expected a value, found {value!r}")
    if value.isupper():
        if value not in ENUMS:
            raise OttlError(f"{text!r}: unknown enum {value}")
        return
    if value not in PATHS[context]:
        raise OttlError(f"{text!r}: the {context} context has no path {value!r}")
    first = value
    while stream.peek() in (("punct", "."), ("punct", "[")):
        _, punct = stream.take()
        if punct == ".":
            kind, field = stream.take()
            if kind != "word" or (first in SUBPATHS and field not in SUBPATHS[first]):
                raise OttlError(f"{text!r}: {first} has no field {field!r}")
        else:
            kind, _key = stream.take()
            if kind not in ("string", "number") or stream.take() != ("punct", "]"):
                raise OttlError(f"{text!r}: a key is a quoted string in brackets")
