"""The unit processor on the real SDK: which spans are units, what belongs to them, and
what is written and recorded when they finish."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from zenmetry import outputs
from zenmetry.config._settings import Settings
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.units._processor import CELERY_SCOPE, UnitProcessor
from zenmetry.units._shapes import round_trip

GET = {"http.request.method": "GET", "http.response.status_code": 200}


@dataclass
class Setup:
    provider: TracerProvider
    processor: UnitProcessor
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("tests")

    def spans(self) -> dict[str, ReadableSpan]:
        return {span.name: span for span in self.exporter.get_finished_spans()}

    def metric(self, name: str) -> dict[frozenset[tuple[str, object]], tuple[int, float]]:
        data = self.reader.get_metrics_data()
        found = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            count = getattr(point, "count", None)
                            found[frozenset(point.attributes.items())] = (
                                (count, point.sum) if count is not None else (point.value, point.value)
                            )
        return found


def make(sampler: object = None, settings: Settings | None = None) -> Setup:
    reader = InMemoryMetricReader()
    settings = settings or Settings()
    processor = UnitProcessor(settings, listeners=outputs.listeners(settings, MeterProvider(metric_readers=[reader])))
    provider = TracerProvider(sampler=AlwaysRecordSampler(sampler or ParentBased(ALWAYS_ON)))  # type: ignore[arg-type]
    exporter = InMemorySpanExporter()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Setup(provider, processor, exporter, reader)


@pytest.fixture
def setup() -> Iterator[Setup]:
    made = make()
    yield made
    assert made.processor.tracked_spans() == 0, "every span that ended left the processor"
    made.provider.shutdown()


def db(tracer: trace.Tracer, statement: str = "SELECT 1", system: str = "postgresql", *, new: bool = False) -> None:
    attributes = (
        {"db.system.name": system, "db.query.text": statement}
        if new
        else {"db.system": system, "db.statement": statement}
    )
    with tracer.start_as_current_span(f"{system} call", kind=SpanKind.CLIENT, attributes=attributes):
        pass


DB_CALL_SITE = {
    "code.file.path": "tests/test_processor.py",
    "code.line.number": db.__code__.co_firstlineno
    + next(i for i, line in enumerate(inspect.getsourcelines(db)[0]) if line.lstrip().startswith("with ")),
    "code.function.name": "db",
}
"""Where ``db()`` makes its calls (its ``with`` line): the call site of every DB call of these tests."""


class TestWhatIsAUnit:
    def test_a_server_span_is_an_http_unit_and_its_db_calls_count(self, setup: Setup) -> None:
        """DB spans of both semantic-convention generations are DB calls of the unit."""
        with setup.tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as span:
            db(setup.tracer, "SELECT 1")
            db(setup.tracer, "SELECT 2", system="mongodb", new=True)
            setup.processor.finish(span, "x/", GET)
        attributes = setup.spans()["GET /x"].attributes
        assert (attributes["zen.unit.kind"], attributes["zen.unit.name"]) == ("http", "x/")
        assert (
            attributes["zen.db.queries"],
            attributes["zen.db.postgresql.queries"],
            attributes["zen.db.mongodb.queries"],
        ) == (2, 1, 1)

    def test_a_server_span_with_a_remote_parent_is_a_unit(self, setup: Setup) -> None:
        remote = SpanContext(trace_id=7, span_id=9, is_remote=True, trace_flags=TraceFlags(1))
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
        with setup.tracer.start_as_current_span("GET /r", context=parent, kind=SpanKind.SERVER) as span:
            db(setup.tracer)
            setup.processor.finish(span, "r/", GET)
        assert setup.spans()["GET /r"].attributes["zen.db.queries"] == 1

    def test_the_celery_run_span_is_a_task_unit_and_counts_for_the_enclosing_request(self, setup: Setup) -> None:
        """An eager task inside a request: its DB call counts for the task and for the request."""
        celery = setup.provider.get_tracer(CELERY_SCOPE)
        with setup.tracer.start_as_current_span("GET /e", kind=SpanKind.SERVER) as request:
            db(setup.tracer, "SELECT 'request'")
            with celery.start_as_current_span("run/shop.tasks.invoice", kind=SpanKind.CONSUMER) as task:
                db(setup.tracer, "SELECT 'task'")
                setup.processor.finish(task, "shop.tasks.invoice", {"celery.state": "SUCCESS"})
            setup.processor.finish(request, "e/", GET)
        spans = setup.spans()
        assert spans["run/shop.tasks.invoice"].attributes["zen.unit.kind"] == "task"
        assert spans["run/shop.tasks.invoice"].attributes["zen.db.queries"] == 1
        assert spans["GET /e"].attributes["zen.db.queries"] == 2

    def test_a_consumer_span_of_another_instrumentation_is_not_a_unit(self, setup: Setup) -> None:
        with setup.tracer.start_as_current_span("kafka receive", kind=SpanKind.CONSUMER) as span:
            db(setup.tracer)
            setup.processor.finish(span, "x", {})
        assert "zen.unit.kind" not in setup.spans()["kafka receive"].attributes

    def test_spans_outside_any_unit_are_not_counted(self, setup: Setup) -> None:
        db(setup.tracer)
        with setup.tracer.start_as_current_span("GET /later", kind=SpanKind.SERVER) as span:
            setup.processor.finish(span, "later/", GET)
        assert setup.spans()["GET /later"].attributes["zen.db.queries"] == 0

    def test_calls_in_nested_internal_spans_belong_to_the_unit(self, setup: Setup) -> None:
        with setup.tracer.start_as_current_span("GET /n", kind=SpanKind.SERVER) as span:
            with setup.tracer.start_as_current_span("render"), setup.tracer.start_as_current_span("inner"):
                db(setup.tracer)
            setup.processor.finish(span, "n/", GET)
        assert setup.spans()["GET /n"].attributes["zen.db.queries"] == 1

    def test_an_http_client_span_is_an_external_call_not_a_db_call(self, setup: Setup) -> None:
        with setup.tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as span:
            for method_key in ("http.request.method", "http.method"):
                with setup.tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={method_key: "GET"}):
                    pass
            with setup.tracer.start_as_current_span(
                "es", kind=SpanKind.CLIENT, attributes={"http.method": "GET", "db.system": "elasticsearch"}
            ):
                pass
            setup.processor.finish(span, "x/", GET)
        attributes = setup.spans()["GET /x"].attributes
        assert (
            attributes["zen.external.calls"],
            attributes["zen.db.queries"],
            attributes["zen.db.elasticsearch.queries"],
        ) == (2, 1, 1)


class TestFinishing:
    def test_a_unit_ended_without_a_hook_still_records_its_metrics(self, setup: Setup) -> None:
        with setup.tracer.start_as_current_span(
            "GET /h", kind=SpanKind.SERVER, attributes={"http.route": "h/<int:pk>/", "http.method": "GET"}
        ) as span:
            db(setup.tracer)
            span.set_attribute("http.status_code", 201)
        assert "zen.db.queries" not in setup.spans()["GET /h"].attributes
        assert setup.metric("zen.unit.db.queries") == {
            frozenset(
                {
                    ("zen.unit.kind", "http"),
                    ("zen.unit.name", "h/<int:pk>/"),
                    ("http.request.method", "GET"),
                    ("http.response.status_code", 201),
                    ("db.system", system),
                }
            ): (1, 1)
            for system in ("postgresql", "all")
        }

    def test_finishing_twice_or_a_non_unit_span_changes_nothing(self, setup: Setup) -> None:
        with setup.tracer.start_as_current_span("GET /t", kind=SpanKind.SERVER) as span:
            db(setup.tracer)
            setup.processor.finish(span, "t/", GET)
            db(setup.tracer)  # after the unit finished: not counted
            setup.processor.finish(span, "t/", GET)
            with setup.tracer.start_as_current_span("inner") as inner:
                setup.processor.finish(inner, "inner", GET)
        assert setup.spans()["GET /t"].attributes["zen.db.queries"] == 1
        assert [count for count, _ in setup.metric("zen.unit.duration").values()] == [1]

    @pytest.mark.parametrize(("repeats", "events"), [(5, 0), (6, 1)])
    def test_a_statement_shape_run_more_than_five_times_is_reported(
        self, setup: Setup, repeats: int, events: int
    ) -> None:
        """Without a budget file repeated_queries is 5: six runs of one shape breach it, five do not."""
        with setup.tracer.start_as_current_span("GET /r", kind=SpanKind.SERVER) as span:
            for i in range(repeats):
                db(setup.tracer, f"SELECT * FROM t WHERE id = {i}")
            db(setup.tracer, "SELECT 1")
            setup.processor.finish(span, "r/", GET)
        unit = setup.spans()["GET /r"]
        assert unit.attributes["zen.db.repeated_max"] == repeats
        repeated = [dict(e.attributes) for e in unit.events if e.name == "zen.db.repeated_query"]
        breaches = [dict(e.attributes) for e in unit.events if e.name == "zen.budget.breach"]
        assert (
            repeated
            == [
                {
                    "zen.statement.fingerprint": "SELECT * FROM t WHERE id = ?",
                    "zen.count": 6,
                    "db.system": "postgresql",
                    **DB_CALL_SITE,
                }
            ]
            * events
        )
        assert (
            breaches
            == [{"zen.limit": "repeated_queries", "zen.limit.value": 5, "zen.actual": 6, "zen.budget": "default"}]
            * events
        )
        assert unit.attributes.get("zen.budget.breached") == (("repeated_queries",) if events else None)

    def test_the_console_line_shows_the_unit_at_a_glance(self, capfd: pytest.CaptureFixture[str]) -> None:
        made = make(settings=Settings(console=True))
        celery = made.provider.get_tracer(CELERY_SCOPE)
        with made.tracer.start_as_current_span("GET /c", kind=SpanKind.SERVER) as span:
            for _ in range(7):
                db(made.tracer, "SELECT 1")
            db(made.tracer, "find", system="mongodb")
            made.processor.finish(
                span, "orders/<int:pk>/", {"http.request.method": "GET", "http.response.status_code": 200}
            )
        with celery.start_as_current_span("run/shop.tasks.sync", kind=SpanKind.CONSUMER) as task:
            made.processor.finish(task, "shop.tasks.sync", {"celery.state": "FAILURE"})
        lines = capfd.readouterr().err.splitlines()
        assert re.fullmatch(
            r"zenmetry http GET orders/<int:pk>/ 200 \| queries 8 \(mongodb 1, postgresql 7\) \| db \d+\.\d ms \| "
            r"mem [+-]\d+\.\d MiB \| ext 0 \| \d+\.\d ms \| BREACH repeated_queries 7>5 "
            + re.escape(f"at tests/test_processor.py:{DB_CALL_SITE['code.line.number']} db"),
            lines[0],
        ), lines[0]
        assert re.fullmatch(
            r"zenmetry task shop.tasks.sync FAILURE \| queries 0 \| db 0\.0 ms \| mem [+-]\d+\.\d MiB \| ext 0 \| \d+\.\d ms",
            lines[1],
        ), lines[1]


class TestFiguresOnTheSpan:
    """The figures go into the SDK's attributes directly when no span limit applies, and through
    ``set_attributes`` (which applies them) when one does: the span ends the same either way."""

    FIGURES: ClassVar[dict[str, object]] = {
        "zen.unit.kind": "http",
        "zen.unit.name": "r/",
        "zen.db.queries": 2,
        "zen.db.round_trips": 2,
        "zen.db.repeated_max": 2,
        "zen.external.calls": 0,
        "zen.external.no_timeout": 0,
        "zen.memory.shared": False,
        "zen.budget": "default",
        "zen.db.spans": "exported",
        "zen.db.postgresql.queries": 2,
    }

    def finished(self, limits: SpanLimits | None = None) -> ReadableSpan:
        made = make()
        provider = TracerProvider(span_limits=limits) if limits else made.provider
        if limits:
            provider.add_span_processor(made.processor)
            provider.add_span_processor(SimpleSpanProcessor(made.exporter))
        tracer = provider.get_tracer("tests")
        with tracer.start_as_current_span("GET /r", kind=SpanKind.SERVER, attributes={"http.route": "r/"}) as span:
            db(tracer, "SELECT 1")
            db(tracer, "SELECT 1")
            made.processor.finish(span, "r/", GET)
            span.set_attribute("after", 1)  # still open: the application may write more
        (unit,) = [s for s in made.exporter.get_finished_spans() if s.name == "GET /r"]
        return unit

    def test_without_limits_every_figure_is_written_as_is(self) -> None:
        unit = self.finished()
        attributes = dict(unit.attributes or {})
        assert {key: attributes[key] for key in self.FIGURES} == self.FIGURES
        assert (next(iter(attributes)), list(attributes)[-1], unit.dropped_attributes) == ("http.route", "after", 0)

    def test_a_count_limit_keeps_the_newest_as_the_sdk_does(self) -> None:
        unit = self.finished(SpanLimits(max_span_attributes=4))
        assert list(unit.attributes or {}) == [
            "zen.db.spans",
            "zen.db.postgresql.queries",
            "zen.db.postgresql.duration_ms",
            "after",
        ]
        assert unit.dropped_attributes == 22 - 4  # the route, 20 figures and one more

    def test_a_length_limit_cuts_strings_as_the_sdk_does(self) -> None:
        unit = self.finished(SpanLimits(max_attribute_length=3))
        attributes = unit.attributes or {}
        assert (attributes["zen.db.spans"], attributes["zen.budget"], attributes["zen.unit.name"]) == (
            "exp",
            "def",
            "r/",
        )


class TestSampling:
    def test_a_dropped_trace_is_still_measured_but_not_exported(self) -> None:
        """With a ratio-0 sampler nothing is exported, yet every unit is counted in the metrics."""
        made = make(sampler=TraceIdRatioBased(0))
        for n in (1, 2, 3):
            with made.tracer.start_as_current_span("GET /s", kind=SpanKind.SERVER) as span:
                assert span.is_recording()
                assert not span.get_span_context().trace_flags.sampled
                for _ in range(n):
                    db(made.tracer)
                made.processor.finish(span, "s/", GET)
        assert made.exporter.get_finished_spans() == ()
        points = made.metric("zen.unit.db.queries")
        assert points[
            frozenset({*GET.items(), ("zen.unit.kind", "http"), ("zen.unit.name", "s/"), ("db.system", "all")})
        ] == (3, 6)

    def test_a_kept_trace_is_exported_unchanged(self) -> None:
        made = make(sampler=TraceIdRatioBased(1))
        with made.tracer.start_as_current_span("GET /k", kind=SpanKind.SERVER, attributes={"a": 1}) as span:
            made.processor.finish(span, "k/", GET)
        (exported,) = made.exporter.get_finished_spans()
        assert exported.context.trace_flags.sampled
        assert exported.attributes["a"] == 1

    def test_the_sampler_describes_what_it_wraps(self) -> None:
        assert AlwaysRecordSampler(TraceIdRatioBased(0.5)).get_description() == "AlwaysRecord{TraceIdRatioBased{0.5}}"


class TestShapes:
    def test_a_cursors_next_batches_are_round_trips_of_one_query(self, setup: Setup) -> None:
        """One MongoDB query read in 7 batches: 1 query, 7 round trips, no N+1."""
        with setup.tracer.start_as_current_span("GET /m", kind=SpanKind.SERVER) as unit:
            batch = round_trip("getMore")
            for name, shape in [("find", ("products.find {}", "products.find {}"))] + [("getMore", batch)] * 6:
                with setup.tracer.start_as_current_span(
                    name, kind=SpanKind.CLIENT, attributes={"db.system": "mongodb", "db.statement": name}
                ) as call:
                    setup.processor.note_shape(call, shape)
            setup.processor.finish(unit, "m/", GET)
        attributes = setup.spans()["GET /m"].attributes
        assert (attributes["zen.db.mongodb.queries"], attributes["zen.db.repeated_max"]) == (1, 1)
        assert (attributes["zen.db.queries"], attributes["zen.db.round_trips"]) == (1, 7)
        assert "zen.budget.breached" not in attributes


class TestNoTimeout:
    def test_calls_outside_any_unit_leave_nothing_behind(self, setup: Setup) -> None:
        """A call without a timeout made outside a unit (start-up, a background thread) is not
        remembered: nothing would ever forget it."""
        for _ in range(3):
            with setup.tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"http.method": "GET"}
            ) as call:
                setup.processor.note_no_timeout(call, "GET", "example.com")
        assert (setup.processor._no_timeout, [e.name for e in setup.spans()["GET"].events]) == (
            set(),
            ["zen.external.no_timeout"],
        )

    def test_a_call_is_counted_once_however_often_it_is_checked(self, setup: Setup) -> None:
        """Redirects and retries pass the check again inside one call's span: one call, one count."""
        with setup.tracer.start_as_current_span("GET /u", kind=SpanKind.SERVER) as unit:
            with setup.tracer.start_as_current_span(
                "GET", kind=SpanKind.CLIENT, attributes={"http.method": "GET"}
            ) as call:
                for _ in range(3):
                    setup.processor.note_no_timeout(call, "GET", "example.com")
            setup.processor.finish(unit, "u/", GET)
        assert setup.spans()["GET /u"].attributes["zen.external.no_timeout"] == 1
        assert [e.name for e in setup.spans()["GET"].events] == ["zen.external.no_timeout"]


