"""Leaving a process: what the exporters did not deliver is counted, and the flush is bounded.
The exporters are the real OTLP/HTTP ones, sending to the test receiver in its failing modes."""

from __future__ import annotations

import logging
import time

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from support.otlp import BLACK_HOLE, REFUSE, Receiver, status
from zenmetry._configurator import _bounded_timeouts
from zenmetry.export import _outbox


def _providers(outbox: _outbox.Outbox, endpoint: str) -> tuple[TracerProvider, MeterProvider]:
    """Providers as the configurator builds them, exporting to ``endpoint`` (1 s timeout)."""
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    processor = outbox.span_processor(
        BatchSpanProcessor, OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=1), schedule_delay_millis=60_000
    )
    tracer_provider.add_span_processor(processor)
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=1), export_interval_millis=60_000
    )
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    outbox.watch_metrics(meter_provider)
    return tracer_provider, meter_provider


def _record(tracer_provider: TracerProvider, meter_provider: MeterProvider, spans: int, series: int) -> None:
    for i in range(spans):
        tracer_provider.get_tracer("t").start_span(f"s{i}").end()
    histogram = meter_provider.get_meter("t").create_histogram("h")
    for i in range(series):
        histogram.record(1, {"series": i})


class TestCount:
    def test_spans_add_up_in_flight_and_failed(self) -> None:
        count = _outbox.Count()
        count.start(5)
        count.end(5, sent=False)
        count.start(3)
        assert count.unsent() == 8
        count.begin()
        assert count.unsent() == 3

    def test_metric_points_count_the_latest_export_only(self) -> None:
        """Cumulative points: two failed exports of the same 10 series lose 10, not 20."""
        count = _outbox.Count(latest=True)
        for _ in range(2):
            count.start(10)
            count.end(10, sent=False)
        assert count.unsent() == 10
        count.start(10)
        count.end(10, sent=True)
        assert count.unsent() == 0


class TestFlush:
    @pytest.mark.parametrize("mode", [REFUSE, status(503)], ids=lambda mode: mode.name)
    def test_what_a_failing_collector_did_not_take_is_one_warning(
        self, mode: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        """7 spans and 3 series, the collector refusing or answering 503: one warning counts them."""
        outbox = _outbox.Outbox()
        with Receiver(mode) as receiver:  # type: ignore[arg-type]
            tracer_provider, meter_provider = _providers(outbox, receiver.endpoint)
            _record(tracer_provider, meter_provider, spans=7, series=3)
            with caplog.at_level(logging.WARNING, logger="zenmetry"):
                _outbox.flush(outbox, timeout_millis=3_000, providers=(tracer_provider, meter_provider))
            tracer_provider.shutdown()
            meter_provider.shutdown()
        assert [record.getMessage() for record in caplog.records if record.name == "zenmetry"] == [
            "zenmetry: 7 spans / 3 metric points could not be sent before the process exited: "
            "the exporters did not deliver them within 3 s (is the collector down or slow?)"
        ]

    def test_a_collector_that_never_answers_is_waited_for_within_the_bound(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Shut down at exit with a black hole: the flush returns after the bound, the spans
        still held counted, where the SDK's own shutdown waits for every exporter in turn."""
        outbox = _outbox.Outbox()
        with Receiver(BLACK_HOLE) as receiver:
            tracer_provider, meter_provider = _providers(outbox, receiver.endpoint)
            _record(tracer_provider, meter_provider, spans=4, series=2)
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="zenmetry"):
                _outbox.flush(outbox, shutdown=True, timeout_millis=500, providers=(tracer_provider, meter_provider))
            seconds = time.monotonic() - start
        assert seconds < 0.9
        assert [record.getMessage()[:53] for record in caplog.records if record.name == "zenmetry"] == [
            "zenmetry: 4 spans / 2 metric points could not be sent"
        ]

    def test_a_collector_that_answers_leaves_nothing_to_say(self, caplog: pytest.LogCaptureFixture) -> None:
        outbox = _outbox.Outbox()
        with Receiver() as receiver:
            tracer_provider, meter_provider = _providers(outbox, receiver.endpoint)
            _record(tracer_provider, meter_provider, spans=2, series=1)
            with caplog.at_level(logging.WARNING, logger="zenmetry"):
                _outbox.flush(outbox, shutdown=True, providers=(tracer_provider, meter_provider))
            assert (receiver.span_count, len(receiver.points("h"))) == (2, 1)
        assert [record for record in caplog.records if record.name == "zenmetry"] == []


class TestCountingSpanExporter:
    def test_a_failed_batch_is_emptied(self) -> None:
        """A failed export's exception keeps the exporting stack alive until a full garbage
        collection: the batch must not be kept with it."""
        with Receiver(REFUSE) as receiver:
            exporter = _outbox.CountingSpanExporter(
                OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=1), _outbox.Count()
            )
            provider = TracerProvider(shutdown_on_exit=False)
            span = provider.get_tracer("t").start_span("s")
            span.end()
            batch = [span]
            assert (exporter.export(batch), batch, exporter.count.unsent()) == (SpanExportResult.FAILURE, [], 1)


class TestExporterTimeouts:
    def test_the_otlp_exporters_timeout_is_the_exit_bound(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for variable in ("OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"):
            monkeypatch.delenv(variable, raising=False)
        arguments = _bounded_timeouts({OTLPSpanExporter: {"headers": {"a": "b"}}})
        assert arguments[OTLPSpanExporter] == {"headers": {"a": "b"}, "timeout": 5.0}
        assert arguments[OTLPMetricExporter] == {"timeout": 5.0}

    def test_a_timeout_in_the_environment_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TIMEOUT", raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "30")
        arguments = _bounded_timeouts(None)
        assert (OTLPSpanExporter in arguments, arguments[OTLPMetricExporter]) == (False, {"timeout": 5.0})
