"""A statement's DB span made by zenmetry's ``StatementTracer.execute`` (_statements) is the span the
instrumentation's own ``traced_execution`` makes, whether it is held for its unit's verdict or
is the SDK's. Real PostgreSQL through psycopg 3, the real instrumentation and SDK."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from opentelemetry.instrumentation._semconv import (
    _OpenTelemetrySemanticConventionStability,
    _OpenTelemetryStabilitySignalType,
    _StabilityMode,
)
from opentelemetry.instrumentation.dbapi import DatabaseApiIntegration
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.psycopg.version import __version__
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, get_current_span
from psycopg import sql

from support.wiring import wired
from zenmetry.config._settings import Settings
from zenmetry.export._held_spans import holding
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.integrations._statements import StatementTracer
from zenmetry.integrations.psycopg import SCOPE, upstream
from zenmetry.testing._lean_spans import LeanTracerProvider
from zenmetry.testing._statements import LeanStatements
from zenmetry.units._figures import FinishedUnit
from zenmetry.units._processor import UnitProcessor
from zenmetry.units._shapes import sql_shape

_Tracer = upstream().tracer

TRACEPARENT = re.compile(r"traceparent='[^']*'")
FAILED = {"http.request.method": "GET", "http.response.status_code": 500}
"""A unit that ended in error: its DB spans are exported, held ones included."""

# The cursor methods themselves, not zenmetry's class-level wrappers of them (when another test
# of this process loaded the instrumentation): each test makes its spans itself.
EXECUTE = getattr(psycopg.Cursor.execute, "__wrapped__", psycopg.Cursor.execute)
EXECUTE_ASYNC = getattr(psycopg.AsyncCursor.execute, "__wrapped__", psycopg.AsyncCursor.execute)

STATEMENTS: dict[str, Any] = {
    "a statement with a parameter": ('SELECT %s::int AS "n"', [1]),
    "a composed statement": (sql.SQL("SELECT {}::int").format(sql.Literal(2)),),
    "bytes": (b"SELECT 3",),
    "a leading comment": ("/* note */ SELECT 4",),
    "a failing statement": ("SELECT 1 / 0",),
}


@dataclass
class Made:
    provider: TracerProvider
    processor: UnitProcessor
    exporter: InMemorySpanExporter
    held: bool
    """Whether zenmetry's processor is the provider's only one: DB spans in a unit are held."""

    def tracer(self, connection: Any, **options: Any) -> StatementTracer:
        """The cursor tracer zenmetry makes for ``connection`` (``Tracers``), on this provider."""
        integration = DatabaseApiIntegration(
            SCOPE,
            PsycopgInstrumentor._DATABASE_SYSTEM,
            connection_attributes=PsycopgInstrumentor._CONNECTION_ATTRIBUTES,
            version=__version__,
            connect_module=psycopg,
            tracer_provider=self.provider,
            **options,
        )
        integration._tracer = holding(integration._tracer, self.processor)
        integration.get_connection_attributes(connection)
        return _Tracer(integration)

    def in_failed_unit(self, run: Callable[[], None]) -> list[ReadableSpan]:
        """The DB spans ``run`` makes in a unit that ends in error (so they are exported)."""
        with self.provider.get_tracer("tests").start_as_current_span("GET /", kind=SpanKind.SERVER) as unit:
            run()
            self.processor.finish(unit, "/", FAILED)
        return [span for span in self.exporter.get_finished_spans() if span.kind is SpanKind.CLIENT]


@pytest.fixture(params=["held", "the SDK's"])
def made(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Made]:
    """A provider whose one processor is zenmetry's (held spans) or with another one beside it
    (the SDK's spans)."""
    exporter = InMemorySpanExporter()
    processor, gate = wired(Settings(db_spans="detail", db_spans_ratio=0.0), SimpleSpanProcessor(exporter))
    provider = TracerProvider(sampler=AlwaysRecordSampler(ParentBased(ALWAYS_ON)))
    provider.add_span_processor(processor)
    if request.param != "held":
        provider.add_span_processor(SpanProcessor())
    yield Made(provider, processor, exporter, held=request.param == "held")
    assert gate.held == set()
    provider.shutdown()


@pytest.fixture
def connection(postgres_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=postgres_db, autocommit=True) as opened:
        yield opened


def _fields(span: ReadableSpan) -> tuple[object, ...]:
    """What the OTLP encoder reads of a span but its ids, times and the stack trace of an
    exception event (whose frames are those of the two paths)."""
    return (
        span.name,
        span.kind,
        # In order, as the encoder writes them; a sqlcomment's traceparent names the span itself.
        [(key, TRACEPARENT.sub("traceparent=?", str(value))) for key, value in (span.attributes or {}).items()],
        [
            (event.name, {k: v for k, v in (event.attributes or {}).items() if k != "exception.stacktrace"})
            for event in span.events
        ],
        (span.status.status_code, span.status.description),
        span.instrumentation_scope,
        span.parent.span_id if span.parent else None,
    )


def _both(tracer: StatementTracer, cursor: Any, args: tuple[Any, ...]) -> None:
    """The statement through the instrumentation's path, then through zenmetry's."""
    method = EXECUTE.__get__(cursor)
    for run in (
        lambda: tracer.traced_execution(cursor, method, *args),
        lambda: tracer.execute(cursor, method, args, {}),
    ):
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            run()


class TestStatementTracer:
    @pytest.mark.parametrize("statement", list(STATEMENTS))
    def test_a_statements_span_is_the_one_the_instrumentation_makes(
        self, made: Made, connection: psycopg.Connection[Any], statement: str
    ) -> None:
        tracer = made.tracer(connection)
        with connection.cursor() as cursor:
            spans = made.in_failed_unit(lambda: _both(tracer, cursor, STATEMENTS[statement]))
        upstream, zenmetry = spans
        assert _fields(zenmetry) == _fields(upstream)
        assert [key for key, _ in _fields(zenmetry)[2]] == [  # type: ignore[union-attr]
            "db.system",
            "db.name",
            "db.statement",
            "db.user",
            "net.peer.name",
            "net.peer.port",
            "zen.unit.kept",  # both held for their unit, which failed
        ]

    def test_a_failing_statements_span_has_the_exception_and_the_error_status(
        self, made: Made, connection: psycopg.Connection[Any]
    ) -> None:
        tracer = made.tracer(connection)

        def fail(cursor: Any) -> None:
            with pytest.raises(psycopg.errors.DivisionByZero):
                tracer.execute(cursor, EXECUTE.__get__(cursor), ("SELECT 1 / 0",), {})

        with connection.cursor() as cursor:
            (span,) = made.in_failed_unit(lambda: fail(cursor))
        assert [event.name for event in span.events] == ["exception"]
        assert span.events[0].attributes["exception.type"] == "psycopg.errors.DivisionByZero"  # type: ignore[index]
        assert (span.status.status_code.name, span.status.description) == ("ERROR", "DivisionByZero: division by zero")

    def test_an_async_statements_span_is_the_one_the_instrumentation_makes(
        self, made: Made, connection: psycopg.Connection[Any], postgres_db: str
    ) -> None:
        tracer = made.tracer(connection)

        async def run() -> None:
            async with await psycopg.AsyncConnection.connect(
                host="127.0.0.1", user="postgres", dbname=postgres_db, autocommit=True
            ) as opened:
                cursor = opened.cursor()
                method = EXECUTE_ASYNC.__get__(cursor)
                await tracer.traced_execution_async(cursor, method, "SELECT %s::int", [5])
                await tracer.execute_async(cursor, method, ("SELECT %s::int", [5]), {})

        upstream, zenmetry = made.in_failed_unit(lambda: asyncio.run(run()))
        assert _fields(zenmetry) == _fields(upstream)
        assert _fields(zenmetry)[0] == "SELECT"

    def test_in_a_unit_the_span_is_held_where_zenmetrys_processor_is_alone(
        self, made: Made, connection: psycopg.Connection[Any]
    ) -> None:
        tracer = made.tracer(connection)
        started: list[Any] = []
        with connection.cursor() as cursor:
            method = EXECUTE.__get__(cursor)

            def run() -> None:
                tracer.execute(
                    cursor, lambda *args: started.append(get_current_span()) or method(*args), ("SELECT 1",), {}
                )

            made.in_failed_unit(run)
        assert type(started[0]).__name__ == ("HeldSpan" if made.held else "_Span")

    @pytest.mark.parametrize(
        "options",
        [
            {"enable_commenter": True},
            {"enable_commenter": True, "enable_attribute_commenter": True},
            {"capture_parameters": True},
            {"database mode": True},
        ],
        ids=["sqlcommenter", "sqlcommenter in the attribute", "captured parameters", "database semconv"],
    )
    def test_where_the_instrumentation_does_more_its_own_path_runs(
        self,
        made: Made,
        connection: psycopg.Connection[Any],
        options: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        options = dict(options)
        if options.pop("database mode", None):
            # As OTEL_SEMCONV_STABILITY_OPT_IN=database sets it (read once per process).
            _OpenTelemetrySemanticConventionStability._initialize()
            monkeypatch.setitem(
                _OpenTelemetrySemanticConventionStability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING,
                _OpenTelemetryStabilitySignalType.DATABASE,
                _StabilityMode.DATABASE,
            )
        tracer = made.tracer(connection, **options)
        assert tracer._lean is None
        with connection.cursor() as cursor:
            upstream, zenmetry = made.in_failed_unit(lambda: _both(tracer, cursor, ('SELECT %s::int AS "n"', [1])))
        assert _fields(zenmetry) == _fields(upstream)


class TestLeanStatements:
    """The test suite's statement spans (``zenmetry.testing``): what the unit processor reads of
    them is what it reads of the instrumentation's, on real PostgreSQL."""

    @pytest.fixture
    def lean(self, monkeypatch: pytest.MonkeyPatch) -> tuple[LeanTracerProvider, UnitProcessor]:
        processor = UnitProcessor(keep_statements=True)
        provider = LeanTracerProvider()
        provider.add_span_processor(processor)
        return provider, processor

    def _unit(self, provider: LeanTracerProvider, processor: UnitProcessor, run: Callable[[], object]) -> FinishedUnit:
        finished: list[FinishedUnit] = []
        processor.listeners.append(lambda unit, span: finished.append(unit))
        with provider.get_tracer("tests").start_as_current_span("GET /", kind=SpanKind.SERVER) as unit:
            run()
            processor.finish(unit, "/", {})
        (found,) = finished
        return found

    def test_the_statements_are_the_instrumentations(
        self, made: Made, lean: tuple[LeanTracerProvider, UnitProcessor], connection: psycopg.Connection[Any]
    ) -> None:
        provider, processor = lean
        statements = LeanStatements(provider, SCOPE, "postgresql", processor)
        upstream_tracer = made.tracer(connection)
        cursor = connection.cursor()
        method = EXECUTE.__get__(cursor)

        def run() -> None:
            for args in STATEMENTS.values():
                with contextlib.suppress(psycopg.errors.DivisionByZero):
                    statements.execute(cursor, method, args, {})
            statements.execute(cursor, method, (), {"query": "SELECT 5"})  # by keyword: no statement, as upstream

        unit = self._unit(provider, processor, run)
        expected = [upstream_tracer.get_statement(cursor, args) for args in STATEMENTS.values()]
        assert [s.text for s in unit.figures.statements or ()] == [
            sql_shape(text, "postgresql")[1] for text in expected
        ] + [""]
        assert expected[1] == "SELECT 2::int"  # the composed statement, as its text
        assert unit.figures.queries == len(STATEMENTS) + 1

    def test_async_statements_and_commands(
        self, lean: tuple[LeanTracerProvider, UnitProcessor], postgres_db: str
    ) -> None:
        provider, processor = lean
        statements = LeanStatements(provider, SCOPE, "postgresql", processor)

        async def work() -> None:
            async with await psycopg.AsyncConnection.connect(
                host="127.0.0.1", user="postgres", dbname=postgres_db, autocommit=True
            ) as connection:
                cursor = connection.cursor()
                await statements.execute_async(cursor, EXECUTE_ASYNC.__get__(cursor), ("SELECT 1",), {})
                with pytest.raises(psycopg.errors.DivisionByZero):
                    await statements.execute_async(cursor, EXECUTE_ASYNC.__get__(cursor), ("SELECT 1 / 0",), {})
                span = statements.command(connection, "COMMIT")
                span.end()

        unit = self._unit(provider, processor, lambda: asyncio.run(work()))
        assert [(s.system, s.text, s.query) for s in unit.figures.statements or ()] == [
            ("postgresql", "SELECT ?", True),
            ("postgresql", "SELECT ? / ?", True),
            ("postgresql", "COMMIT", False),  # a round trip of the driver's own, named by its command
        ]

    def test_outside_a_unit_nothing_is_traced(self, lean: tuple[LeanTracerProvider, UnitProcessor]) -> None:
        provider, processor = lean
        assert LeanStatements(provider, SCOPE, "postgresql", processor)(object()) is None