class TestGuard:
    def test_an_error_inside_the_processor_never_reaches_the_application(
        self, setup: Setup, swallowed: list[logging.LogRecord]
    ) -> None:
        """A failing listener is logged on the ``zenmetry`` logger; the request goes on."""

        def broken(*args: object) -> None:
            raise RuntimeError("listener bug")

        setup.processor.listeners.append(broken)
        with setup.tracer.start_as_current_span("GET /g", kind=SpanKind.SERVER) as span:
            setup.processor.finish(span, "g/", GET)
        messages = [record.getMessage() for record in swallowed]
        swallowed.clear()
        assert messages == ["zenmetry: internal error in finish; the request or task was not affected"]
        assert setup.spans()["GET /g"].attributes["zen.unit.name"] == "g/"

    def test_detached_context_does_not_confuse_units(self, setup: Setup) -> None:
        """A span started with an explicit empty context is a root of its own, not part of the open unit."""
        with setup.tracer.start_as_current_span("GET /d", kind=SpanKind.SERVER) as span:
            with setup.tracer.start_as_current_span(
                "detached", context=context.Context(), kind=SpanKind.CLIENT, attributes={"db.system": "redis"}
            ):
                pass
            setup.processor.finish(span, "d/", GET)
        assert setup.spans()["GET /d"].attributes["zen.db.queries"] == 0


