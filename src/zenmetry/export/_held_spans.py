"""The DB spans of a unit whose verdict decides their export, made at a fraction of the SDK's cost.

By default (``ZENMETRY_DB_SPANS=detail``) a healthy unit's DB spans are never exported (see
_summary): the unit processor reads their kind, parent, times and a few attributes, and drops
them. The SDK's span would validate and copy every attribute under a lock as it is set, keep
bounded lists of events and links, and copy itself into a ``ReadableSpan`` at its end: about
three quarters of what a DB span costs, for nothing in most units. A ``HeldSpan`` is an SDK span
made by the SDK's own tracer (same sampler, ids, resource, scope and processors) that keeps its
attributes in a plain dict; the few spans that are exported (their unit breached or failed, or
the ratio kept it) are turned into the ``ReadableSpan`` the SDK would have made
(``exportable``), with the span limits applied then, as the SDK applies them as they are set.

Only where that changes nothing anyone sees: in a unit of this process, in ``detail`` mode (or
with nothing exported), on a provider whose one span processor is zenmetry's (another would be
handed spans whose attributes the SDK has not cleaned), with no attribute value length limit
(the SDK would cut the statement the processor shapes) and the SDK's own span metrics off.
Everywhere else the SDK makes its span as usual.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span, Tracer
from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util import types

from zenmetry import _names
from zenmetry.export._sampler import AlwaysRecordSampler

if TYPE_CHECKING:
    from zenmetry.units._processor import UnitProcessor

_CLIENT: Final = SpanKind.CLIENT
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_DEFAULT: Final = TraceFlags(TraceFlags.DEFAULT)
_ALL_ATTRIBUTES: Final = 128  # the SDK's default count limit: a DB span sets far fewer
_sdk_logger = logging.getLogger("opentelemetry.sdk.trace")  # its warnings, as the SDK's span gives them


class HeldSpan(Span):
    """An SDK span whose attributes are a plain dict until it is exported; see the module docstring."""

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        context: SpanContext,
        parent: SpanContext,
        attributes: types.Attributes,
        record_exception: bool,
        set_status_on_exception: bool,
        processor: Any = None,
    ) -> None:
        ReadableSpan.__init__(
            self,
            name,
            context,
            parent,
            tracer.resource,
            kind=_CLIENT,
            instrumentation_scope=tracer._instrumentation_scope,  # noqa: SLF001
        )
        self._instrumentation_info = tracer.instrumentation_info
        self._values: dict[str, Any] = dict(attributes) if attributes else {}
        self._attributes = self._values
        self._sampler = tracer.sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        # The provider's one span processor, zenmetry's (held spans are made only then), called
        # directly rather than through the provider's loop over its processors.
        self._span_processor = processor or tracer.span_processor
        self._limits = tracer._span_limits  # noqa: SLF001
        self._lock = threading.Lock()
        self._events = ()  # a bounded list at the first event
        self._links = ()  # a DB span is started without links
        self._record_end_metrics = None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is None:
            self._values[key] = value
        else:
            _sdk_logger.warning("Setting attribute on ended span.")

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is None:
            self._values.update(attributes)
        else:
            _sdk_logger.warning("Setting attribute on ended span.")

    def _add_event(self, event: Any) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_logger.warning("Tried calling _add_event on an ended span.")
                return
            if not isinstance(self._events, BoundedList):
                self._events = BoundedList(self._limits.max_events)
            self._events.append(event)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
        self._span_processor._on_ending(self)  # noqa: SLF001
        self._span_processor.on_end(self)

    def exportable(self) -> ReadableSpan:
        """The ``ReadableSpan`` the SDK would have made of this span at its end."""
        limits = self._limits
        events = self._events if isinstance(self._events, BoundedList) else BoundedList(limits.max_events)
        return ReadableSpan(
            name=self._name,
            context=self._context,
            parent=self._parent,
            resource=self._resource,
            attributes=BoundedAttributes(
                limits.max_span_attributes,
                self._values,
                immutable=True,
                max_value_len=limits.max_span_attribute_length,
            ),
            events=events,
            links=BoundedList(limits.max_links),
            kind=self._kind,
            status=self._status,
            start_time=self._start_time,
            end_time=self._end_time,
            instrumentation_info=self._instrumentation_info,
            instrumentation_scope=self._instrumentation_scope,
        )


def exportable(span: ReadableSpan, kept: bool = False) -> ReadableSpan:
    """``span`` as the exporting processors are given it; ``kept``: marked ``zen.unit.kept``, its
    unit breached a limit or ended in error (the collector keeps it whatever it samples)."""
    if span.__class__ is HeldSpan:
        if kept:
            span._values[_names.UNIT_KEPT] = True  # noqa: SLF001 - this module's own class
        return span.exportable()
    if not kept:
        return span
    return ReadableSpan(  # the SDK's span, ended and immutable: a copy with the mark
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=BoundedAttributes(None, {**(span.attributes or {}), _names.UNIT_KEPT: True}, immutable=True),
        events=span._events,  # noqa: SLF001 - the SDK's bounded lists: their dropped counts go along
        links=span._links,  # noqa: SLF001
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class HoldingTracer(Tracer):
    """The SDK tracer it is made from (sharing its state), making ``HeldSpan``s where the module
    docstring says and the SDK's spans everywhere else."""

    def __init__(self, tracer: Tracer, processor: UnitProcessor) -> None:
        self.__dict__ = tracer.__dict__  # shared with the SDK tracer: one state, two behaviours
        self._units = processor

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        span = (
            self.held_span(name, context, attributes, links, start_time, record_exception, set_status_on_exception)
            if kind is _CLIENT and not links
            else None
        )
        if span is None:
            return super().start_span(
                name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
            )
        return span

    def held_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span | None:
        """A CLIENT span (``links`` empty), started as a ``HeldSpan`` (or the API's non-recording span
        when the sampler drops it) where the module docstring says; None where the SDK's span is
        due instead."""
        parent = trace.get_current_span(context).get_span_context()
        processor = self._units
        if (
            not processor.holds_under(parent)
            or getattr(self.span_processor, "_span_processors", None) != (processor,)  # another would see it
            or not self._is_enabled()
            or self._span_limits.max_span_attribute_length is not None
            or (self._span_limits.max_span_attributes or _ALL_ATTRIBUTES) < _ALL_ATTRIBUTES  # None: no limit
            or self._tracer_metrics.__class__ is not NoOpTracerMetrics
        ):
            return None
        # As the SDK's tracer does for a span with a valid parent.
        trace_id = parent.trace_id
        sampler = self.sampler
        if sampler.__class__ is AlwaysRecordSampler and _follows_local_parent(sampler.root):
            # zenmetry's default: the configured sampler, ParentBased, follows a local parent's
            # decision (and a DROP is recorded all the same), with the parent's trace state:
            # what asking it gives, without the three look-ups of the current span it makes.
            flags = _SAMPLED if parent.trace_flags.sampled else _DEFAULT
            trace_state: TraceState | None = parent.trace_state
            initial, recording = attributes, True
        else:
            result = sampler.should_sample(context, trace_id, name, _CLIENT, attributes, links)
            flags = _SAMPLED if result.decision.is_sampled() else _DEFAULT  # type: ignore[no-untyped-call]
            trace_state, initial = result.trace_state, result.attributes
            recording = result.decision.is_recording()  # type: ignore[no-untyped-call]
        if parent.trace_flags.random_trace_id:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(trace_id, self.id_generator.generate_span_id(), False, flags, trace_state)
        if not recording:
            return trace.NonRecordingSpan(span_context)
        span = HeldSpan(self, name, span_context, parent, initial, record_exception, set_status_on_exception, processor)
        span.start(start_time=start_time, parent_context=context)
        return span


def _follows_local_parent(sampler: Sampler) -> bool:
    """Whether ``sampler`` decides a child of a local parent by the parent's flag alone: the
    SDK's ``ParentBased`` (``parentbased_*``, the default) with its local delegates as built."""
    return (
        isinstance(sampler, ParentBased)
        and type(sampler).should_sample is ParentBased.should_sample
        and sampler._local_parent_sampled is ALWAYS_ON  # noqa: SLF001
        and sampler._local_parent_not_sampled is ALWAYS_OFF  # noqa: SLF001
    )


def holding(tracer: Any, processor: UnitProcessor) -> Any:
    """``tracer`` making held spans for ``processor``'s units, if it is the SDK's."""
    return HoldingTracer(tracer, processor) if type(tracer) is Tracer else tracer
