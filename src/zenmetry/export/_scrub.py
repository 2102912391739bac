"""The export guard: no literal from a statement, no query-string value and no error message
leaves the process.

The instrumentations put the statement text on DB spans (``db.statement``/``db.query.text``;
ORM statements are parameterised, raw SQL may hold literals), the URL with its query string on
HTTP spans, and the exception's message in the span status and the ``exception`` event (a
database error's message quotes the offending values: ``Key (email)=(alice@example.com)``).
Every exporter zenmetry sets up is wrapped so that, in the exporting thread (never on the
request path), statements are replaced by their literal-free form, query values by ``?``, and
error messages by the exception's type; stack traces keep their frames and lose the messages.
Spans without any of these pass through untouched.

The DB spans of a unit are the exception: the unit processor shapes each statement as the span
ends, so it replaces the statement there (``scrub_statement``), on the ``ReadableSpan`` the SDK made
for the span processors, before any exporting processor gets it. The export then has nothing to
find again and no copy to make (a DB span's copy and second look-up cost about a fifth of what
zenmetry adds to it). Processors added after zenmetry's see the same literal-free statement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from zenmetry import _names
from zenmetry.units._shapes import sql_shape
from zenmetry.units._spans import plain_attributes

_STATEMENTS: Final = (_names.DB_STATEMENT, _names.DB_QUERY_TEXT)
_URLS: Final = ("http.url", "http.target", "url.full")
_QUERY: Final = "url.query"
_EXCEPTION: Final = "exception"
_EXCEPTION_TYPE: Final = "exception.type"
_EXCEPTION_MESSAGE: Final = "exception.message"
_EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
_FRAME_LINES: Final = ("Traceback (most recent call last):", "  ")
_CHAIN_LINES: Final = (
    "",
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_QUALIFIED_NAME: Final = re.compile(r"[A-Za-z_][\w.]*")


class Scrubbed(dict[str, Any]):
    """A span's attributes whose statements are already literal-free (``scrub_statement``)."""


def scrub_statement(span: ReadableSpan, attributes: Mapping[str, Any], statement: object, text: str) -> None:
    """Replace ``span``'s statement ``statement`` by ``text``, its literal-free shape, on the
    span the SDK made for the span processors (the unit processor's, before any exporting
    processor sees it); ``attributes`` are the span's, as ``plain_attributes`` reads them. Left
    to the export guard when an attribute was dropped (a plain dict cannot keep the count) or a
    second statement attribute differs."""
    if getattr(span._attributes, "dropped", 0):  # noqa: SLF001
        return
    clean = Scrubbed(attributes)
    for key in _STATEMENTS:
        value = clean.get(key)
        if value is not None:
            if value != statement:
                return
            clean[key] = text
    span._attributes = clean  # noqa: SLF001


class ScrubbingExporter(SpanExporter):
    """Wraps an exporter; see the module docstring."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        scrubbed = [scrub(span) for span in spans]
        try:
            return self.exporter.export(scrubbed)
        finally:
            # A failed export's exception can keep this frame alive until a full garbage
            # collection (see _exit.CountingSpanExporter): do not let it keep the copies too.
            scrubbed.clear()

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def scrub(span: ReadableSpan) -> ReadableSpan:
    """``span``, or a copy of it with statements and query strings stripped of their values."""
    attributes = plain_attributes(span)
    changed: dict[str, Any] = {}
    for key in _STATEMENTS if attributes.__class__ is not Scrubbed else ():
        value = attributes.get(key)
        if isinstance(value, bytes):
            # OpenTelemetry keeps bytes attributes as bytes (OTLP bytes_value): scrub the text.
            value = value.decode("utf-8", "replace")
            changed[key] = value
        if isinstance(value, str):
            system = attributes.get(_names.DB_SYSTEM_NAME) or attributes.get(_names.DB_SYSTEM) or ""
            clean = _statement(value, str(system))
            if clean != value or key in changed:
                changed[key] = clean
    for key in _URLS:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            changed[key] = strip_query(value)
    query = attributes.get(_QUERY)
    if isinstance(query, str) and query:
        changed[_QUERY] = strip_query("?" + query)[1:]
    status = span.status
    description = status.description
    events = span.events
    failed = status.status_code is StatusCode.ERROR or any(event.name == _EXCEPTION for event in events)
    if not changed and not failed:
        return span
    if description:
        # Instrumentations write "Type: message" or the bare message (Celery): keep only the
        # type of the exception recorded on the span, when there is one.
        types = [str(e.attributes.get(_EXCEPTION_TYPE)) for e in events if e.name == _EXCEPTION and e.attributes]
        status = Status(status.status_code, types[-1] if types else None)
    if failed:
        events = tuple(_scrub_event(event) if event.name == _EXCEPTION else event for event in events)
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes={**attributes, **changed} if changed else attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _scrub_event(event: Event) -> Event:
    attributes = dict(event.attributes or {})
    kind = str(attributes.get(_EXCEPTION_TYPE, "Exception"))
    if _EXCEPTION_MESSAGE in attributes:
        attributes[_EXCEPTION_MESSAGE] = kind
    stacktrace = attributes.get(_EXCEPTION_STACKTRACE)
    if isinstance(stacktrace, str):
        attributes[_EXCEPTION_STACKTRACE] = strip_messages(stacktrace)
    return Event(event.name, attributes, event.timestamp)


def strip_messages(stacktrace: str) -> str:
    """A formatted traceback with its frames kept and every exception message dropped.

    ``ExcType: message`` lines become ``ExcType``; continuation lines of a message go.
    """
    kept = []
    for line in stacktrace.splitlines():
        if line.startswith(_FRAME_LINES) or line in _CHAIN_LINES:
            kept.append(line)
        elif kept and kept[-1].startswith(_FRAME_LINES):
            name = line.split(":", 1)[0].strip()  # "ExcType: message" -> "ExcType"
            if _QUALIFIED_NAME.fullmatch(name):
                kept.append(name)
    return "\n".join(kept)


def _statement(statement: str, system: str) -> str:
    # A shape's text is the statement without its literals: the processor shaped every DB call
    # of a unit already, so the export finds it in the shapes' cache instead of a second one.
    return sql_shape(statement, system)[1]


def strip_query(url: str) -> str:
    """``/orders/?page=2&token=abc`` -> ``/orders/?page=?&token=?`` (names kept, values gone)."""
    base, _, rest = url.partition("?")
    query, hash_mark, _fragment = rest.partition("#")
    names = [part.split("=", 1)[0] for part in query.split("&") if part]
    return base + "?" + "&".join(f"{name}=?" for name in names) + hash_mark
