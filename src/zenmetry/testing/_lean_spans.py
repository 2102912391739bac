"""A lean tracer for the test suite: the spans the instrumentations make, at a fraction of the SDK's cost.

``zenmetry.testing`` exports nothing: it needs the spans only to feed the unit processor, which
reads their kind, parent, scope, times and attributes. The SDK's spans also validate and copy
every attribute under a lock, keep events, links, limits, resources and a sampler's result;
measured on a Django test suite, that was a third of the plugin's cost per test. These spans keep
what the processor reads, and follow the SDK where the instrumentations can tell (ids, parent,
``is_recording``, ending once, nothing written after the end).

Which spans are recorded is the test suite's ``UnitsOnlySampler`` rule: units (SERVER spans, and
CONSUMER spans, which the processor tells apart) and every span started inside a recording one;
the others are the API's invalid span, which costs nothing and propagates nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue

_UNITS = (SpanKind.SERVER, SpanKind.CONSUMER)
_RECORDED = TraceFlags(0)  # recorded, not sampled: nothing is exported in tests
_RESOURCE = Resource.get_empty()


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span: name, kind, parent, times, attributes and status; events are not kept."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        scope: InstrumentationScope,
        attributes: Attributes,
        start_time: int | None,
        processors: Sequence[SpanProcessor],
    ) -> None:
        self._values: dict[str, Any] = dict(attributes) if attributes else {}
        super().__init__(
            name,
            context,
            parent,
            _RESOURCE,
            self._values,
            kind=kind,
            start_time=start_time or time.time_ns(),
            instrumentation_scope=scope,
        )
        self._processors = processors

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always set here

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self._end_time is None:
            self._values[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._end_time is None:
            self._values.update(attributes)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        pass  # nothing in a test reads them: the finished unit carries what they say

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        pass

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is None:
            self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        pass

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        for processor in self._processors:
            processor.on_end(self)

    def __repr__(self) -> str:
        return f"LeanSpan(name={self._name!r}, kind={self._kind}, span_id={self.get_span_context().span_id:016x})"


class LeanTracer(trace.Tracer):
    def __init__(self, scope: InstrumentationScope, processors: list[SpanProcessor]) -> None:
        self._scope = scope
        self._processors = processors

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent_span = trace.get_current_span(context)
        if kind not in _UNITS and not parent_span.is_recording():
            return INVALID_SPAN
        parent: SpanContext | None = parent_span.get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
        else:
            parent, trace_id = None, random.getrandbits(128)  # ids, not secrets
        span_context = SpanContext(trace_id, random.getrandbits(64), False, _RECORDED)
        span = LeanSpan(name, span_context, parent, kind, self._scope, attributes, start_time, self._processors)
        for processor in self._processors:
            processor.on_start(span, context)  # type: ignore[arg-type]  # they read what ReadableSpan has
        return span

    def start_as_current_span(  # type: ignore[override]  # a context manager object, not a generator
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _Current:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        return _Current(span, end_on_exit, record_exception, set_status_on_exception)


class _Current:
    """``start_as_current_span``'s context manager: what ``trace.use_span`` does, without a
    generator. A span not recorded is not made current (the current one is as unrecorded)."""

    __slots__ = ("_end", "_record", "_span", "_status", "_token")

    def __init__(self, span: trace.Span, end: bool, record: bool, status: bool) -> None:
        self._span, self._end, self._record, self._status = span, end, record, status
        self._token: object = None

    def __enter__(self) -> trace.Span:
        if self._span is not INVALID_SPAN:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        span = self._span
        if span is INVALID_SPAN:
            return
        try:
            if isinstance(error, Exception) and span.is_recording():
                if self._record:
                    span.record_exception(error)
                if self._status:
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            if self._end:
                span.end()


class LeanTracerProvider(trace.TracerProvider):
    """Hands out ``LeanTracer``s feeding the span processors added to it."""

    def __init__(self) -> None:
        self._processors: list[SpanProcessor] = []

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self._processors.append(processor)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        scope = InstrumentationScope(instrumenting_module_name, instrumenting_library_version, schema_url)
        return LeanTracer(scope, self._processors)
