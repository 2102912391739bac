"""The export verdict: a healthy unit's DB spans are summarized by its figures; a unit that
breached, failed or falls in the ratio exports them all; nothing else is ever held back."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from support.external_server import external_server
from support.otlp import Receiver
from support.processes import gunicorn
from support.wiring import wired
from zenmetry.config._budgets import Budgets
from zenmetry.config._settings import Settings
from zenmetry.export._gate import MAX_HELD, in_ratio
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.export._scrub import scrub
from zenmetry.units._processor import CELERY_SCOPE, UnitProcessor

OK = {"http.request.method": "GET", "http.response.status_code": 200}
SUMMARIZED = {"db_spans": "detail", "db_spans_ratio": 0.0}


@dataclass
class Gated:
    """The real SDK with the unit processor and one gated exporter, as the configurator builds them."""

    provider: TracerProvider
    processor: UnitProcessor
    exporter: InMemorySpanExporter

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests")

    def exported(self) -> list[str]:
        return [span.name for span in self.exporter.get_finished_spans()]

    def unit(self, name: str) -> ReadableSpan:
        (found,) = [span for span in self.exporter.get_finished_spans() if span.name == name]
        return found

    def request(self, name: str, queries: int, point: dict[str, str | int] = OK, external: bool = False) -> None:
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER) as span:
            for i in range(queries):
                db(self.tracer, f"SELECT {i} FROM t{i}")
            if external:
                with self.tracer.start_as_current_span(
                    "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
                ):
                    pass
            self.processor.finish(span, name, point)


def db(tracer: trace.Tracer, statement: str) -> None:
    with tracer.start_as_current_span(
        "SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql", "db.statement": statement}
    ):
        pass


@pytest.fixture
def gated() -> Iterator[Gated]:
    exporter = InMemorySpanExporter()
    processor, gate = wired(Settings(**SUMMARIZED), SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
    provider = TracerProvider(sampler=AlwaysRecordSampler(ParentBased(ALWAYS_ON)))
    provider.add_span_processor(processor)
    yield Gated(provider, processor, exporter)
    assert gate.held == set(), "no span is held once its unit has ended"
    provider.shutdown()


class TestVerdict:
    def test_a_healthy_unit_exports_its_span_and_figures_and_no_db_span(self, gated: Gated) -> None:
        gated.request("GET /ok", 3)
        assert gated.exported() == ["GET /ok"]
        attributes = gated.unit("GET /ok").attributes
        assert (attributes["zen.db.queries"], attributes["zen.db.spans"]) == (3, "summarized")

    @pytest.mark.parametrize(
        ("queries", "point"),
        [
            (6, OK),  # no budget file: six runs of one shape breach repeated_queries
            (1, {"http.request.method": "GET", "http.response.status_code": 500}),
        ],
    )
    def test_a_unit_that_breached_or_failed_exports_every_db_span(
        self, gated: Gated, queries: int, point: dict[str, str | int]
    ) -> None:
        with gated.tracer.start_as_current_span("GET /bad", kind=SpanKind.SERVER) as span:
            for _ in range(queries):
                db(gated.tracer, "SELECT 1 FROM t")
            gated.processor.finish(span, "bad/", point)
        spans = gated.exporter.get_finished_spans()
        unit = gated.unit("GET /bad")
        assert [s.name for s in spans] == ["SELECT"] * queries + ["GET /bad"]
        assert {s.parent.span_id for s in spans if s.name == "SELECT"} == {unit.context.span_id}  # type: ignore[union-attr]
        assert unit.attributes["zen.db.spans"] == "exported"

    @pytest.mark.parametrize(
        ("queries", "point", "kept"),
        [
            (6, OK, True),  # breached repeated_queries
            (1, {"http.request.method": "GET", "http.response.status_code": 500}, True),
            (1, {"django.task.status": "FAILED"}, True),
            (3, OK, None),  # healthy: no mark, its DB spans summarized
        ],
    )
    def test_a_kept_units_span_and_held_db_spans_say_so(
        self, gated: Gated, queries: int, point: dict[str, str | int], kept: bool | None
    ) -> None:
        """zen.unit.kept on the unit span and on every span held for its verdict (its DB spans, and
        its call to another service, released whatever the verdict), for the collector to keep
        whatever it samples; a healthy unit carries no mark."""
        with gated.tracer.start_as_current_span("GET /unit", kind=SpanKind.SERVER) as span:
            for _ in range(queries):
                db(gated.tracer, "SELECT 1 FROM t")
            with gated.tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
            ):
                pass
            gated.processor.finish(span, "unit/", point)
        marks = [(s.name, (s.attributes or {}).get("zen.unit.kept")) for s in gated.exporter.get_finished_spans()]
        held = [("SELECT", kept)] * queries if kept else []
        assert marks == [("GET", kept), *held, ("GET /unit", kept)]

    def test_a_unit_that_fails_to_finish_holds_nothing_back(
        self, gated: Gated, monkeypatch: pytest.MonkeyPatch, swallowed: list[logging.LogRecord]
    ) -> None:
        """zenmetry's own error while judging a unit (here, resolving its budget at its end) loses
        none of its spans: the held ones are released as they are, and the fixture finds nothing
        held."""

        def fails(*args: object, **kwargs: object) -> None:
            raise RuntimeError("zenmetry's own error")

        with gated.tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as span:
            for i in range(2):
                db(gated.tracer, f"SELECT {i} FROM t")
            with gated.tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
            ):
                pass
            assert gated.exported() == []
            monkeypatch.setattr(Budgets, "resolve", fails)
            assert gated.processor.finish(span, "x/", OK) is None
        assert gated.exported() == ["GET", "SELECT", "SELECT", "GET /x"]
        assert [record.getMessage() for record in swallowed] == [
            "zenmetry: internal error in finish; the request or task was not affected"
        ]
        swallowed.clear()

    def test_a_failed_task_exports_its_db_spans(self, gated: Gated) -> None:
        celery = gated.provider.get_tracer(CELERY_SCOPE)
        with celery.start_as_current_span("run/t", kind=SpanKind.CONSUMER) as task:
            db(gated.tracer, "SELECT 1")
            gated.processor.finish(task, "t", {"celery.state": "FAILURE"})
        assert gated.exported() == ["SELECT", "run/t"]

    def test_external_calls_leave_with_their_unit_whatever_its_verdict(self, gated: Gated) -> None:
        """A call to another service is held to carry the unit's verdict, and never dropped: it is
        exported at the unit's end, before the unit span, when the DB spans are summarized."""
        with gated.tracer.start_as_current_span("GET /call", kind=SpanKind.SERVER) as span:
            db(gated.tracer, "SELECT 1 FROM t")
            with gated.tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
            ):
                assert gated.exported() == []
            assert gated.exported() == []  # held
            gated.processor.finish(span, "call/", OK)
            assert gated.exported() == ["GET"]
        assert gated.exported() == ["GET", "GET /call"]

    def test_a_db_span_outside_any_unit_is_exported_at_once(self, gated: Gated) -> None:
        db(gated.tracer, "SELECT 1")
        assert gated.exported() == ["SELECT"]

    def test_all_exports_every_db_span_as_plain_opentelemetry_does(self, gated: Gated) -> None:
        gated.processor.settings = Settings(db_spans="all")
        gated.request("GET /ok", 2)
        assert gated.exported() == ["SELECT", "SELECT", "GET /ok"]
        assert gated.unit("GET /ok").attributes["zen.db.spans"] == "exported"

    def test_a_ratio_of_one_exports_everything(self, gated: Gated) -> None:
        gated.processor.settings = Settings(db_spans_ratio=1.0)
        gated.request("GET /ok", 2)
        assert gated.exported() == ["SELECT", "SELECT", "GET /ok"]

    def test_an_eager_task_inside_a_request_goes_with_the_requests_verdict(self, gated: Gated) -> None:
        """A healthy task inside a breaching request: its DB spans are the request's too."""
        celery = gated.provider.get_tracer(CELERY_SCOPE)
        with gated.tracer.start_as_current_span("GET /r", kind=SpanKind.SERVER) as span:
            with celery.start_as_current_span("run/t", kind=SpanKind.CONSUMER) as task:
                db(gated.tracer, "SELECT 2 FROM u")
                gated.processor.finish(task, "t", {"celery.state": "SUCCESS"})
            for _ in range(6):
                db(gated.tracer, "SELECT 1 FROM t")
            gated.processor.finish(span, "r/", OK)
        assert sorted(gated.exported()) == sorted(["SELECT"] * 7 + ["run/t", "GET /r"])
        assert (gated.unit("run/t").attributes["zen.db.spans"], gated.unit("GET /r").attributes["zen.db.spans"]) == (
            "summarized",
            "exported",
        )

    def test_past_the_bound_a_unit_exports_its_db_spans_and_holds_no_more(self, gated: Gated) -> None:
        """MAX_HELD + 500 distinct statements, healthy: the held ones are released, the rest passed."""
        with gated.tracer.start_as_current_span("GET /big", kind=SpanKind.SERVER) as span:
            for i in range(MAX_HELD + 500):
                db(gated.tracer, f"SELECT {i} FROM t{i}")
                assert len(gated.processor._gate.held) <= MAX_HELD
            gated.processor.finish(span, "big/", OK)
        attributes = gated.unit("GET /big").attributes
        assert (attributes["zen.db.queries"], attributes["zen.db.spans"]) == (MAX_HELD + 500, "exported")
        assert gated.exported().count("SELECT") == MAX_HELD + 500


