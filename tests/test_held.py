"""Held spans: a unit's DB spans made without the SDK's per-attribute work while their export
waits for the unit's verdict, and exported exactly as the SDK would have made them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from support.wiring import wired
from zenmetry.config._settings import Settings
from zenmetry.export._held_spans import HeldSpan, HoldingTracer, holding
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.units._processor import UnitProcessor

OK = {"http.request.method": "GET", "http.response.status_code": 200}
DB = {"db.system": "postgresql", "db.name": "shop", "net.peer.port": 5432}


@dataclass
class Setup:
    provider: TracerProvider
    processor: UnitProcessor
    exporter: InMemorySpanExporter
    sdk: Tracer  # the SDK's tracer of the DB instrumentation's scope
    held: HoldingTracer  # the same tracer, making held spans

    def query(self, tracer: trace.Tracer, statement: str, fail: bool = False) -> trace.Span:
        """A DB call as the DB-API instrumentation makes it: started current, attributes set after."""
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as span:
            span.set_attributes(DB)
            span.set_attribute("db.statement", statement)
            span.set_attribute("db.tables", ["a", "b"])  # a list: the SDK keeps a tuple
            if fail:
                raise LookupError(statement)
        return span


def _setup(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    limits: SpanLimits | None = None,
    sampler: Sampler | None = None,
) -> Setup:
    exporter = InMemorySpanExporter()
    processor, _ = wired(settings, SimpleSpanProcessor(exporter))
    provider = TracerProvider(sampler=sampler or AlwaysRecordSampler(ParentBased(ALWAYS_ON)), span_limits=limits)
    provider.add_span_processor(processor)
    sdk = provider.get_tracer("opentelemetry.instrumentation.psycopg")
    return Setup(provider, processor, exporter, sdk, holding(sdk, processor))  # type: ignore[arg-type]


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    made = _setup(monkeypatch, Settings(db_spans="detail", db_spans_ratio=0.0))
    yield made
    assert made.processor._gate.held == set()
    made.provider.shutdown()


def _fields(span: ReadableSpan) -> tuple[object, ...]:
    """What the OTLP encoder reads of a span, but its ids and times."""
    return (
        type(span),
        span.name,
        span.kind,
        span.parent.span_id if span.parent else None,
        dict(span.attributes or {}),
        [(event.name, dict(event.attributes or {})) for event in span.events],
        (span.status.status_code, span.status.description),
        span.resource,
        span.instrumentation_scope,
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
        span.links,
    )


class TestHeld:
    def test_a_healthy_units_db_spans_are_held_spans_and_its_figures_exact(self, setup: Setup) -> None:
        tracer = setup.provider.get_tracer("tests")
        with tracer.start_as_current_span("GET /ok", kind=SpanKind.SERVER) as unit:
            made = [setup.query(setup.held, f"SELECT {i} FROM t{i}") for i in range(3)]
            setup.processor.finish(unit, "ok/", OK)
        assert [type(span) for span in made] == [HeldSpan] * 3
        (exported,) = setup.exporter.get_finished_spans()
        assert (exported.name, exported.attributes["zen.db.queries"], exported.attributes["zen.db.spans"]) == (  # type: ignore[index]
            "GET /ok",
            3,
            "summarized",
        )

    def test_an_exported_held_span_is_what_the_sdk_would_have_exported(self, setup: Setup) -> None:
        """The same calls through the SDK's tracer and the holding one, in a unit that fails: one
        that ends normally, one whose statement raises, one with its status set by hand."""
        tracer = setup.provider.get_tracer("tests")
        made: dict[str, list[trace.Span]] = {"sdk": [], "held": []}
        with tracer.start_as_current_span("GET /bad", kind=SpanKind.SERVER) as unit:
            for name, each in (("sdk", setup.sdk), ("held", setup.held)):
                made[name].append(setup.query(each, "SELECT 1 FROM t"))
                with pytest.raises(LookupError):
                    setup.query(each, "SELECT 2 FROM t", fail=True)
                with each.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=DB) as span:
                    span.set_status(Status(StatusCode.ERROR, "by hand"))
                    span.add_event("note", {"n": 1})
                    made[name].append(span)
            setup.processor.finish(unit, "bad/", {**OK, "http.response.status_code": 500})
        assert [type(span).__name__ for span in made["held"]] == ["HeldSpan"] * 2
        exported = [span for span in setup.exporter.get_finished_spans() if span.name == "SELECT"]
        assert len(exported) == 6
        sdk, held = exported[:3], exported[3:]
        assert [_fields(span) for span in held] == [_fields(span) for span in sdk]
        assert {type(span) for span in held} == {ReadableSpan}
        assert dict(held[0].attributes or {})["db.tables"] == ("a", "b")
        assert [event.name for event in held[1].events] == ["exception"]
        assert held[1].events[0].attributes["exception.type"] == "LookupError"  # type: ignore[index]
        # No export guard here: the status as use_span wrote it.
        assert (held[1].status.status_code, held[1].status.description) == (
            StatusCode.ERROR,
            "LookupError: SELECT 2 FROM t",
        )

    def test_after_its_end_a_held_span_takes_no_attribute_event_or_second_end(
        self, setup: Setup, caplog: pytest.LogCaptureFixture
    ) -> None:
        tracer = setup.provider.get_tracer("tests")
        with tracer.start_as_current_span("GET /ok", kind=SpanKind.SERVER) as unit:
            span = setup.query(setup.held, "SELECT 1")
            span.set_attribute("late", 1)
            span.add_event("late")
            span.end()
            setup.processor.finish(unit, "ok/", OK)
        assert "late" not in (span.attributes or {})  # type: ignore[attr-defined]
        assert span.events == ()  # type: ignore[attr-defined]
        assert [record.getMessage() for record in caplog.records] == [
            "Setting attribute on ended span.",
            "Tried calling _add_event on an ended span.",
            "Calling end() on an ended span.",
        ]

    @pytest.mark.parametrize(
        "where",
        ["outside a unit", "all", "another processor", "a value length limit", "a count limit", "not a DB call"],
    )
    def test_elsewhere_the_sdk_makes_its_own_span(self, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
        settings = Settings(db_spans="all" if where == "all" else "detail", db_spans_ratio=0.0)
        limits = {
            "a value length limit": SpanLimits(max_span_attribute_length=10),
            "a count limit": SpanLimits(max_span_attributes=5),
        }
        made = _setup(monkeypatch, settings, limits.get(where))
        if where == "another processor":
            made.provider.add_span_processor(SpanProcessor())
        if where == "outside a unit":
            span = made.query(made.held, "SELECT 1")
        else:
            with made.provider.get_tracer("tests").start_as_current_span("GET /", kind=SpanKind.SERVER) as unit:
                if where == "not a DB call":
                    with made.held.start_as_current_span("work") as span:
                        pass
                else:
                    span = made.query(made.held, "SELECT 1")
                made.processor.finish(unit, "/", OK)
        assert type(span).__name__ == "_Span"
        made.provider.shutdown()

    def test_a_tracer_not_the_sdks_is_left_as_it_is(self) -> None:
        tracer = trace.NoOpTracer()
        assert holding(tracer, UnitProcessor()) is tracer

    def test_with_no_count_limit_the_spans_are_held(self, monkeypatch: pytest.MonkeyPatch) -> None:
        made = _setup(
            monkeypatch,
            Settings(db_spans="detail", db_spans_ratio=0.0),
            SpanLimits(max_span_attributes=SpanLimits.UNSET),
        )
        assert made.sdk._span_limits.max_span_attributes is None  # what the SDK keeps for no limit
        with made.provider.get_tracer("tests").start_as_current_span("GET /", kind=SpanKind.SERVER) as unit:
            span = made.query(made.held, "SELECT 1")
            made.processor.finish(unit, "/", OK)
        assert type(span) is HeldSpan
        made.provider.shutdown()

    def test_a_sampler_that_drops_the_span_is_asked_once_and_gets_no_recording_span(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only a sampler other than zenmetry's always-record one can drop a span it records."""
        asked: list[str] = []

        class Dropping(ParentBased):
            def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
                result = super().should_sample(*args, **kwargs)  # type: ignore[arg-type]
                if args[2] != "SELECT":
                    return result
                asked.append(str(args[2]))
                return SamplingResult(Decision.DROP)

        made = _setup(monkeypatch, Settings(db_spans="detail", db_spans_ratio=0.0))
        made.sdk.sampler = Dropping(ALWAYS_ON)  # shared with the holding tracer
        with made.provider.get_tracer("tests").start_as_current_span("GET /", kind=SpanKind.SERVER) as unit:
            span = made.query(made.held, "SELECT 1")
            made.processor.finish(unit, "/", OK)
        assert (type(span), span.is_recording(), asked) == (trace.NonRecordingSpan, False, ["SELECT"])
        made.provider.shutdown()

    @pytest.mark.parametrize("flags", [TraceFlags.SAMPLED, TraceFlags.DEFAULT], ids=["sampled", "not sampled"])
    @pytest.mark.parametrize("root", ["always on", "ratio 0"])
    def test_zenmetrys_sampler_decides_a_held_span_as_the_sdks_span(
        self, monkeypatch: pytest.MonkeyPatch, flags: int, root: str
    ) -> None:
        """Under the always-record ParentBased sampler a held span is not asked for: it takes its
        unit's flag and trace state, recorded either way, as the SDK's span gets them by asking."""
        ratio = ALWAYS_ON if root == "always on" else TraceIdRatioBased(0)
        made = _setup(
            monkeypatch,
            Settings(db_spans="detail", db_spans_ratio=0.0),
            sampler=AlwaysRecordSampler(ParentBased(ratio)),
        )
        remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(flags), TraceState([("vendor", "value")]))
        context = set_span_in_context(NonRecordingSpan(remote))
        with made.provider.get_tracer("tests").start_as_current_span("GET /", context, SpanKind.SERVER) as unit:
            held, sdk = made.query(made.held, "SELECT 1"), made.query(made.sdk, "SELECT 1")
            made.processor.finish(unit, "/", OK)
        assert type(held) is HeldSpan
        found = [
            (
                span.get_span_context().trace_flags,
                dict(span.get_span_context().trace_state),
                span.get_span_context().trace_id,
            )
            for span in (held, sdk)
        ]
        assert found == [(TraceFlags(flags), {"vendor": "value"}, 0xABC)] * 2
        made.provider.shutdown()