class TestThreadsOfAUnit:
    def test_figures_stay_exact_when_many_threads_end_db_spans_at_once(self, setup: Setup) -> None:
        """200 units, each fanning out to 8 threads that start together and each end 20 DB spans
        and 10 external calls, switching as often as the interpreter allows: every unit counts
        160 queries of one shape (per system too) and 80 external calls. (Without the lock, two
        threads making a unit's first call of a shape at once each counted it as the first.)"""
        import sys
        import threading

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            tracer = setup.tracer  # one tracer: the SDK's get_tracer is not meant for racing threads
            for round_ in range(200):
                with tracer.start_as_current_span(f"GET /fan/{round_}", kind=SpanKind.SERVER) as span:
                    unit_context = context.get_current()
                    start = threading.Barrier(8)

                    def work(unit_context: context.Context = unit_context, start: threading.Barrier = start) -> None:
                        token = context.attach(unit_context)
                        try:
                            start.wait()
                            for i in range(20):
                                db(tracer, "SELECT 1")
                                if i % 2:
                                    with tracer.start_as_current_span(
                                        "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
                                    ):
                                        pass
                        finally:
                            context.detach(token)

                    threads = [threading.Thread(target=work) for _ in range(8)]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()
                    setup.processor.finish(span, "fan/", GET)
        finally:
            sys.setswitchinterval(interval)
        figures = {
            (
                span.attributes["zen.db.queries"],
                span.attributes["zen.db.postgresql.queries"],
                span.attributes["zen.db.repeated_max"],
                span.attributes["zen.external.calls"],
            )
            for span in setup.exporter.get_finished_spans()
            if span.name.startswith("GET /fan/")
        }
        assert figures == {(160, 160, 160, 80)}


