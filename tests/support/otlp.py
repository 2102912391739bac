"""A small OTLP/HTTP receiver for the tests: real protobuf, decoded with opentelemetry-proto.

It stands where the OpenTelemetry Collector stands for users (no collector runs here). It
keeps every span it receives and, for metrics, the latest cumulative point of every series
of every process (``service.instance.id``), so sums over processes are exact.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def value(any_value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [value(item) for item in any_value.array_value.values]
    if which == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    if which is None:
        return None
    return getattr(any_value, which)


def attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: value(pair.value) for pair in pairs}


@dataclass
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str
    status_code: int

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [attrs for event_name, attrs in self.events if event_name == name]


@dataclass
class Point:
    """One series' latest cumulative value: a histogram's count and sum, or a counter's value."""

    attributes: dict[str, Any]
    count: int = 0
    sum: float = 0.0
    bucket_counts: list[int] = field(default_factory=list)
    value: float = 0.0


class Receiver:
    """Start with ``with Receiver() as receiver:``; ``receiver.endpoint`` is the OTLP base URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        # (metric name, service.instance.id, frozen attributes) -> latest point
        self._points: dict[tuple[str, str, frozenset[tuple[str, Any]]], Point] = {}
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    receiver._add_traces(body)
                    reply = ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    receiver._add_metrics(body)
                    reply = ExportMetricsServiceResponse()
                else:
                    reply = ExportLogsServiceResponse()
                payload = reply.SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._points.clear()

    # -- decoding ---------------------------------------------------------------------

    def _add_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        Span(
                            name=span.name,
                            kind=KINDS[span.kind],
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=attributes(span.attributes),
                            events=[(event.name, attributes(event.attributes)) for event in span.events],
                            resource=resource,
                            scope=scope_spans.scope.name,
                            status_code=span.status.code,
                        )
                    )
        with self._lock:
            self.requests += 1
            self._spans.extend(spans)

    def _add_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        with self._lock:
            self.requests += 1
            for resource_metrics in request.resource_metrics:
                instance = str(attributes(resource_metrics.resource.attributes).get("service.instance.id"))
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        for point in _points(metric):
                            key = (metric.name, instance, frozenset(_hashable(point.attributes).items()))
                            self._points[key] = point

    # -- reading ----------------------------------------------------------------------

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def units(self) -> list[Span]:
        return [span for span in self.spans() if "zen.unit.kind" in span.attributes]

    def points(self, metric: str, **match: Any) -> list[Point]:
        """Latest point of every series of ``metric`` whose attributes include ``match``
        (dots in attribute names written as ``__``)."""
        wanted = {key.replace("__", "."): item for key, item in match.items()}
        with self._lock:
            found = [p for (name, _, _), p in self._points.items() if name == metric]
        return [p for p in found if all(p.attributes.get(k) == v for k, v in wanted.items())]

    def total(self, metric: str, **match: Any) -> Point:
        """The sum over processes and series of ``points(metric, **match)``."""
        total = Point(attributes={})
        for point in self.points(metric, **match):
            total.count += point.count
            total.sum += point.sum
            total.value += point.value
        return total

    def metric_names(self) -> set[str]:
        with self._lock:
            return {name for name, _, _ in self._points}

    def wait(self, predicate: Callable[[Receiver], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate(self)`` holds; fail with what arrived if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        names = sorted({span.name for span in self.spans()})
        raise AssertionError(
            f"timed out after {timeout}s; {len(self.spans())} spans ({names}), metrics {sorted(self.metric_names())}"
        )


def _hashable(attrs: dict[str, Any]) -> dict[str, Any]:
    return {key: tuple(item) if isinstance(item, list) else item for key, item in attrs.items()}


def _points(metric: Any) -> Iterator[Point]:
    which = metric.WhichOneof("data")
    if which == "histogram":
        for point in metric.histogram.data_points:
            yield Point(attributes(point.attributes), point.count, point.sum, list(point.bucket_counts))
    elif which == "sum":
        for point in metric.sum.data_points:
            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            yield Point(attributes(point.attributes), value=number)
    elif which == "gauge":
        for point in metric.gauge.data_points:
            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            yield Point(attributes(point.attributes), value=number)


__all__ = ["Point", "Receiver", "Span"]
