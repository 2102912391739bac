"""zenmetry's samplers.

``AlwaysRecordSampler`` keeps metrics exact whatever the trace sampler keeps: a sampled-out
span is non-recording and span processors never see it. Wrapping the configured sampler so
that DROP becomes RECORD_ONLY lets the unit processor see every span, while exporters, which
export sampled spans only, still export what the configured sampler chose (AWS's distro does
the same with ``AlwaysRecordSampler``).

``UnitsOnlySampler`` is the test suite's (``zenmetry.testing``): it records units and what
runs inside them, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class AlwaysRecordSampler(Sampler):
    """Delegates to ``root``; turns its DROP into RECORD_ONLY."""

    def __init__(self, root: Sampler) -> None:
        self.root = root

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"AlwaysRecord{{{self.root.get_description()}}}"


class UnitsOnlySampler(Sampler):
    """Record the spans of units and their descendants; drop the rest.

    Tests run many statements outside any request or task (fixtures, transactions, set-up):
    nothing is exported in tests, so those spans are dropped and cost next to nothing.
    """

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind in (SpanKind.SERVER, SpanKind.CONSUMER) or trace.get_current_span(parent_context).is_recording():
            return SamplingResult(Decision.RECORD_ONLY, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "UnitsOnly"
