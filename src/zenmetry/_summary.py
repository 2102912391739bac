"""The export verdict (``ZENMETRY_DB_SPANS``): a healthy unit's DB spans are summarized by its
figures instead of exported one by one.

Every exporting span processor is wrapped in a ``DbSpanGate``. While a unit runs, the unit
processor holds its sampled DB spans (leaves: nothing downstream depends on them) and the gates
let them by; when the unit finishes, the processor releases them to every gate if the unit
breached a limit, ended in error or falls in ``ZENMETRY_DB_SPANS_RATIO`` (decided from the
trace id, so a trace is kept or summarized whole), and forgets them otherwise. Spans that carry
context to another process (external calls, Celery producer spans) are never held.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

MAX_HELD: Final = 1000
"""DB spans held per unit. Past it the unit exports its DB spans as plain OpenTelemetry does:
the held ones are released at its end whatever its verdict, and the rest pass at once."""

_RATIO_SCALE: Final = 1 << 64


def in_ratio(trace_id: int, ratio: float) -> bool:
    """Whether a trace falls in ``ratio``: its id's lower 64 bits, as ``TraceIdRatioBased`` decides."""
    return (trace_id & (_RATIO_SCALE - 1)) < ratio * _RATIO_SCALE


class DbSpanGate(SpanProcessor):
    """Wraps an exporting processor: spans held by the unit processor do not reach it until released."""

    def __init__(self, export: SpanProcessor, held: set[int]) -> None:
        self.export = export
        self._held = held

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.export.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span._context[1] not in self._held:  # type: ignore[index] # the span id (see _processor)
            self.export.on_end(span)

    def release(self, spans: Iterable[ReadableSpan]) -> None:
        """A unit's verdict is "exported": its held DB spans go to the exporter."""
        for span in spans:
            self.export.on_end(span)

    def shutdown(self) -> None:
        self.export.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.export.force_flush(timeout_millis)
