"""The export guard: no literal from a statement and no query-string value leaves the process.

The instrumentations put the statement text on DB spans (``db.statement``/``db.query.text``;
ORM statements are parameterised, raw SQL may hold literals) and the URL with its query string
on HTTP spans. Every exporter zenmetry sets up is wrapped so that, in the exporting thread
(never on the request path), statements are replaced by their literal-free form and query
values by ``?``. Spans without such attributes pass through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from zenmetry import _names
from zenmetry._fingerprint import normalize_sql

_STATEMENTS: Final = (_names.DB_STATEMENT, _names.DB_QUERY_TEXT)
_URLS: Final = ("http.url", "http.target", "url.full")
_QUERY: Final = "url.query"


class ScrubbingExporter(SpanExporter):
    """Wraps an exporter; see the module docstring."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([scrub(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def scrub(span: ReadableSpan) -> ReadableSpan:
    """``span``, or a copy of it with statements and query strings stripped of their values."""
    attributes = plain_attributes(span)
    changed: dict[str, Any] = {}
    for key in _STATEMENTS:
        value = attributes.get(key)
        if isinstance(value, str):
            system = attributes.get(_names.DB_SYSTEM_NAME) or attributes.get(_names.DB_SYSTEM) or ""
            clean = _statement(value, str(system))
            if clean != value:
                changed[key] = clean
    for key in _URLS:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            changed[key] = strip_query(value)
    query = attributes.get(_QUERY)
    if isinstance(query, str) and query:
        changed[_QUERY] = strip_query("?" + query)[1:]
    if not changed:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**attributes, **changed},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as the plain dict behind them.

    ``ReadableSpan.attributes`` is a read-only proxy over the SDK's ``BoundedAttributes``,
    whose ``get()`` raises and catches ``KeyError`` on every miss (about 1 us each); the dict
    behind it answers in nanoseconds. Falls back to the public view if that ever changes.
    """
    attributes = getattr(getattr(span, "_attributes", None), "_dict", None)
    return attributes if isinstance(attributes, dict) else dict(span.attributes or {})


@lru_cache(maxsize=4096)
def _statement(statement: str, system: str) -> str:
    return normalize_sql(statement, system)


def strip_query(url: str) -> str:
    """``/orders/?page=2&token=abc`` -> ``/orders/?page=?&token=?`` (names kept, values gone)."""
    base, _, rest = url.partition("?")
    query, hash_mark, _fragment = rest.partition("#")
    names = [part.split("=", 1)[0] for part in query.split("&") if part]
    return base + "?" + "&".join(f"{name}=?" for name in names) + hash_mark