class Recording(SimpleSpanProcessor):
    """An exporting processor that also wants each span's start and ending."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.calls: list[str] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.calls.append(f"start {span.name}")

    def _on_ending(self, span: Span) -> None:
        self.calls.append(f"ending {span.name}")


class TestPassingOn:
    """The unit processor stands in the provider for the exporting processors the gate feeds."""

    def test_every_exporter_gets_the_same_spans_and_the_provider_one_processor_per_span(self) -> None:
        first, second = InMemorySpanExporter(), InMemorySpanExporter()
        recording = Recording(second)
        processor, gate = wired(Settings(**SUMMARIZED), SimpleSpanProcessor(first), recording)  # type: ignore[arg-type]
        assert gate.exporting()
        provider = TracerProvider(sampler=AlwaysRecordSampler(ParentBased(ALWAYS_ON)))
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("tests")
        with tracer.start_as_current_span("GET /bad", kind=SpanKind.SERVER) as span:
            for _ in range(6):
                db(tracer, "SELECT 1 FROM t")
            processor.finish(span, "bad/", OK)  # repeated_queries breached: all exported
        db(tracer, "SELECT 2")
        expected = ["SELECT"] * 6 + ["GET /bad", "SELECT"]
        assert [s.name for s in first.get_finished_spans()] == expected
        assert [s.name for s in second.get_finished_spans()] == expected
        ending = ["start SELECT", "ending SELECT"]
        assert recording.calls == ["start GET /bad", *(ending * 6), "ending GET /bad", *ending]
        assert processor.force_flush() is True
        provider.shutdown()
        assert (first._stopped, second._stopped) == (True, True)

    def test_an_exported_db_span_of_a_unit_arrives_with_its_statement_literal_free(self, gated: Gated) -> None:
        """Replaced on the span processors' span as the unit processor shapes it; every other
        attribute as the instrumentation wrote it."""
        gated.processor.settings = Settings(db_spans="all")
        tracer = gated.tracer
        with tracer.start_as_current_span("GET /r", kind=SpanKind.SERVER) as span:
            with tracer.start_as_current_span(
                "SELECT",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": "postgresql",
                    "db.statement": "SELECT * FROM t WHERE a = 'secret' LIMIT 21",
                    "db.query.text": "SELECT * FROM t WHERE a = 'secret' LIMIT 21",
                    "db.name": "shop",
                    "net.peer.port": 5432,
                },
            ):
                pass
            gated.processor.finish(span, "r/", OK)
        (select,) = [s for s in gated.exporter.get_finished_spans() if s.name == "SELECT"]
        assert dict(select.attributes or {}) == {
            "db.system": "postgresql",
            "db.statement": "SELECT * FROM t WHERE a = ? LIMIT ?",
            "db.query.text": "SELECT * FROM t WHERE a = ? LIMIT ?",
            "db.name": "shop",
            "net.peer.port": 5432,
        }
        assert scrub(select) is select, "nothing left for the export guard to copy"

    def test_a_sampled_out_db_span_is_left_as_recorded(self, gated: Gated) -> None:
        """No exporter sends it: the processor makes no literal-free copy for it."""
        gated.processor.settings = Settings(db_spans="all")
        seen: list[ReadableSpan] = []
        collector = SpanProcessor()
        collector.on_end = seen.append  # type: ignore[method-assign]
        gated.provider.add_span_processor(collector)
        parent = trace.set_span_in_context(
            trace.NonRecordingSpan(SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(0)))
        )
        with gated.tracer.start_as_current_span("GET /r", context=parent, kind=SpanKind.SERVER) as span:
            db(gated.tracer, "SELECT 'secret'")
            gated.processor.finish(span, "r/", OK)
        assert [(s.name, (s.attributes or {}).get("db.statement")) for s in seen] == [
            ("SELECT", "SELECT 'secret'"),
            ("GET /r", None),
        ]
        assert gated.exported() == []

    def test_a_db_span_outside_any_unit_is_scrubbed_by_the_export_guard(self, gated: Gated) -> None:
        db(gated.tracer, "SELECT 'secret'")
        (span,) = gated.exporter.get_finished_spans()
        assert span.attributes["db.statement"] == "SELECT 'secret'"  # type: ignore[index]  # as recorded
        assert scrub(span).attributes["db.statement"] == "SELECT ?"  # type: ignore[index]  # as exported


class TestRatio:
    def test_the_ratio_is_decided_by_the_trace_id(self) -> None:
        """Lower 64 bits against the share, as TraceIdRatioBased: one trace, one decision."""
        assert [in_ratio(trace_id, 0.5) for trace_id in (0, 2**63 - 1, 2**63, 2**64 - 1, 2**64)] == [
            True,
            True,
            False,
            False,
            True,
        ]
        assert (in_ratio(12345, 0.0), in_ratio(2**64 - 1, 1.0)) == (False, True)


@pytest.mark.usefixtures("postgres_db")
class TestOverOtlp:
    def test_healthy_requests_send_their_figures_and_no_db_span(self, receiver: Receiver) -> None:
        """The default, on gunicorn: a request within budget, an N+1, one raising, a call out."""
        with external_server() as url:
            server = gunicorn(
                receiver,
                "--workers",
                "1",
                ZENMETRY_DB_SPANS="detail",
                ZENMETRY_DB_SPANS_RATIO="0",
                ZEN_TEST_EXTERNAL_URL=url,
            )
            for path in ("/queries/3/", "/nplusone/", "/boom/", "/external/requests/ok/?timeout=3"):
                server.get(path)
            server.stop()
        receiver.wait(lambda r: len(r.units()) == 4)
        units = {unit.attributes["zen.unit.name"]: unit for unit in receiver.units()}
        spans = receiver.spans()

        def children(name: str, kind: str) -> int:
            return len([s for s in spans if s.parent_span_id == units[name].span_id and s.kind == kind])

        found = {
            name: (unit.attributes["zen.db.spans"], unit.attributes["zen.db.queries"], children(name, "CLIENT"))
            for name, unit in units.items()
        }
        assert found == {
            "queries/<int:n>/": ("summarized", 3, 0),
            "nplusone/": ("exported", 12, 12),
            "boom/": ("exported", 1, 1),
            "external/<str:library>/<str:path>/": ("summarized", 0, 1),  # the call out, never held
        }
        # The N+1 breached and the raising page failed: kept, their unit spans and DB spans marked
        # for the collector; the healthy pages carry no mark.
        kept = {name: unit.attributes.get("zen.unit.kept") for name, unit in units.items()}
        assert kept == {
            "queries/<int:n>/": None,
            "nplusone/": True,
            "boom/": True,
            "external/<str:library>/<str:path>/": None,
        }
        marked = [
            s.attributes.get("zen.unit.kept") for s in spans if s.kind == "CLIENT" and "db.statement" in s.attributes
        ]
        assert marked == [True] * 13
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 4)
        assert receiver.total("zen.unit.db.queries", db__system="all").sum == 16

    @pytest.mark.parametrize("db_spans", ["detail", "all"])
    @pytest.mark.parametrize("sampler", ["always_on", "always_off"])
    def test_both_modes_give_the_same_exact_metrics_and_no_trace_loses_a_parent(
        self, receiver: Receiver, db_spans: str, sampler: str
    ) -> None:
        """A call out to an instrumented downstream server: its client span and the downstream's
        span are exported in both modes; the metrics are the ground truth whatever is exported."""
        mode = {"ZENMETRY_DB_SPANS": db_spans, "ZENMETRY_DB_SPANS_RATIO": "0", "OTEL_TRACES_SAMPLER": sampler}
        downstream = gunicorn(receiver, "--workers", "1", **mode)
        server = gunicorn(receiver, "--workers", "1", ZEN_TEST_EXTERNAL_URL=f"{downstream.url}/downstream", **mode)
        for path in ("/queries/3/", "/nplusone/", "/boom/", "/external/requests/2/?timeout=3"):
            server.get(path)
        server.stop()
        downstream.stop()
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 5)
        assert receiver.total("zen.unit.db.queries", db__system="all").sum == 3 + 12 + 1 + 0 + 2
        assert receiver.total("zen.unit.db.queries", db__system="postgresql").sum == 18
        assert receiver.total("zen.unit.external.calls").sum == 1
        assert receiver.total("zen.budget.breaches").value == 1  # the N+1's repeated_queries
        spans = receiver.spans()
        if sampler == "always_off":
            assert spans == []
            return
        ids = {span.span_id for span in spans}
        # Unit spans may have a parent in the process that made the request (this one, when an
        # earlier test instrumented it): every other span's parent is exported.
        orphans = [
            span.name for span in spans if "zen.unit.kind" not in span.attributes and span.parent_span_id not in ids
        ]
        db = [span for span in spans if "db.system" in span.attributes or "db.system.name" in span.attributes]
        (call,) = [span for span in spans if span.kind == "CLIENT" and span not in db]
        (inner,) = [unit for unit in receiver.units() if unit.parent_span_id == call.span_id]
        assert (orphans, len(db), inner.parent_span_id, inner.attributes["zen.db.queries"]) == (
            [],
            18 if db_spans == "all" else 12 + 1,
            call.span_id,
            2,
        )
