"""DB spans for the round trips the DB-API instrumentations miss.

Shared by the psycopg and psycopg2 integrations. A tracer here is what ``tracer_for(connection)``
gives: the instrumentation's own cursor tracer (``_statements.StatementTracer``), whose spans
have the name, kind and attributes of the instrumentation's (so the processor, the export guard
and the verdict treat them like any other DB call), or, in a test suite, the lean statements of
``zenmetry.testing`` (the same spans, with what the processor reads).
These round trips (``BEGIN``, ``COMMIT``, ``ROLLBACK``, a cursor's ``FETCH``, ``MOVE`` and
``CLOSE``, psycopg's own savepoints) are the driver's, not statements the application executed:
they count as round trips and DB time, never as queries or a repeated statement
(``_shapes.round_trip``), as a MongoDB ``getMore`` does not. Six transactions are not an N+1,
nor is a large result read in chunks.

Nothing here imports the instrumentation: a test suite that never exports a span does not load it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Final, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, get_current, set_value
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY

T = TypeVar("T")
_CLIENT: Final = SpanKind.CLIENT
_SUPPRESS_INSTRUMENTATION_KEY_PLAIN: Final = "suppress_instrumentation"
"""``opentelemetry.instrumentation.utils``' own key (read here without importing it)."""


class Statements(Protocol):
    """What the integrations ask of a connection's tracer."""

    def execute(self, cursor: Any, method: Callable[..., T], args: Any, kwargs: Any) -> T: ...

    async def execute_async(self, cursor: Any, method: Callable[..., Any], args: Any, kwargs: Any) -> Any: ...

    def command(self, target: Any, statement: str) -> Any: ...


def failed(span: Any, error: Exception) -> None:
    """What ``use_span`` does with an exception that leaves the span's block."""
    if isinstance(span, Span) and span.is_recording():
        span.record_exception(error)
        span.set_status(Status(status_code=StatusCode.ERROR, description=f"{type(error).__name__}: {error}"))


def run_in_span(span: Any, method: Callable[..., T], args: Any, kwargs: Any) -> T:
    """``method(*args, **kwargs)`` with ``span`` current, then ``span`` ended: what
    ``start_as_current_span`` does, without its generator-based context managers."""
    token = attach(set_value(_SPAN_KEY, span))
    try:
        try:
            return method(*args, **kwargs)
        finally:
            detach(token)
    except Exception as error:
        failed(span, error)
        raise
    finally:
        span.end()


async def run_in_span_async(span: Any, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """``run_in_span`` for a coroutine method."""
    token = attach(set_value(_SPAN_KEY, span))
    try:
        try:
            return await method(*args, **kwargs)
        finally:
            detach(token)
    except Exception as error:
        failed(span, error)
        raise
    finally:
        span.end()


def traced_here(scope: str) -> bool:
    """Whether a DB call of ``scope`` starting now is traced on its own: instrumentation is not
    suppressed (``is_instrumentation_enabled``) and the current span is not a DB call of
    ``scope`` (a call made inside one is part of it: an application cursor class calling its
    parent's ``execute``, a cursor class traced by the instrumentation and by zenmetry).

    One read of the current context for both, and the SDK span's fields rather than its
    properties: this runs before every statement.
    """
    context = get_current()
    if context.get(_SUPPRESS_INSTRUMENTATION_KEY) or context.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN):
        return False
    span = context.get(_SPAN_KEY)
    if getattr(span, "_kind", None) is not _CLIENT:
        return True
    return getattr(getattr(span, "_instrumentation_scope", None), "name", None) != scope


def statement_text(cursor: Any, statement: Any) -> str:
    """A statement that is not a ``str``, as the instrumentation's ``get_statement`` reads it."""
    try:
        if isinstance(statement, bytes):
            return statement.decode("utf8", "replace")
        if hasattr(statement, "as_string"):  # psycopg's sql.Composable
            return str(statement.as_string(cursor))
        # Anything else (a template string, Python 3.14): the instrumentation's own reading.
        from opentelemetry.instrumentation.dbapi import CursorTracer

        return str(CursorTracer.get_statement(None, cursor, (statement,)))  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - the driver raises its own error for it, as it would untraced
        return ""


def call_in_span(tracer: Statements, target: Any, statement: str, call: Callable[[], T]) -> T:
    """``call()``, one round trip, inside a DB span (current while it runs, so that what the
    call itself goes through is not counted again)."""
    with trace.use_span(tracer.command(target, statement), end_on_exit=True):
        return call()


def spanned(
    tracer: Statements, target: Any, statement: str, generator: Generator[Any, Any, T]
) -> Generator[Any, Any, T]:
    """``generator`` (psycopg's generator of one round trip) inside a DB span of its own.

    The span is not made current: nothing runs inside it but the driver waiting on its
    socket, and an asyncio task may be suspended in the middle of it.
    """
    span = tracer.command(target, statement)
    try:
        return (yield from generator)
    except Exception as error:
        failed(span, error)  # as start_as_current_span does for the instrumentation's own spans
        raise
    finally:
        span.end()
