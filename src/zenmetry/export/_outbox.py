"""Leaving a process: the last export of traces and metrics, bounded, and what it could not send.

The SDK shuts its providers down at exit one after the other, each waiting for its exporter,
and the OTLP exporters retry until their own timeout: with a collector that is down or never
answers, a gunicorn worker lingered 20 s after SIGTERM, until gunicorn's graceful timeout
killed it. zenmetry replaces the providers' exit handlers with one that shuts traces and
metrics down side by side and waits for them ``FLUSH_TIMEOUT_MILLIS`` at most; a Celery pool
process flushes within the same bound before billiard ends it (``integrations.celery``).
What could not be sent in that time is counted in one warning: the spans the batch
processor still queued, and the spans and metric points of exports that failed or were
still running.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from zenmetry import _guard

logger = logging.getLogger("zenmetry")

FLUSH_TIMEOUT_MILLIS: Final = 5_000
"""The longest a process waits for its exporters when it exits (the OTLP exporters' own
timeout is set to it too, so an export started then ends within it)."""

UNSENT: Final = (
    "zenmetry: %d spans / %d metric points could not be sent before the process exited: "
    "the exporters did not deliver them within %g s (is the collector down or slow?)"
)


class Count:
    """Items handed to an exporter: those in an export still running, and those of exports that
    failed since ``begin()``. Updated in the exporting threads, never on the request path.

    ``latest=True`` is for cumulative metric points: every export carries the latest point of
    every series, so what is lost is one export's worth (the latest that was not delivered),
    however many exports failed.
    """

    def __init__(self, *, latest: bool = False) -> None:
        self._lock = threading.Lock()
        self._latest = latest
        self.in_flight = 0
        self.failed = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        # The parent's exporting threads do not exist in a forked child.
        self._lock = threading.Lock()
        self.in_flight = self.failed = 0

    def begin(self) -> None:
        with self._lock:
            self.failed = 0

    def start(self, items: int) -> None:
        with self._lock:
            self.in_flight += items

    def end(self, items: int, *, sent: bool) -> None:
        with self._lock:
            self.in_flight -= items
            if self._latest:
                self.failed = 0 if sent else items
            elif not sent:
                self.failed += items

    def unsent(self) -> int:
        with self._lock:
            return max(self.in_flight, self.failed) if self._latest else self.in_flight + self.failed


class CountingSpanExporter(SpanExporter):
    """Wraps a span exporter to count what it did not deliver."""

    def __init__(self, exporter: SpanExporter, count: Count) -> None:
        self.exporter = exporter
        self.count = count

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        items = len(spans)
        self.count.start(items)
        result = SpanExportResult.FAILURE
        try:
            result = self.exporter.export(spans)
        finally:
            self.count.end(items, sent=result is SpanExportResult.SUCCESS)
            if result is not SpanExportResult.SUCCESS and isinstance(spans, list):
                # The exception of a failed OTLP export keeps the whole exporting stack alive
                # through its traceback, in a reference cycle whose frames, alive through the
                # export's timeout, reached the oldest generation: only a full collection frees
                # it, and with it this batch. The batch processor never reads a batch again
                # once exported: emptying it keeps a collector that is down from growing the
                # process by a batch of spans per failed export.
                spans.clear()
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """Wraps a metric exporter to count the data points it did not deliver."""

    def __init__(self, exporter: MetricExporter, count: Count) -> None:
        super().__init__(exporter._preferred_temporality, exporter._preferred_aggregation)  # noqa: SLF001
        self.exporter = exporter
        self.count = count

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        points = sum(
            len(metric.data.data_points)
            for resource in metrics_data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        self.count.start(points)
        result = MetricExportResult.FAILURE
        try:
            result = self.exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        finally:
            self.count.end(points, sent=result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


class Outbox:
    """What this process hands its exporters, counted; one per process (``_state``)."""

    def __init__(self) -> None:
        self.spans = Count()
        self.points = Count(latest=True)
        self.span_processors: list[BatchSpanProcessor] = []

    def span_processor(self, make: Any, exporter: SpanExporter, *args: Any, **options: Any) -> Any:
        """``make(exporter, ...)`` (the export span processor) with ``exporter`` counted."""
        processor = make(CountingSpanExporter(exporter, self.spans), *args, **options)
        if isinstance(processor, BatchSpanProcessor):
            self.span_processors.append(processor)
        return processor

    def watch_metrics(self, meter_provider: Any) -> None:
        """Count the points every periodic reader of ``meter_provider`` exports.

        The SDK builds the readers itself from ``OTEL_METRICS_EXPORTER`` and offers no hook
        to wrap their exporters, so they are wrapped where the reader keeps them.
        """
        for reader in getattr(meter_provider, "_metric_readers", ()):
            exporter = getattr(reader, "_exporter", None)
            if isinstance(exporter, MetricExporter) and not isinstance(exporter, CountingMetricExporter):
                reader._exporter = CountingMetricExporter(exporter, self.points)  # noqa: SLF001

    def begin(self) -> None:
        self.spans.begin()
        self.points.begin()

    def unsent(self) -> tuple[int, int]:
        """Spans and metric points not delivered since ``begin()``: queued, in flight or failed."""
        queued = 0
        for processor in self.span_processors:
            # The batch processor's queue (a deque); nothing public tells its length.
            queue = getattr(getattr(processor, "_batch_processor", None), "_queue", None)
            queued += len(queue) if queue is not None else 0
        return queued + self.spans.unsent(), self.points.unsent()


def install(outbox: Outbox) -> None:
    """Replace the exit handlers of the global providers by one bounded shutdown."""
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider())
    for provider in providers:
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            atexit.unregister(shutdown)
    atexit.register(flush, outbox, shutdown=True)


def flush(
    outbox: Outbox | None,
    *,
    shutdown: bool = False,
    timeout_millis: int = FLUSH_TIMEOUT_MILLIS,
    providers: tuple[object, object] | None = None,
) -> None:
    """Export what the process holds, traces and metrics side by side, waiting at most
    ``timeout_millis`` in all; then warn about what could not be sent.

    ``shutdown=True`` shuts the providers down (at exit); otherwise they are flushed (a Celery
    pool process, which billiard ends with ``os._exit()``). ``providers`` (tracer, meter)
    default to the global ones.
    """
    if outbox is not None:
        outbox.begin()
    tracer_provider, meter_provider = providers or (trace.get_tracer_provider(), metrics.get_meter_provider())
    if shutdown:
        # TracerProvider.shutdown() takes no timeout: its thread is left behind at the deadline.
        steps = [_call(tracer_provider, "shutdown"), _call(meter_provider, "shutdown", timeout_millis=timeout_millis)]
    else:
        steps = [
            _call(tracer_provider, "force_flush", timeout_millis=timeout_millis),
            _call(meter_provider, "force_flush", timeout_millis=timeout_millis),
        ]
    threads = [threading.Thread(target=step, name="zenmetry-flush", daemon=True) for step in steps]
    deadline = time.monotonic() + timeout_millis / 1000
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    if outbox is not None:
        spans, points = outbox.unsent()
        if spans or points:
            logger.warning(UNSENT, spans, points, timeout_millis / 1000)


def _call(provider: object, method: str, **kwargs: int) -> Callable[[], None]:
    """A step of ``flush``: ``provider.method(**kwargs)`` if the provider has it (the API's
    no-op providers do not), inside the guard."""

    def step() -> None:
        try:
            found = getattr(provider, method, None)
            if found is not None:
                found(**kwargs)
        except Exception:  # noqa: BLE001
            _guard.swallow(f"the flush before the process exits ({type(provider).__name__}.{method})")

    return step
