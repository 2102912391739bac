"""The export gate: a span processor in front of the exporting processors that holds a unit's DB
spans until the unit's verdict (``ZENMETRY_DB_SPANS``), and passes every other span on.

A healthy unit's DB spans are summarized by its figures instead of exported one by one. While a
unit runs, the unit processor hands the gate each of its sampled DB spans as it ends (``pass_db``):
the gate holds it (``detail``) or lets it through with its statement already replaced by its
shape (the export guard then has nothing to find again). When the unit finishes, the gate gives
its ``verdict``: ``exported`` if the unit breached a limit, ended in error or falls in
``ZENMETRY_DB_SPANS_RATIO`` (decided from the trace id, so a trace is kept or summarized whole),
``summarized`` otherwise; ``settle`` then releases the held spans to every exporting processor,
hands them to the enclosing unit (an eager task's spans go with its request's verdict), or
forgets them. A unit's other spans (its calls to other services, spans of the application's
own) are held too in ``detail`` mode, and always released with the verdict: a kept unit's
spans then all carry ``zen.unit.kept`` for the collector.

The shape of the SDK's ``SimpleSpanProcessor``: one job, check and hand off. The unit processor
calls it directly (the provider calls one processor per span instead of two: three calls per
span fewer, where a DB span costs zenmetry about twenty).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from zenmetry import _names
from zenmetry.config._settings import Settings
from zenmetry.export._held_spans import exportable
from zenmetry.export._scrub import scrub_statement
from zenmetry.units._figures import failed

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from zenmetry.units._figures import OpenUnit

MAX_HELD: Final = 1000
"""DB spans held per unit, and other spans likewise. Past it the unit exports its DB spans as plain
OpenTelemetry does (the held ones are released at its end whatever its verdict, and the rest pass
at once); its other spans past it pass at once, unmarked."""

_RATIO_SCALE: Final = 1 << 64
# The SDK's exporting processors do nothing at a span's start and ending: not called.
_QUIET: Final = (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
_NO_OP_STARTS: Final = frozenset(kind.on_start for kind in _QUIET)
_NO_OP_ENDINGS: Final = frozenset(kind._on_ending for kind in _QUIET)


def in_ratio(trace_id: int, ratio: float) -> bool:
    """Whether a trace falls in ``ratio``: its id's lower 64 bits, as ``TraceIdRatioBased`` decides."""
    return (trace_id & (_RATIO_SCALE - 1)) < ratio * _RATIO_SCALE


