"""The unit processor: the one place that keeps per-unit state.

It sees every span start and end. A SERVER span opens an ``http`` unit and the Celery
``run/<task>`` CONSUMER span a ``task`` unit; every span started while a unit is open, in
the same process and trace, belongs to it and to every unit enclosing it. When a DB or
external call ends it is added to its units. ``finish()``, called by the Django and Celery
hooks while the unit span is still open (a span cannot be changed once ``end()`` has
begun), freezes the figures into one ``FinishedUnit`` and hands it, with the span, to every
listener it was given (``zenmetry.outputs``: the span writer, the metrics, the console line;
in a test suite, ``zenmetry.testing``'s recorder); a unit span that ends without a hook is
finished all the same, its span then past writing.

What is exported is the export gate's business (``zenmetry.export._gate``): the processor
hands it every span once its own work is done, and asks it for a unit's verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from threading import get_ident
from typing import Any, Final, Protocol, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Span as ApiSpan
from opentelemetry.trace import SpanContext, SpanKind

from zenmetry import _guard, _names
from zenmetry.config._limits import Limits
from zenmetry.config._settings import Settings
from zenmetry.units import _callsite, _memory
from zenmetry.units._figures import NEVER, FinishedUnit, OpenUnit, breaches
from zenmetry.units._memtrace import MemoryTracer
from zenmetry.units._no_timeout import Finding
from zenmetry.units._shapes import round_trip, sql_shape
from zenmetry.units._spans import plain_attributes

logger = logging.getLogger("zenmetry")

CELERY_SCOPE: Final = "opentelemetry.instrumentation.celery"
_TASK_PREFIX: Final = "run/"

T = TypeVar("T")
Listener = Callable[[FinishedUnit, Any], None]
"""Called with every finished unit and its span (``zenmetry.outputs.Listener``)."""
Attributes = Mapping[str, str | int]


class Gate(Protocol):
    """What the processor hands spans on to: the export gate (``zenmetry.export._gate``)."""

    starts: list[SpanProcessor]
    """The exporting processors that want ``on_start`` (empty: no call is made per span)."""
    endings: list[SpanProcessor]
    """Those that want ``_on_ending``."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None: ...

    def _on_ending(self, span: Span) -> None: ...

    def on_end(self, span: ReadableSpan) -> None: ...

    def pass_db(
        self, span: ReadableSpan, unit: OpenUnit, attributes: Mapping[str, Any], statement: object, text: str | None
    ) -> None: ...

    def holds(self) -> bool: ...

    def verdict(self, unit: OpenUnit, point: Attributes, breached: bool, hooked: bool) -> str: ...

    def hold_other(self, span: ReadableSpan, unit: OpenUnit) -> None: ...

    def settle(self, unit: OpenUnit, verdict: str, kept: bool = False) -> None: ...

    settings: Settings

    def shutdown(self) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...


# Module-level names are faster to reach than attributes of _names on the hot path.
_DB_SYSTEM: Final = _names.DB_SYSTEM
_DB_SYSTEM_NAME: Final = _names.DB_SYSTEM_NAME
_DB_STATEMENT: Final = _names.DB_STATEMENT
_DB_QUERY_TEXT: Final = _names.DB_QUERY_TEXT
_HTTP_REQUEST_METHOD: Final = _names.HTTP_REQUEST_METHOD
_HTTP_METHOD_OLD: Final = _names.HTTP_METHOD_OLD
_MAX_NO_TIMEOUT_SITES: Final = 10
_SERVER: Final = SpanKind.SERVER
_CONSUMER: Final = SpanKind.CONSUMER
_CLIENT: Final = SpanKind.CLIENT
_INTERNAL: Final = SpanKind.INTERNAL
_COMMAND_SCOPE: Final = _names.COMMAND_SCOPE
_TASK_SCOPES: Final = (CELERY_SCOPE, _names.DJANGO_TASKS_SCOPE)
_EXPORTED: Final = _names.DB_SPANS_EXPORTED


