"""A test suite's statement spans: psycopg's round trips traced by zenmetry alone, without the
instrumentation (``zenmetry.testing``).

Production's psycopg integration wraps the driver's classes and hands each statement and round
trip to a connection's tracer (``integrations.psycopg.trace_psycopg``); in a test suite that
tracer is ``LeanStatements``, whose spans carry what the unit processor reads, through the same
``run_in_span`` production uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind

from zenmetry._names import DB_STATEMENT, DB_SYSTEM
from zenmetry.integrations._dbapi import run_in_span, run_in_span_async, statement_text
from zenmetry.units._processor import UnitProcessor
from zenmetry.units._shapes import round_trip

T = TypeVar("T")
_CLIENT: Final = SpanKind.CLIENT
SCOPE: Final = "opentelemetry.instrumentation.psycopg"


class LeanStatements:
    """A test suite's statement spans (``zenmetry.testing``): the unit processor reads a DB
    span's system, statement, times and parent, and nothing in a test reads the rest (the name,
    ``db.name``, ``db.user``, ``net.peer.*``), so only those are made, with no instrumentation
    loaded. One for every connection: ``tracer_for`` it is, or None outside a unit."""

    def __init__(
        self, tracer_provider: trace.TracerProvider, scope: str, system: str, processor: UnitProcessor
    ) -> None:
        self._tracer = tracer_provider.get_tracer(scope)
        self._system = system
        self._processor = processor

    def __call__(self, connection: Any) -> LeanStatements | None:
        # Outside a recording span nothing is traced (the lean tracer would hand out the API's
        # invalid span): a test's own set-up statements go straight to the driver.
        return self if trace.get_current_span().is_recording() else None

    def execute(self, cursor: Any, method: Callable[..., T], args: Any, kwargs: Any) -> T:
        span = self._start(cursor, args)
        if span is INVALID_SPAN:
            return method(*args, **kwargs)
        return run_in_span(span, method, args, kwargs)

    async def execute_async(self, cursor: Any, method: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        span = self._start(cursor, args)
        if span is INVALID_SPAN:
            return await method(*args, **kwargs)
        return await run_in_span_async(span, method, args, kwargs)

    def _start(self, cursor: Any, args: Any) -> Any:
        statement = args[0] if args else ""  # as the instrumentation: a statement passed by keyword is none
        if statement.__class__ is not str:
            statement = statement_text(cursor, statement)
        return self._tracer.start_span(
            self._system, kind=_CLIENT, attributes={DB_SYSTEM: self._system, DB_STATEMENT: statement}
        )

    def command(self, target: Any, statement: str) -> Any:
        span = self._tracer.start_span(
            self._system, kind=_CLIENT, attributes={DB_SYSTEM: self._system, DB_STATEMENT: statement}
        )
        if span is not INVALID_SPAN:
            self._processor.note_shape(span, round_trip(statement))
        return span


def measure_psycopg(tracer_provider: trace.TracerProvider, processor: UnitProcessor) -> None:
    """Trace psycopg's round trips for ``processor``'s units with ``LeanStatements``."""
    from zenmetry.integrations.psycopg import trace_psycopg

    trace_psycopg(LeanStatements(tracer_provider, SCOPE, "postgresql", processor), processor)