class TestSharedMemory:
    def test_a_unit_alone_has_its_own_memory_figure(self, setup: Setup) -> None:
        with setup.tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER) as span:
            setup.processor.finish(span, "a/", GET)
        assert setup.spans()["GET /a"].attributes["zen.memory.shared"] is False
        assert [count for count, _ in setup.metric("zen.unit.memory.growth").values()] == [1]

    def test_units_side_by_side_share_their_memory_figure(self, setup: Setup, tmp_path: Path) -> None:
        """Two requests open at once (threads, greenlets, ASGI): both say their memory is shared,
        neither is checked against ``memory_mb`` nor recorded as memory growth; the next one,
        alone, is."""
        from zenmetry.config._budgets import Budgets

        path = tmp_path / "zenmetry.toml"
        path.write_text("[http]\nmemory_mb = 0\nqueries = 0\n")
        setup.processor.settings = Settings(budgets=Budgets.from_file(path))
        first = setup.tracer.start_span("GET /one", kind=SpanKind.SERVER)
        second = setup.tracer.start_span("GET /two", kind=SpanKind.SERVER)
        kept = [b"x" * (4 * 2**20)]  # the process grows while both are open
        with trace.use_span(first, end_on_exit=True):
            db(setup.tracer)
            setup.processor.finish(first, "one/", GET)
        with trace.use_span(second, end_on_exit=True):
            setup.processor.finish(second, "two/", GET)
        with setup.tracer.start_as_current_span("GET /three", kind=SpanKind.SERVER) as third:
            kept.append(b"y" * (4 * 2**20))
            setup.processor.finish(third, "three/", GET)
        spans = setup.spans()
        assert [spans[f"GET /{n}"].attributes["zen.memory.shared"] for n in ("one", "two", "three")] == [
            True,
            True,
            False,
        ]
        assert [spans[f"GET /{n}"].attributes.get("zen.budget.breached") for n in ("one", "two", "three")] == [
            ("queries",),
            None,
            ("memory_mb",),
        ]
        growth = setup.metric("zen.unit.memory.growth")
        assert {dict(key)["zen.unit.name"]: count for key, (count, _) in growth.items()} == {"three/": 1}
        assert len(kept) == 2

    def test_an_eager_task_does_not_share_the_memory_of_its_request(self, setup: Setup) -> None:
        celery = setup.provider.get_tracer(CELERY_SCOPE)
        with setup.tracer.start_as_current_span("GET /e", kind=SpanKind.SERVER) as request:
            with celery.start_as_current_span("run/t", kind=SpanKind.CONSUMER) as task:
                setup.processor.finish(task, "t", {"celery.state": "SUCCESS"})
            setup.processor.finish(request, "e/", GET)
        spans = setup.spans()
        assert (spans["run/t"].attributes["zen.memory.shared"], spans["GET /e"].attributes["zen.memory.shared"]) == (
            False,
            False,
        )