class UnitProcessor(SpanProcessor):
    """Aggregates each unit's DB and external calls; see the module docstring.

    ``listeners`` consume each finished unit (``zenmetry.outputs.listeners()`` in production);
    ``gate`` is the export gate the spans go on to (None: nothing is exported from here);
    ``keep_statements`` keeps every DB call of every unit in order (``Figures.statements``, for
    the test report and snapshots).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        listeners: Sequence[Listener] = (),
        gate: Gate | None = None,
        keep_statements: bool = False,
    ) -> None:
        self._gate = gate
        self.settings = settings or Settings()
        self.listeners: list[Listener] = list(listeners)
        self._keep_statements = keep_statements
        # span id -> the units it belongs to, innermost last; an entry lives while its span
        # is open. A dict update is atomic under the GIL, so no lock is needed.
        self._open: dict[int, tuple[OpenUnit, ...]] = {}
        # span id -> shape, for DB calls whose statement attribute is unreliable (MongoDB) or that
        # are round trips of the driver's own.
        self._shapes: dict[int, tuple[str, str]] = {}
        # External-call spans already reported without a timeout (redirects and retries of one
        # call pass the check again).
        self._no_timeout: set[int] = set()
        # Connections found without timeouts, reported on the next unit this process finishes.
        self._findings: list[Finding] = []
        # The units open in this process, by span id: the memory tracer runs only alone, and
        # a unit that runs beside another has a shared memory figure.
        self._units_open: dict[int, OpenUnit] = {}
        # A unit's running figures are updated under this lock: the threads a unit starts (an
        # executor fanning its queries out) end their DB spans at the same moment, and
        # ``queries += 1`` is no atomic update. Uncontended, it costs about 0.05 us a call.
        self._lock = threading.Lock()
        self._tracer = MemoryTracer()
        # Threads setting a database connection up (``setting_up``), with their depth.
        self._setting_up: dict[int, int] = {}

    @property
    def settings(self) -> Settings:
        """The settings units are measured and checked by (the export gate's too)."""
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings = settings
        if self._gate is not None:
            self._gate.settings = settings

    # -- the hot path ------------------------------------------------------------------

    # The hot path reads the SDK's span fields (``_parent``, ``_kind``, ``_context``, ``_start_time``,
    # ``_end_time``) and a SpanContext's items (``[1]`` span id, ``[2]`` is_remote) instead of
    # their properties: a property is a function call, and these run for every span. The SDK
    # sets them in ``ReadableSpan.__init__`` (were one renamed, every unit test would fail).

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        gate = self._gate
        if gate is not None and gate.starts:  # outside the guard: what an exporting processor raises is its own
            gate.on_start(span, parent_context)
        try:
            parent = span._parent
            enclosing = self._open.get(parent[1]) if parent is not None and not parent[2] else None
            kind = span._kind
            if kind is _SERVER:
                unit_kind = _names.KIND_HTTP
            elif kind is _CONSUMER and span.instrumentation_scope.name in _TASK_SCOPES:  # type: ignore[union-attr]
                unit_kind = _names.KIND_TASK
            elif kind is _INTERNAL and span.instrumentation_scope.name == _COMMAND_SCOPE:  # type: ignore[union-attr]
                unit_kind = _names.KIND_COMMAND
            else:
                if enclosing is not None:
                    self._open[span._context[1]] = enclosing  # type: ignore[index]
                return
            span_id = span._context[1]  # type: ignore[index]
            unit = OpenUnit(unit_kind, span, span.start_time or time.time_ns(), _memory.rss())
            if self._keep_statements:
                unit.statements = []
            if enclosing:
                unit.enclosing = enclosing[-1]
            self._open[span_id] = (*enclosing, unit) if enclosing else (unit,)
            with self._lock:
                for other in self._units_open.values():
                    if not enclosing or other not in enclosing:  # an enclosing unit's memory holds this one's
                        other.shared = unit.shared = True
                self._units_open[span_id] = unit
            self._tracer.another_unit_opened()
        except Exception:  # noqa: BLE001
            _guard.swallow("on_start")

    def _on_ending(self, span: Span) -> None:
        gate = self._gate
        if gate is not None and gate.endings:
            gate._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        span_id = span._context[1]  # type: ignore[index]
        try:
            units = self._open.pop(span_id, None)
            if units is not None:
                if self._no_timeout:
                    self._no_timeout.discard(span_id)
                if span._kind is _CLIENT:
                    self._add_call(span, span_id, units)
                elif units[-1].span_id == span_id:
                    if not units[-1].finished:
                        self._complete(units[-1], None, *_from_ended(span), None)
                elif self._gate is not None:
                    self._gate.hold_other(span, units[-1])
        except Exception:  # noqa: BLE001
            _guard.swallow("on_end")
        if self._gate is not None:
            self._gate.on_end(span)

    def _add_call(self, span: ReadableSpan, span_id: int, units: tuple[OpenUnit, ...]) -> None:
        attributes = plain_attributes(span)
        duration = (span._end_time or 0) - (span._start_time or 0)
        system = attributes.get(_DB_SYSTEM_NAME) or attributes.get(_DB_SYSTEM)
        if system:
            statement = None
            shape = self._shapes.pop(span_id, None) if self._shapes else None
            if shape is None:
                statement = attributes.get(_DB_QUERY_TEXT) or attributes.get(_DB_STATEMENT)
                if self._setting_up and get_ident() in self._setting_up:
                    # Django setting a connection up through the raw driver: not logged, no query.
                    shape, statement = round_trip(statement if statement.__class__ is str else ""), None
                elif statement.__class__ is str and statement:
                    shape = sql_shape(statement, system)
                elif statement.__class__ is bytes and statement:
                    shape = sql_shape(statement.decode("utf-8", "replace"), system)
                else:
                    statement = None
            with self._lock:
                for unit in units:
                    if not unit.finished:
                        count = unit.add_db(system, duration, shape)
                        # One comparison each on the hot path; past them, a limit may be crossed.
                        if count == unit.repeated_crossing or duration > unit.slow_ns:
                            self._crossed(unit, count, system, duration, shape)
            if self._gate is not None:
                # Held for the unit's verdict, or passed with its statement replaced by its shape
                # here, where the shape is at hand, rather than found again by the export guard.
                self._gate.pass_db(span, units[-1], attributes, statement, shape[1] if shape else None)
        else:
            self._add_other(span, attributes, units, duration)

    def _add_other(
        self, span: ReadableSpan, attributes: Mapping[str, Any], units: tuple[OpenUnit, ...], duration: int
    ) -> None:
        """A client span that is no DB call: an external call when it is HTTP; held with its unit."""
        if _HTTP_REQUEST_METHOD in attributes or _HTTP_METHOD_OLD in attributes:
            with self._lock:
                for unit in units:
                    if not unit.finished:
                        unit.add_external(duration)
        if self._gate is not None:
            self._gate.hold_other(span, units[-1])

    def holds_under(self, parent: SpanContext) -> bool:
        """Whether a DB span started under ``parent`` may be a held span (``export._held_spans``):
        its parent is a span of a unit of this process, and the unit's verdict decides its export
        (or nothing is exported at all)."""
        return not parent[2] and parent[1] in self._open and (self._gate is None or self._gate.holds())

    def _crossed(self, unit: OpenUnit, count: int, system: str, duration: int, shape: tuple[str, str] | None) -> None:
        """A DB call that may cross a limit: the offending call is still on the stack, walk it now.
        A unit's first DB call comes here once, to resolve its limits (``OpenUnit`` starts so)."""
        if not unit.limits_resolved:
            self._resolve_limits(unit)
        repeated, slow = count == unit.repeated_crossing, duration > unit.slow_ns
        if repeated or slow:
            site = _callsite.take()
            if repeated and shape is not None:
                unit.sites[(system, shape[0])] = site
            if slow:
                unit.add_slow(system, shape, duration, site)

    # -- called by the hooks, once per unit ----------------------------------------------

    def unit(self, span: ApiSpan) -> OpenUnit | None:
        """The unit ``span`` opened, if it opened one and it is not finished."""
        span_id = span.get_span_context().span_id
        units = self._open.get(span_id)
        if units is None or units[-1].span_id != span_id or units[-1].finished:
            return None
        return units[-1]

    def note_unit(self, span: ApiSpan, name: str, override: Limits | None, waited_since: float | None = None) -> None:
        """The integrations name a unit as soon as they know it (Django once the view is
        resolved, Celery before the task runs): the limits checked while its calls end are then
        its own, and this is when its allocations may start being traced. ``waited_since`` is
        when a task became due (its enqueue or ETA time, seconds since the epoch): its queue wait
        runs from then to the unit's start; a negative one (the hosts' clocks differ) is 0."""
        try:
            unit = self.unit(span)
            if unit is None:
                return
            unit.name, unit.override = name, override
            if waited_since is not None:
                wait = unit.start_ns - int(waited_since * 1e9)
                if wait < 0:
                    _skewed(wait)
                unit.queue_wait_ns = max(wait, 0)
            self._resolve_limits(unit)
            mode = self.settings.memory_trace
            if (
                mode != "off"
                and len(self._units_open) == 1
                and self._tracer.wanted(mode, unit.kind, name, span.get_span_context().trace_id)
            ):
                unit.traced = self._tracer.start(unit.span_id)
        except Exception:  # noqa: BLE001
            _guard.swallow("note_unit")

    def _resolve_limits(self, unit: OpenUnit) -> None:
        """The repetition and slow-call limits of ``unit``, from the budget its name has so far."""
        name = unit.name or _name_so_far(unit)
        budget = self.settings.budgets.resolve(unit.kind, name, unit.override)
        repeated = int(budget.limit("repeated_queries"))
        unit.repeated_crossing = repeated + 1 if repeated else -1
        slow_ms = budget.limit("slow_query_ms")
        unit.slow_ns = int(slow_ms * 1e6) if slow_ms else NEVER
        unit.limits_resolved = True

    def note_shape(self, span: ApiSpan, shape: tuple[str, str]) -> None:
        """Give a DB call's shape when its statement attribute cannot be trusted (MongoDB), or
        say it is a round trip of the driver's own (``_shapes.round_trip``)."""
        span_id = span.get_span_context().span_id
        if span_id in self._open:
            self._shapes[span_id] = shape

    def note_bare(self, span: ApiSpan, system: str, text: str, *, query: bool) -> None:
        """Count a query, or a round trip, that is no DB call of its own (``OpenUnit.add_bare``)
        for the units ``span``, the current span, belongs to."""
        self._update(span, lambda unit: unit.add_bare(system, text, query=query))

    def _update(self, span: ApiSpan, change: Callable[[OpenUnit], object]) -> None:
        """``change`` each unfinished unit ``span`` (the current span, where a hook runs) belongs
        to, under the lock (threads of one unit report at the same moment)."""
        units = self._open.get(span.get_span_context().span_id)
        if units:
            with self._lock:
                for unit in units:
                    if not unit.finished:
                        change(unit)

    def setting_up(self, call: Callable[[], T]) -> T:
        """``call()``, which sets a database connection up (Django's ``connect()``: the session's
        time zone and role, sent through the raw driver, which Django does not log): the DB calls
        it makes in this thread count as round trips, not queries."""
        ident = get_ident()
        self._setting_up[ident] = self._setting_up.get(ident, 0) + 1
        try:
            return call()
        finally:
            depth = self._setting_up.pop(ident, 1) - 1
            if depth:
                self._setting_up[ident] = depth

    def set_up(self, call: Callable[[], T]) -> T:
        """``call()`` inside ``setting_up`` once the connection is set up (Django's
        ``connection_created`` receivers): its DB calls in this thread count as queries again."""
        depth = self._setting_up.pop(get_ident(), 0)
        try:
            return call()
        finally:
            if depth:
                self._setting_up[get_ident()] = depth

    def note_pool_wait(self, span: ApiSpan, duration_ns: int) -> None:
        """Count time spent waiting for a connection from a pool for the units ``span``, the
        current span, belongs to (``zen.db.pool_wait_ms``: apart from the DB time)."""
        self._update(span, lambda unit: unit.add_pool_wait(duration_ns))

    def note_cache(self, span: ApiSpan, duration_ns: int, missed: int) -> None:
        """Count a call through Django's cache API (``missed``: 1 for a read that found nothing)
        for the units ``span``, the current span, belongs to."""
        self._update(span, lambda unit: unit.add_cache_call(duration_ns, missed))

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
            site = _callsite.take()
            if target is not None and target.is_recording():
                event: dict[str, str | int] = {_names.HTTP_REQUEST_METHOD: method, _names.SERVER_ADDRESS: address}
                target.add_event(_names.EVENT_NO_TIMEOUT, {**event, **(site.attributes() if site else {})})
            with self._lock:
                for unit in units:
                    if not unit.finished:
                        unit.no_timeout += 1
                        if site is not None and len(unit.no_timeout_sites) < _MAX_NO_TIMEOUT_SITES:
                            unit.no_timeout_sites.append(site)
        except Exception:  # noqa: BLE001
            _guard.swallow("note_no_timeout")

    def note_config(self, finding: Finding) -> None:
        """Report a connection without timeouts as an event on the next finished unit."""
        self._findings.append(finding)

    def finish(
        self, span: ApiSpan, name: str, point: Attributes, override: Limits | None = None
    ) -> FinishedUnit | None:
        """Finish the unit ``span`` opened, while the span can still be written to; the finished
        unit, or None when ``span`` opened none (or it was finished already)."""
        try:
            unit = self.unit(span)
            if unit is not None:
                return self._complete(unit, span, name, point, override)
        except Exception:  # noqa: BLE001
            _guard.swallow("finish")
        return None

    def _complete(
        self, unit: OpenUnit, span: ApiSpan | None, name: str, point: Attributes, override: Limits | None
    ) -> FinishedUnit:
        with self._lock:
            unit.finished = True
            self._units_open.pop(unit.span_id, None)
        try:
            finished, span = self._judge(unit, span, name, point, override)
        except BaseException:
            if self._gate is not None:
                self._gate.settle(unit, _EXPORTED)  # whatever went wrong, no span of it stays held
            raise
        for listener in self.listeners:
            listener(finished, span)
        return finished

    def _judge(
        self, unit: OpenUnit, span: ApiSpan | None, name: str, point: Attributes, override: Limits | None
    ) -> tuple[FinishedUnit, ApiSpan | None]:
        """A finished unit's figures, breaches and export verdict, its held spans settled; and its
        span if it can still be written to."""
        end_ns, rss_end = time.time_ns(), _memory.rss()
        allocations = None
        if unit.traced:
            # Tracing stops here whatever happened in the unit; its own memory is not the unit's.
            rss_end -= self._tracer.own_memory()
            allocations = self._tracer.stop(unit.span_id, unit.kind, name)
        budget = self.settings.budgets.resolve(unit.kind, name, override)
        figures = unit.figures(name, end_ns, rss_end, budget.limit("slow_query_ms"), allocations)
        found = tuple(breaches(budget, figures))
        gate = self._gate
        verdict = gate.verdict(unit, point, bool(found), span is not None) if gate is not None else _EXPORTED
        if span is not None and not span.is_recording():
            span = None
        findings: tuple[Finding, ...] = ()
        if span is not None and self._findings:
            findings, self._findings = tuple(self._findings), []
        finished = FinishedUnit(figures, point, budget, found, unit.span_id, verdict, findings)
        if any(breach.limit == "memory_mb" for breach in found):
            self._tracer.arm(self.settings.memory_trace, unit.kind, name)
        if gate is not None:
            gate.settle(unit, verdict, finished.kept)
        return finished, span

    # -- the seams zenmetry.testing plugs into ---------------------------------------------

    def discount(self, duration_ns: int, rss_bytes: int) -> None:
        """Take work of zenmetry's own out of every open unit's duration and memory figures
        (in tests, loading an instrumentation at the first call of what it instruments)."""
        with self._lock:
            for unit in self._units_open.values():
                unit.start_ns += duration_ns
                unit.rss_start += rss_bytes

    def keep_statements(self) -> None:
        """Keep every DB call of every unit started from now on, in order (``Figures.statements``)."""
        self._keep_statements = True

    def forget(self) -> None:
        """Forget what carries from one unit to the next: the connection findings not yet
        reported, and which names are armed for a memory trace and when each was last traced."""
        self._findings.clear()
        self._tracer = MemoryTracer()

    def units_of(self, span_id: int) -> tuple[OpenUnit, ...]:
        """The open units a started span belongs to, innermost last (``zenmetry.testing``)."""
        return self._open.get(span_id, ())

    def tracked_spans(self) -> int:
        """Spans of open units the processor still tracks (0 once every span has ended)."""
        return len(self._open)

    def shutdown(self) -> None:
        self._units_open.clear()
        self._open.clear()
        self._shapes.clear()
        self._no_timeout.clear()
        if self._gate is not None:
            self._gate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._gate.force_flush(timeout_millis) if self._gate is not None else True


def _skewed(wait_ns: int) -> None:
    """A negative queue wait: reported as 0, and said once per process (the clocks disagree)."""
    global _SKEW_SAID  # noqa: PLW0603 - one warning per process, not one per task
    if not _SKEW_SAID:
        _SKEW_SAID = True
        logger.warning(
            "zenmetry: a task started %.1f ms before it was enqueued: the producer's clock is ahead of this "
            "host's; its queue wait is reported as 0 (keep the hosts' clocks in sync, with NTP)",
            -wait_ns / 1e6,
        )


_SKEW_SAID = False


def _name_so_far(unit: OpenUnit) -> str:
    """A unit's name before the integrations said it: the route the Django instrumentation has
    put on the span so far, or the task name in the span's."""
    if unit.kind == _names.KIND_HTTP:
        return str(plain_attributes(unit.span).get(_names.HTTP_ROUTE) or _names.UNMATCHED)  # type: ignore[arg-type]
    name = unit.span.name if isinstance(unit.span, ReadableSpan) else ""
    return name[len(_TASK_PREFIX) :] if name.startswith(_TASK_PREFIX) else name


def _from_ended(span: ReadableSpan) -> tuple[str, dict[str, str | int]]:
    """Name and point attributes of a unit whose span ended without a zenmetry hook."""
    attributes: Mapping[str, object] = span.attributes or {}
    if span.kind is _SERVER:
        name = str(attributes.get(_names.HTTP_ROUTE) or _names.UNMATCHED)
        method = attributes.get(_names.HTTP_REQUEST_METHOD) or attributes.get(_names.HTTP_METHOD_OLD) or "_OTHER"
        status = attributes.get(_names.HTTP_RESPONSE_STATUS_CODE) or attributes.get(_names.HTTP_STATUS_CODE_OLD) or 0
        return name, {_names.HTTP_REQUEST_METHOD: str(method), _names.HTTP_RESPONSE_STATUS_CODE: int(str(status))}
    name = span.name[len(_TASK_PREFIX) :] if span.name.startswith(_TASK_PREFIX) else span.name
    scope = span.instrumentation_scope.name if span.instrumentation_scope is not None else ""
    if scope == _names.DJANGO_TASKS_SCOPE:
        return name, {_names.DJANGO_TASK_STATUS: "UNKNOWN"}
    if scope == _COMMAND_SCOPE:
        return name.removeprefix("command "), {_names.COMMAND_STATUS: "UNKNOWN"}
    return name, {_names.CELERY_STATE: str(attributes.get(_names.CELERY_STATE) or "UNKNOWN")}
