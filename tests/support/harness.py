"""The in-process harness: zenmetry's processor and the real instrumentations in this process,
on the real SDK, exporting to memory."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.util._importlib_metadata import entry_points

from zenmetry import _state, outputs
from zenmetry._distro import ZenmetryDistro
from zenmetry.config._settings import Settings
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.units._processor import UnitProcessor

INSTRUMENTED = {
    "django",
    "psycopg",
    "psycopg2",
    "pymongo",
    "redis",
    "sqlite3",
    "celery",
    "requests",
    "httpx",
    "urllib3",
    "urllib",
    "threading",
}
if os.environ.get("ZEN_TEST_PG_DRIVER") == "psycopg2":
    INSTRUMENTED.discard("psycopg")  # hidden from Django by the test project's settings


@dataclass
class Harness:
    """zenmetry's processor and the real instrumentations in this process, exporting to memory."""

    exporter: InMemorySpanExporter
    processor: UnitProcessor
    reader: InMemoryMetricReader | None = None

    def reset(self, settings: Settings | None = None) -> None:
        """Forget spans; fresh metrics and the given settings for the next test."""
        self.exporter.clear()
        self.processor.forget()
        self.reader = InMemoryMetricReader()
        self.processor.settings = settings = settings or Settings()
        self.processor.listeners = outputs.listeners(settings, MeterProvider(metric_readers=[self.reader]))

    def units(self) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if "zen.unit.kind" in (span.attributes or {})]

    def unit(self) -> ReadableSpan:
        """The one unit span the test produced."""
        (found,) = self.units()
        return found

    def db_spans(self) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.kind is SpanKind.CLIENT and _is_db(span)]

    def metric(self, name: str) -> dict[frozenset[tuple[str, object]], tuple[int | float, float]]:
        """Points of one metric: attributes -> (count, sum) for histograms, (value, value) for counters."""
        assert self.reader is not None
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, object]], tuple[int | float, float]] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        count = getattr(point, "count", None)
                        found[key] = (count, point.sum) if count is not None else (point.value, point.value)
        return found


def _is_db(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "db.system" in attributes or "db.system.name" in attributes


class Collect(logging.Handler):
    """Keeps every ERROR record: what zenmetry's guard swallowed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def instrument() -> Harness:
    """Instrument this process once, through zenmetry's distro, with providers of the test's own."""
    exporter = InMemorySpanExporter()
    meter_provider = MeterProvider()
    tracer_provider = TracerProvider(sampler=AlwaysRecordSampler(ParentBased(ALWAYS_ON)))
    processor = UnitProcessor(listeners=outputs.listeners(Settings(), meter_provider))
    tracer_provider.add_span_processor(processor)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    _state.state.processor = processor
    distro = ZenmetryDistro()
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        if entry_point.name in INSTRUMENTED:
            distro.load_instrumentor(entry_point, tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Harness(exporter, processor)