class ExportGate(SpanProcessor):
    """Passes spans on to the exporting processors it was given (``add``), but a unit's held DB
    spans, which wait for the unit's verdict; see the module docstring."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._exports: list[SpanProcessor] = []
        self.starts: list[SpanProcessor] = []
        """The exporting processors that want ``on_start`` (the unit processor calls the gate's
        only when there is one: the SDK's batch and simple processors do not)."""
        self.endings: list[SpanProcessor] = []
        """Those that want ``_on_ending``."""
        self.held: set[int] = set()
        """The span ids of the spans held for their unit's verdict."""
        # Holding and settling a unit's lists: a thread that outlives its unit may end a span
        # while the unit settles. Uncontended, about 0.05 us a span.
        self._lock = threading.Lock()

    def add(self, export: SpanProcessor) -> int:
        """Pass spans on to ``export``, an exporting processor; returns how many it now feeds."""
        self._exports.append(export)
        if type(export).on_start not in _NO_OP_STARTS:
            self.starts.append(export)
        if type(export)._on_ending not in _NO_OP_ENDINGS:
            self.endings.append(export)
        return len(self._exports)

    def exporting(self) -> bool:
        """Whether any exporting processor is fed."""
        return bool(self._exports)

    def holds(self) -> bool:
        """Whether a unit's DB spans wait for its verdict: ``detail`` mode, or nothing exported at all."""
        return not self._exports or self.settings.db_spans == "detail"

    # -- every span ----------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for export in self.starts:
            export.on_start(span, parent_context)

    def _on_ending(self, span: Span) -> None:
        for export in self.endings:
            export._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        if self._exports and span._context[1] not in self.held:  # type: ignore[index]
            span = exportable(span)
            for export in self._exports:
                export.on_end(span)

    # -- a unit's DB spans -----------------------------------------------------------------

    def pass_db(
        self, span: ReadableSpan, unit: OpenUnit, attributes: Mapping[str, Any], statement: object, text: str | None
    ) -> None:
        """A DB span of ``unit`` has ended: hold it for the unit's verdict, or (passing now) put
        its statement's shape ``text`` in place of the statement."""
        if not self._exports or not span._context[3].sampled:  # type: ignore[index]
            return
        if not self._hold(span, unit) and statement is not None and text is not None:
            scrub_statement(span, attributes, statement, text)

    def _hold(self, span: ReadableSpan, unit: OpenUnit) -> bool:
        if unit.overflow or self.settings.db_spans != "detail":
            return False
        with self._lock:
            if unit.finished:
                return False
            held = unit.db_spans
            if held is None:
                held = unit.db_spans = []
            elif len(held) >= MAX_HELD:
                unit.overflow = True  # from now on its DB spans pass, and the held ones go at its end
                return False
            held.append(span)
            self.held.add(span._context[1])  # type: ignore[index]
        return True

    def hold_other(self, span: ReadableSpan, unit: OpenUnit) -> None:
        """Another span of ``unit`` has ended (a call to another service, a span of the
        application's own): in ``detail`` mode, hold it to leave with the unit's verdict, so that
        a kept unit's spans all say so (``zen.unit.kept``). It is released whatever the verdict."""
        if not self._exports or self.settings.db_spans != "detail" or not span._context[3].sampled:  # type: ignore[index]
            return
        with self._lock:
            if unit.finished:
                return
            held = unit.other_spans
            if held is None:
                held = unit.other_spans = []
            elif len(held) >= MAX_HELD:
                return  # passes now, unmarked
            held.append(span)
            self.held.add(span._context[1])  # type: ignore[index]

    def verdict(self, unit: OpenUnit, point: Mapping[str, str | int], breached: bool, hooked: bool) -> str:
        """``exported`` or ``summarized``, for the unit's DB spans."""
        if not self._exports or self.settings.db_spans != "detail" or unit.overflow or breached or not hooked:
            return _names.DB_SPANS_EXPORTED
        if failed(point):
            return _names.DB_SPANS_EXPORTED
        if in_ratio(unit.span.get_span_context().trace_id, self.settings.db_spans_ratio):
            return _names.DB_SPANS_EXPORTED
        return _names.DB_SPANS_SUMMARIZED

    def settle(self, unit: OpenUnit, verdict: str, kept: bool = False) -> None:
        """Release the unit's held spans to the exporters (marked ``zen.unit.kept`` when the unit
        is): its other spans always, its DB spans when the verdict exports them; or hand them to
        the enclosing unit's verdict (an eager task's spans go with its request's); or forget its
        DB spans."""
        with self._lock:
            held, unit.db_spans = unit.db_spans or [], None
            others, unit.other_spans = unit.other_spans or [], None
            if not held and not others:
                return
            enclosing = unit.enclosing
            if not kept and enclosing is not None and not enclosing.finished:
                if verdict == _names.DB_SPANS_SUMMARIZED and held:
                    enclosing.db_spans = [*(enclosing.db_spans or ()), *held]
                    held = []
                if others and len(others) + len(enclosing.other_spans or ()) <= MAX_HELD:
                    enclosing.other_spans = [*(enclosing.other_spans or ()), *others]
                    others = []
            released = [*others, *held] if verdict == _names.DB_SPANS_EXPORTED else others
            self.held.difference_update(span.context.span_id for span in (*others, *held))
        spans = [exportable(span, kept) for span in released]
        for export in self._exports:
            for span in spans:
                export.on_end(span)

    def shutdown(self) -> None:
        self.held.clear()
        for export in self._exports:
            export.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all([export.force_flush(timeout_millis) for export in self._exports])  # noqa: C419 - flush every one
