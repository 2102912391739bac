"""The unit processor: the one place that keeps per-unit state.

It sees every span start and end. A SERVER span opens an ``http`` unit and the Celery
``run/<task>`` CONSUMER span a ``task`` unit; every span started while a unit is open, in
the same process and trace, belongs to it and to every unit enclosing it. When a DB or
external call ends it is added to its units. ``finish()``, called by the Django and Celery
hooks while the unit span is still open (a span cannot be changed once ``end()`` has
begun), writes the figures and breach events on the span, records the metrics and prints
the console line; a unit span that ends without a hook still gets its metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Final

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Span as ApiSpan
from opentelemetry.trace import SpanKind

from zenmetry import _console, _guard, _memory, _names
from zenmetry._findings import Finding
from zenmetry._limits import Limits
from zenmetry._metrics import Attributes, Instruments
from zenmetry._settings import Settings
from zenmetry._shapes import NO_SHAPE, sql_shape
from zenmetry._spans import plain_attributes
from zenmetry._units import FinishedUnit, OpenUnit, breaches

CELERY_SCOPE: Final = "opentelemetry.instrumentation.celery"
_TASK_PREFIX: Final = "run/"

Listener = Callable[[FinishedUnit], None]
"""Called with every finished unit."""

# Module-level names are faster to reach than attributes of _names on the hot path.
_DB_SYSTEM: Final = _names.DB_SYSTEM
_DB_SYSTEM_NAME: Final = _names.DB_SYSTEM_NAME
_DB_STATEMENT: Final = _names.DB_STATEMENT
_DB_QUERY_TEXT: Final = _names.DB_QUERY_TEXT
_HTTP_REQUEST_METHOD: Final = _names.HTTP_REQUEST_METHOD
_HTTP_METHOD_OLD: Final = _names.HTTP_METHOD_OLD
_SERVER: Final = SpanKind.SERVER
_CONSUMER: Final = SpanKind.CONSUMER
_CLIENT: Final = SpanKind.CLIENT


class UnitProcessor(SpanProcessor):
    """Aggregates each unit's DB and external calls; see the module docstring.

    ``keep_statements=True`` keeps every DB call of every unit in order, and
    ``record_metrics=False`` records no metric (both for the pytest plugin, which checks units
    in memory and exports nothing); production leaves them as they are.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        keep_statements: bool = False,
        record_metrics: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self._record_metrics = record_metrics
        self._meter_provider = meter_provider
        # Created at the first finished unit: the configurator builds the meter provider
        # after the span processors (``_initialize_components``).
        self._instruments: Instruments | None = None
        self._keep_statements = keep_statements
        # span id -> the units it belongs to, innermost last; an entry lives while its span
        # is open. A dict update is atomic under the GIL, so no lock is needed.
        self._open: dict[int, tuple[OpenUnit, ...]] = {}
        # span id -> shape, for DB calls whose statement attribute is unreliable (MongoDB).
        self._shapes: dict[int, tuple[str, str]] = {}
        # External-call spans already reported without a timeout (redirects and retries of one
        # call pass the check again).
        self._no_timeout: set[int] = set()
        # Connections found without timeouts, reported on the next unit this process finishes.
        self._findings: list[Finding] = []
        self.listeners: list[Listener] = []

    # -- the hot path ------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            parent = span.parent
            enclosing = self._open.get(parent.span_id) if parent is not None and not parent.is_remote else None
            kind = span.kind
            if kind is _SERVER:
                unit_kind = _names.KIND_HTTP
            elif kind is _CONSUMER and span.instrumentation_scope.name == CELERY_SCOPE:  # type: ignore[union-attr]
                unit_kind = _names.KIND_TASK
            else:
                if enclosing is not None:
                    self._open[span.context.span_id] = enclosing
                return
            span_id = span.context.span_id
            unit = OpenUnit(unit_kind, span, span.start_time or time.time_ns(), _memory.rss())
            if self._keep_statements:
                unit.statements = []
            self._open[span_id] = (*enclosing, unit) if enclosing else (unit,)
        except Exception:  # noqa: BLE001
            _guard.swallow("on_start")

    def on_end(self, span: ReadableSpan) -> None:
        try:
            span_id = span.context.span_id
            units = self._open.pop(span_id, None)
            if units is None:
                return
            if self._no_timeout:
                self._no_timeout.discard(span_id)
            if span.kind is _CLIENT:
                self._add_call(span, span_id, units)
            elif units[-1].span_id == span_id and not units[-1].finished:
                self._complete(units[-1], None, *_from_ended(span), None)
        except Exception:  # noqa: BLE001
            _guard.swallow("on_end")

    def _add_call(self, span: ReadableSpan, span_id: int, units: tuple[OpenUnit, ...]) -> None:
        attributes = plain_attributes(span)
        duration = (span.end_time or 0) - (span.start_time or 0)
        system = attributes.get(_DB_SYSTEM_NAME) or attributes.get(_DB_SYSTEM)
        if system:
            shape = self._shapes.pop(span_id, None) if self._shapes else None
            if shape is None:
                statement = attributes.get(_DB_QUERY_TEXT) or attributes.get(_DB_STATEMENT)
                if statement.__class__ is str and statement:
                    shape = sql_shape(statement, system)
                elif statement.__class__ is bytes and statement:
                    shape = sql_shape(statement.decode("utf-8", "replace"), system)
            elif shape is NO_SHAPE:
                shape = None
            for unit in units:
                if not unit.finished:
                    unit.add_db(system, duration, shape)
        elif _HTTP_REQUEST_METHOD in attributes or _HTTP_METHOD_OLD in attributes:
            for unit in units:
                if not unit.finished:
                    unit.add_external(duration)

    # -- called by the hooks, once per unit ----------------------------------------------

    def unit(self, span: ApiSpan) -> OpenUnit | None:
        """The unit ``span`` opened, if it opened one and it is not finished."""
        span_id = span.get_span_context().span_id
        units = self._open.get(span_id)
        if units is None or units[-1].span_id != span_id or units[-1].finished:
            return None
        return units[-1]

    def note_shape(self, span: ApiSpan, shape: tuple[str, str]) -> None:
        """Give a DB call's shape when its statement attribute cannot be trusted (MongoDB)."""
        span_id = span.get_span_context().span_id
        if span_id in self._open:
            self._shapes[span_id] = shape

    def note_no_timeout(self, span: ApiSpan, method: str, address: str) -> None:
        """Count an external call made without a timeout, with an event on its span (or on the
        innermost unit's span when the call has no span of its own)."""
        try:
            span_id = span.get_span_context().span_id
            units = self._open.get(span_id, ())
            is_call = getattr(span, "kind", None) is _CLIENT
            if is_call and units:
                # Remembered until the call's span ends (on_end forgets it): only spans of a
                # unit, whose end on_end sees, are remembered.
                if span_id in self._no_timeout:
                    return
                self._no_timeout.add(span_id)
            target = span if is_call and span.is_recording() else (units[-1].span if units else None)
            if target is not None and target.is_recording():
                target.add_event(
                    _names.EVENT_NO_TIMEOUT, {_names.HTTP_REQUEST_METHOD: method, _names.SERVER_ADDRESS: address}
                )
            for unit in units:
                if not unit.finished:
                    unit.no_timeout += 1
        except Exception:  # noqa: BLE001
            _guard.swallow("note_no_timeout")

    def note_config(self, finding: Finding) -> None:
        """Report a connection without timeouts as an event on the next finished unit."""
        self._findings.append(finding)

    def finish(self, span: ApiSpan, name: str, point: Attributes, override: Limits | None = None) -> None:
        """Finish the unit ``span`` opened, while the span can still be written to."""
        try:
            unit = self.unit(span)
            if unit is not None:
                self._complete(unit, span, name, point, override)
        except Exception:  # noqa: BLE001
            _guard.swallow("finish")

    def _complete(
        self, unit: OpenUnit, span: ApiSpan | None, name: str, point: Attributes, override: Limits | None
    ) -> None:
        unit.finished = True
        figures = unit.figures(name, time.time_ns(), _memory.rss())
        budget = self.settings.budgets.resolve(unit.kind, name, override)
        finished = FinishedUnit(figures, point, budget, tuple(breaches(budget, figures)), unit.span_id)
        if span is not None and span.is_recording():
            _write(span, finished)
            if self._findings:
                findings, self._findings = self._findings, []
                for finding in findings:
                    span.add_event(
                        _names.EVENT_CONFIG_NO_TIMEOUT,
                        {
                            _names.DB_SYSTEM: finding.system,
                            _names.CONFIG_SOURCE: finding.source,
                            _names.CONFIG_MISSING: list(finding.missing),
                        },
                    )
        if self._record_metrics:
            if self._instruments is None:
                self._instruments = Instruments(self._meter_provider)
            self._instruments.record(finished)
        if self.settings.console:
            _console.write(_console.line(finished))
        for listener in self.listeners:
            listener(finished)

    # -- for zenmetry.testing and the test suite -------------------------------------------

    def keep_statements(self) -> None:
        """Keep every DB call of every unit started from now on, in order (``Figures.statements``)."""
        self._keep_statements = True

    def use_meter_provider(self, meter_provider: MeterProvider | None) -> None:
        """Record the metrics of units finished from now on with ``meter_provider``."""
        self._meter_provider = meter_provider
        self._instruments = None

    def forget_findings(self) -> None:
        """Drop the connection findings not yet reported on a unit."""
        self._findings.clear()

    def tracked_spans(self) -> int:
        """Spans of open units the processor still tracks (0 once every span has ended)."""
        return len(self._open)

    def shutdown(self) -> None:
        self._open.clear()
        self._shapes.clear()
        self._no_timeout.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _write(span: ApiSpan, unit: FinishedUnit) -> None:
    figures, source, found = unit.figures, unit.budget.source, unit.breaches
    attributes: dict[str, str | int | float | list[str]] = {
        _names.UNIT_KIND: figures.kind,
        _names.UNIT_NAME: figures.name,
        _names.DB_QUERIES: figures.queries,
        _names.DB_DURATION_MS: figures.db_duration_ms,
        _names.DB_REPEATED_MAX: figures.repeated_max,
        _names.EXTERNAL_CALLS: figures.external_calls,
        _names.EXTERNAL_DURATION_MS: figures.external_duration_ms,
        _names.EXTERNAL_NO_TIMEOUT: figures.no_timeout,
        _names.MEMORY_RSS_DELTA: figures.rss_delta_bytes,
        _names.DURATION_MS: figures.duration_ms,
        _names.BUDGET: source,
    }
    for system, (count, duration_ms) in figures.systems.items():
        attributes[_names.db_system_queries(system)] = count
        attributes[_names.db_system_duration_ms(system)] = duration_ms
    if found:
        attributes[_names.BUDGET_BREACHED] = [breach.limit for breach in found]
    span.set_attributes(attributes)
    for breach in found:
        span.add_event(
            _names.EVENT_BREACH,
            {
                _names.LIMIT: breach.limit,
                _names.LIMIT_VALUE: breach.value,
                _names.ACTUAL: breach.actual,
                _names.BUDGET: source,
            },
        )
    repeated_limit = unit.budget.limit("repeated_queries")
    if repeated_limit:
        for repetition in figures.repetitions:
            if repetition.count <= repeated_limit:
                break
            span.add_event(
                _names.EVENT_REPEATED_QUERY,
                {
                    _names.STATEMENT_FINGERPRINT: repetition.text,
                    _names.COUNT: repetition.count,
                    _names.DB_SYSTEM: repetition.system,
                },
            )


def _from_ended(span: ReadableSpan) -> tuple[str, dict[str, str | int]]:
    """Name and point attributes of a unit whose span ended without a zenmetry hook."""
    attributes: Mapping[str, object] = span.attributes or {}
    if span.kind is _SERVER:
        name = str(attributes.get(_names.HTTP_ROUTE) or _names.UNMATCHED)
        method = attributes.get(_names.HTTP_REQUEST_METHOD) or attributes.get(_names.HTTP_METHOD_OLD) or "_OTHER"
        status = attributes.get(_names.HTTP_RESPONSE_STATUS_CODE) or attributes.get(_names.HTTP_STATUS_CODE_OLD) or 0
        return name, {_names.HTTP_REQUEST_METHOD: str(method), _names.HTTP_RESPONSE_STATUS_CODE: int(str(status))}
    name = span.name[len(_TASK_PREFIX) :] if span.name.startswith(_TASK_PREFIX) else span.name
    return name, {_names.CELERY_STATE: str(attributes.get(_names.CELERY_STATE) or "UNKNOWN")}
