"""A small OTLP/HTTP receiver for the tests: real protobuf, decoded with opentelemetry-proto.

It stands where the OpenTelemetry Collector stands for users (no collector runs here). It
keeps every span it receives and, for metrics, the latest cumulative point of every series
of every process (``service.instance.id``), so sums over processes are exact.

It can also misbehave as a collector does, for a whole run or switched mid-test
(``Receiver(mode)``, ``switch(mode)``): refuse connections (nothing listens on its port), accept
and never answer (``BLACK_HOLE``), answer with an error status (``status(503)``), or answer
after a delay (``delay(5)``). ``ANSWER`` is the well-behaved collector.
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


@dataclass(frozen=True)
class Mode:
    """How the receiver treats an export request."""

    name: str
    status: int = 200
    seconds: float = 0.0


ANSWER = Mode("answer")
REFUSE = Mode("refuse")
BLACK_HOLE = Mode("black-hole")


def status(code: int) -> Mode:
    """Read each request, keep nothing, answer ``code`` (503 and 429 are retryable for the SDK)."""
    return Mode(f"status {code}", status=code)


def delay(seconds: float) -> Mode:
    """Answer each request normally, ``seconds`` after it arrived (at once if the mode changes first)."""
    return Mode(f"delay {seconds:g} s", seconds=seconds)


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
    start_ns: int = 0
    end_ns: int = 0

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
    time: int = 0
    """When the SDK collected it (ns)."""


class Receiver:
    """Start with ``with Receiver() as receiver:``; ``receiver.endpoint`` is the OTLP base URL.

    ``keep_raw=True`` keeps every request body as received (decompressed), per path;
    ``keep_spans=False`` only counts spans (long benchmarks).
    """

    def __init__(self, mode: Mode = ANSWER, *, keep_raw: bool = False, keep_spans: bool = True) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        # (metric name, service.instance.id, frozen attributes) -> latest point
        self._points: dict[tuple[str, str, frozenset[tuple[str, Any]]], Point] = {}
        self.requests = 0
        """Export requests answered 200 and kept."""
        self.faulted = 0
        """Export requests that met a fault: answered with an error status, held unanswered, or delayed."""
        self.span_count = 0
        self.raw: dict[str, list[bytes]] = {}
        self.mode = mode
        self._keep_raw = keep_raw
        self._keep_spans = keep_spans
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.endpoint = ""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                mode = receiver.mode
                if mode is not ANSWER:
                    with receiver._lock:
                        receiver.faulted += 1
                if mode is BLACK_HOLE:
                    # Hold the connection unanswered until the mode changes, then drop it.
                    receiver._release.wait()
                    self.close_connection = True
                    return
                if mode.status != 200:
                    self.send_response(mode.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode.seconds:
                    receiver._release.wait(mode.seconds)  # or sooner, once the mode changes
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if receiver._keep_raw:
                    with receiver._lock:
                        receiver.raw.setdefault(self.path, []).append(body)
                if self.path == "/v1/traces":
                    receiver._add_traces(body)
                    reply = ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    receiver._add_metrics(body)
                    reply = ExportMetricsServiceResponse()
                else:
                    reply = ExportLogsServiceResponse()
                payload = reply.SerializeToString()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the exporter gave up waiting (a delayed answer past its timeout)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _listen(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler())
        server.daemon_threads = True
        self._port = server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self._port}"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        # The port is chosen (and held) even when the receiver starts by refusing connections.
        self._listen()
        if self.mode is REFUSE:
            self._close()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._close()

    def switch(self, mode: Mode) -> None:
        """Behave as ``mode`` from now on: connections held by a black hole are dropped
        unanswered, delayed answers are given at once."""
        previous, self.mode = self.mode, mode
        if previous is BLACK_HOLE or previous.seconds:
            self._release.set()
        if mode is BLACK_HOLE or mode.seconds:
            self._release.clear()
        if mode is REFUSE and previous is not REFUSE:
            self._close()
        elif previous is REFUSE and mode is not REFUSE:
            self._listen()

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._points.clear()
            self.raw.clear()

    # -- decoding ---------------------------------------------------------------------

    def _add_traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        if not self._keep_spans:
            counted = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
            with self._lock:
                self.requests += 1
                self.span_count += counted
            return
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
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.span_count += len(spans)
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
                            # A delayed answer can store an older cumulative point after a newer one.
                            if key not in self._points or self._points[key].time <= point.time:
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
            yield Point(
                attributes(point.attributes),
                point.count,
                point.sum,
                list(point.bucket_counts),
                time=point.time_unix_nano,
            )
    elif which == "sum":
        for point in metric.sum.data_points:
            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            yield Point(attributes(point.attributes), value=number, time=point.time_unix_nano)
    elif which == "gauge":
        for point in metric.gauge.data_points:
            number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            yield Point(attributes(point.attributes), value=number, time=point.time_unix_nano)


__all__ = ["ANSWER", "BLACK_HOLE", "REFUSE", "Mode", "Point", "Receiver", "Span", "delay", "status"]
