"""The test API of ``zenmetry.testing`` (see the package docstring): the in-memory instrumentation
of a test process, ``assert_budget``, ``recorded()`` and the report."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import ContextDecorator
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from zenmetry import _guard, _names, _state
from zenmetry.config import _limits
from zenmetry.config._budgets import Budget
from zenmetry.config._limits import LIMITS, Limits
from zenmetry.config._settings import Settings
from zenmetry.outputs import _console
from zenmetry.testing import _open_connections
from zenmetry.testing._lean_spans import LeanTracerProvider
from zenmetry.units import _memory
from zenmetry.units._figures import Figures, FinishedUnit, breaches
from zenmetry.units._processor import UnitProcessor

__all__ = ["ZenUnit", "assert_budget", "recorded", "report", "start"]

MAX_STATEMENT_LINES = 40
BLOCK = "assert_budget"


ZenUnit = FinishedUnit
"""One finished request or task: ``figures`` (``figures.queries``, ``figures.statements``, ...),
``point``, the ``budget`` that applied and the ``breaches`` of it, ``kind`` and ``name``."""


class _Recorder:
    """The in-memory instrumentation of this process (created once) and who listens to it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processor: UnitProcessor | None = None
        self.tracer_provider: LeanTracerProvider | None = None
        self.collectors: list[list[ZenUnit]] = []
        # assert_budget blocks open: unit span id -> the block's own figures, once finished
        self.blocks: dict[int, list[Figures]] = {}
        # unit span id -> the hosts its external calls went to, in order (kept for snapshots)
        self.hosts: dict[int, list[str]] = {}
        self.calls: _Calls | None = None

    def listen(self, unit: FinishedUnit, span: object = None) -> None:
        own = self.blocks.get(unit.span_id)
        if own is not None:
            own.append(unit.figures)  # a block is judged by its own limits, not the budget file
            return
        for collector in list(self.collectors):
            collector.append(unit)

    def forget(self, collector: list[ZenUnit]) -> None:
        """Stop feeding ``collector``: by identity, since two collectors of the same units are equal."""
        with self.lock:
            for index, listed in enumerate(self.collectors):
                if listed is collector:
                    del self.collectors[index]
                    return


# This module's own state, and deliberately so: one in-memory instrumentation per process,
# shared by every test that uses this module, the plugin and the fixtures.
_recorder = _Recorder()


def start(settings: Settings | None = None) -> UnitProcessor:
    """Instrument this process in memory (once); later calls may replace the settings."""
    with _recorder.lock:
        processor = _recorder.processor
        if processor is None:
            processor = _state.state.processor
            if processor is None:
                processor = _instrument(settings or Settings())
            else:
                processor.keep_statements()  # a process zenmetry already configured
            processor.listeners.append(_recorder.listen)
            _recorder.processor = processor
            # Connections opened before now are not traced by the driver instrumentations.
            _open_connections.instrument_open_connections(_recorder.tracer_provider or trace.get_tracer_provider())
        if settings is not None:
            processor.settings = settings
        return processor


# Instrumentations loaded when their library is first imported (a test suite that never
# imports pymongo pays nothing for it); any other installed instrumentation loads at once.
_LIBRARIES = {
    "celery": "celery",
    "httpx": "httpx",
    "httpx2": "httpx",
    "psycopg2": "psycopg2",
    "pymongo": "pymongo",
    "redis": "redis",
    "requests": "requests",
    "sqlite3": "sqlite3",
    "urllib3": "urllib3",
}

# Instrumentations loaded at the first call of what they instrument: pytest itself imports
# urllib.request, and most suites start no thread. Loading either at start would load the
# instrumentation machinery (and its requirement parser) for every run: measured, a fifth of
# what the plugin cost a light suite. The first call loads the instrumentation, then goes
# through it.
_FIRST_CALL = {
    "threading": (("threading", "Thread", "start"), ("concurrent.futures", "ThreadPoolExecutor", "submit")),
    "urllib": (("urllib.request", "OpenerDirector", "open"),),
}


def _on_import(load: Any, entry_point: Any, _module: Any) -> None:
    load(entry_point)


def _instrument(settings: Settings) -> UnitProcessor:
    from opentelemetry.util._importlib_metadata import entry_points

    # Spans only feed the processor here: the lean tracer's cost a fraction of the SDK's (_lean).
    tracer_provider = LeanTracerProvider()
    # Tests export nothing: the instrumentations' own metrics go nowhere, at no cost.
    meter_provider = NoOpMeterProvider()
    # Its one listener is the recorder (``start``): no span writer, no metrics, no console line.
    processor = UnitProcessor(settings, keep_statements=True)
    tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    _state.state.processor = processor
    _state.state.settings = settings
    _recorder.tracer_provider = tracer_provider

    @functools.cache
    def distro() -> Any:
        from zenmetry._distro import ZenmetryDistro

        return ZenmetryDistro()

    def load(entry_point: Any) -> None:
        from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

        with contextlib.suppress(ImportError):  # the instrumented library is not installed
            if entry_point.dist is not None and get_dist_dependency_conflicts(entry_point.dist):
                return
            distro().load_instrumentor(
                entry_point, tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True
            )

    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        name = entry_point.name
        if name == "django":
            _measure_django(tracer_provider, processor)
        elif name == "psycopg":
            wrapt.when_imported("psycopg")(functools.partial(_measure_psycopg, tracer_provider, processor))
        elif name in _FIRST_CALL:
            _FirstCall(functools.partial(load, entry_point), _FIRST_CALL[name]).install()
        elif name in _LIBRARIES:
            wrapt.when_imported(_LIBRARIES[name])(functools.partial(_on_import, load, entry_point))
        else:
            load(entry_point)
    return processor


class _FirstCall:
    """Load an instrumentation at the first call of one of the methods it instruments, then
    make that call through what the instrumentation made of the method. Until then each method
    is wrapped by this; after, it is the instrumentation's. A call that arrives while the
    instrumentation loads waits for it. The time and memory the loading takes are not the open
    units' (``UnitProcessor.discount``): at start, where it would otherwise run, no unit pays them.

    Where another library wrapped one of the methods after this (nothing does before the
    plugin starts, after Django's settings), that first call is the method's own, and every
    later one goes through the instrumentation: calling theirs again would run it twice."""

    def __init__(self, load: Any, targets: tuple[tuple[str, str, str], ...]) -> None:
        self._load = load
        self._targets = targets
        self._lock = threading.RLock()  # the instrumentation may start a thread as it loads
        self._loading = self._loaded = False
        self._wrappers: dict[tuple[Any, str], Any] = {}
        self._removed: set[tuple[Any, str]] = set()

    def install(self) -> None:
        for module, owner, name in self._targets:
            wrapt.when_imported(module)(functools.partial(self._wrap, owner, name))

    def _wrap(self, owner: str, name: str, module: Any) -> None:
        with self._lock:
            if self._loading or self._loaded:
                return
            cls = getattr(module, owner)
            wrapper = self._wrappers[cls, name] = wrapt.FunctionWrapper(
                vars(cls)[name], functools.partial(self._first, cls, name)
            )
            setattr(cls, name, wrapper)

    def _first(self, cls: Any, name: str, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not self._loaded:
            with self._lock:
                if self._loading and not self._loaded:
                    return wrapped(*args, **kwargs)  # made by the instrumentation as it loads
                if not self._loaded:
                    self._loading = True
                    self._load_now()
        if instance is not None and (cls, name) in self._removed:
            return getattr(cls, name)(instance, *args, **kwargs)  # what the instrumentation made of it
        return wrapped(*args, **kwargs)

    def _load_now(self) -> None:
        """Put the methods back (``_removed``: those whose wrapper this was) and load the instrumentation."""
        started, rss = time.time_ns(), _memory.rss()
        try:
            for (owner, attribute), wrapper in self._wrappers.items():
                if vars(owner).get(attribute) is wrapper:
                    setattr(owner, attribute, wrapper.__wrapped__)
                    self._removed.add((owner, attribute))
            self._load()
        except Exception:  # noqa: BLE001
            _guard.swallow("loading an instrumentation at its first call")
        finally:
            self._loaded = True
            processor = _recorder.processor or _state.state.processor
            if processor is not None:
                processor.discount(time.time_ns() - started, max(_memory.rss() - rss, 0))


def _measure_psycopg(tracer_provider: LeanTracerProvider, processor: UnitProcessor, _module: Any) -> None:
    """psycopg's round trips, traced by zenmetry alone (``_statements.LeanStatements``): the
    spans the processor reads, without loading the instrumentation."""
    from zenmetry.testing._statements import measure_psycopg

    measure_psycopg(tracer_provider, processor)


def _measure_django(tracer_provider: LeanTracerProvider, processor: UnitProcessor) -> None:
    """Django's requests, measured by zenmetry's own middleware rather than the
    instrumentation's (``_django.UnitMiddleware``): the same units, at a fraction of the cost."""
    try:
        from zenmetry.testing._django import measure_requests
    except ImportError:  # Django is not installed
        return
    measure_requests(tracer_provider, processor)


@contextlib.contextmanager
def recorded() -> Iterator[list[ZenUnit]]:
    """Collect every unit that finishes inside the block (from any thread).

    Raises ``AssertionError`` at the end of the block when statements ran on a database
    connection that zenmetry could not trace (one opened before it instrumented the process):
    the units would be short of them.
    """
    start()
    before = _open_connections.counts()
    collector: list[ZenUnit] = []
    _recorder.collectors.append(collector)
    try:
        yield collector
    finally:
        _recorder.forget(collector)
    _check_measured(before, "recorded()")


def _check_measured(before: dict[int, int], what: str) -> None:
    __tracebackhide__ = True
    missed = _open_connections.unmeasured_since(before)
    if missed:
        raise AssertionError(
            f"zenmetry: {what} missed statements: " + "; ".join(missed) + f", {_open_connections.HOW_TO_FIX}"
        )


def keep_hosts() -> None:
    """Remember the host of every external call of every unit (``hosts_of``), for snapshots."""
    start()
    with _recorder.lock:
        if _recorder.calls is None:
            provider = _recorder.tracer_provider or trace.get_tracer_provider()
            if isinstance(provider, TracerProvider | LeanTracerProvider) and _recorder.processor is not None:
                _recorder.calls = _Calls(_recorder.processor, _recorder.hosts)
                provider.add_span_processor(_recorder.calls)


def hosts_of(unit: ZenUnit) -> list[str]:
    """The hosts ``unit``'s external calls went to, in order (once ``keep_hosts()`` was called)."""
    return _recorder.hosts.get(unit.span_id, [])


def forget_hosts() -> None:
    """Drop the hosts kept so far (the plugin calls this after each test)."""
    _recorder.hosts.clear()


class _Calls(SpanProcessor):
    """Notes the host of each external call, for the units it belongs to."""

    def __init__(self, processor: UnitProcessor, hosts: dict[int, list[str]]) -> None:
        self._processor = processor
        self._hosts = hosts
        self._units: dict[int, tuple[int, ...]] = {}

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        if span.kind is SpanKind.CLIENT:
            units = self._processor.units_of(span.context.span_id)
            if units:
                self._units[span.context.span_id] = tuple(unit.span_id for unit in units)

    def on_end(self, span: ReadableSpan) -> None:
        units = self._units.pop(span.context.span_id, None)
        if units is None:
            return
        attributes = span.attributes or {}
        if _names.DB_SYSTEM in attributes or _names.DB_SYSTEM_NAME in attributes:
            return
        if _names.HTTP_REQUEST_METHOD not in attributes and _names.HTTP_METHOD_OLD not in attributes:
            return
        host = attributes.get(_names.SERVER_ADDRESS) or attributes.get("net.peer.name")
        if not host:
            url = attributes.get("url.full") or attributes.get("http.url") or ""
            host = urllib.parse.urlsplit(str(url)).hostname or "(unknown host)"
        for unit in units:
            self._hosts.setdefault(unit, []).append(str(host))


class assert_budget(ContextDecorator):
    """Assert that a block of code stays within limits; usable as ``with`` or as a decorator.

    ``assert_budget(queries=3, db_time_ms=50, memory_mb=10, external_calls=0,
    repeated_queries=5, duration_ms=200)``: only the limits given are checked. The block is
    measured as one unit (a Django test-client request inside it is part of it); every
    request or task unit that finished during it in another thread (a live server, a worker)
    is checked too. An unknown or wrong limit raises ``zenmetry.ConfigError`` at once, so a
    decorated test fails at collection.
    """

    def __init__(self, **limits: float) -> None:
        caller = inspect.stack()[1]
        self._where = f"{caller.filename}:{caller.lineno}"
        given = _limits.parse(limits, f"assert_budget at {self._where}")
        # Only the limits given are checked: the ones a budget file checks by default are off.
        self._budget = Budget(BLOCK, given.over(Limits(**{limit.name: 0 for limit in LIMITS if limit.default})))
        self._state = threading.local()

    def __enter__(self) -> assert_budget:
        processor = start()
        tracer = (_recorder.tracer_provider or trace.get_tracer_provider()).get_tracer("zenmetry.testing")
        span = tracer.start_span(f"{BLOCK} {self._where}", kind=SpanKind.SERVER)
        _recorder.blocks[span.get_span_context().span_id] = []
        processor.note_unit(span, f"block at {self._where}", None)
        collector: list[ZenUnit] = []
        _recorder.collectors.append(collector)
        token = otel_context.attach(trace.set_span_in_context(span))
        self._frames().append((processor, span, collector, token, _open_connections.counts()))
        return self

    def _frames(self) -> list[tuple[UnitProcessor, Any, list[ZenUnit], Any, dict[int, int]]]:
        if not hasattr(self._state, "frames"):
            self._state.frames = []
        frames: list[tuple[UnitProcessor, Any, list[ZenUnit], Any, dict[int, int]]] = self._state.frames
        return frames

    def __exit__(self, *exc: object) -> None:
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        processor, span, collector, token, before = self._frames().pop()
        otel_context.detach(token)
        _recorder.forget(collector)
        name = f"block at {self._where}"
        try:
            processor.finish(span, name, {})
        finally:
            span.end()
            block = _recorder.blocks.pop(span.get_span_context().span_id)
        if exc[0] is not None:
            return  # the block's own error comes first
        _check_measured(before, f"assert_budget at {self._where}")
        # The block itself reads as "assert_budget block at FILE:LINE" in the report.
        checked = [FinishedUnit(dataclasses.replace(f, kind=BLOCK), {}, self._budget, (), 0) for f in block]
        checked += collector
        failed = [
            dataclasses.replace(unit, budget=self._budget, breaches=tuple(found))
            for unit in checked
            if (found := breaches(self._budget, unit.figures))
        ]
        if failed:
            raise AssertionError(report(failed))


def report(units: Sequence[ZenUnit]) -> str:
    """A readable account of units over their budget: each limit exceeded with the call site
    that explains it, for query limits the statements in execution order (repeated and slow
    ones marked, with their call sites), and for memory what a traced unit still held."""
    lines = [f"zenmetry: {len(units)} unit{'s' if len(units) != 1 else ''} over budget"]
    for unit in units:
        lines.append(f"{unit.title()}  (budget: {unit.budget.source})")
        for b in unit.breaches:
            site = unit.site_of(b.limit)
            where = f"  at {site}" if site else ""
            lines.append(
                f"  {_limits.formatted(b.limit, b.actual)} > {_limits.formatted(b.limit, b.value)}  {b.limit}{where}"
            )
        limits = {b.limit for b in unit.breaches}
        if limits & {"queries", "db_time_ms", "repeated_queries", "slow_query_ms"}:
            lines.extend(_statements(unit))
            if unit.figures.cache_calls:
                calls, misses = unit.figures.cache_calls, unit.figures.cache_misses
                lines.append(f"  and the cache: {calls} call{'s' * (calls != 1)}, {misses} miss{'es' * (misses != 1)}")
        if "memory_mb" in limits:
            lines.extend(_allocations(unit))
    return "\n".join(lines)


def _statements(unit: ZenUnit) -> list[str]:
    statements = unit.figures.statements or ()
    shapes: dict[tuple[str, str], list[float]] = {}
    trips: dict[tuple[str, str], list[float]] = {}
    for statement in statements:
        if statement.query:
            shapes.setdefault((statement.system, statement.text), []).append(statement.duration_ms)
        else:
            trips.setdefault((statement.system, statement.text), []).append(statement.duration_ms)
    lines = []
    if unit.figures.round_trips != unit.figures.queries:
        lines.append(f"  {_console.queries(unit.figures)}")
    if not shapes:
        return lines
    repeated = {(r.system, r.text): r.site for r in unit.figures.repetitions}
    slow = {(q.system, q.text): q for q in unit.figures.slow_queries}
    lines.append("  queries, in order of first execution (count, total time):")
    for index, ((system, text), durations) in enumerate(shapes.items()):
        if index == MAX_STATEMENT_LINES:
            lines.append(f"    ... {len(shapes) - MAX_STATEMENT_LINES} more statement shapes")
            break
        marks = []
        if len(durations) > 1:
            site = repeated.get((system, text))
            marks.append("<- repeated" + (f" at {site}" if site else ""))
        if (system, text) in slow:
            query = slow[(system, text)]
            marks.append(f"<- slow ({query.duration_ms:.1f} ms)" + (f" at {query.site}" if query.site else ""))
        mark = "".join(f"  {m}" for m in marks)
        lines.append(
            f"    {len(durations):>4}x {sum(durations):>8.1f} ms  {system:<10} {text or '(no statement)'}{mark}"
        )
    if trips:
        lines.append("  and the driver's own round trips:")
        for (system, text), durations in trips.items():
            slowest = slow.get((system, text))
            mark = f"  <- slow ({slowest.duration_ms:.1f} ms)" if slowest else ""
            lines.append(f"    {len(durations):>4}x {sum(durations):>8.1f} ms  {system:<10} {text}{mark}")
    return lines


def _allocations(unit: ZenUnit) -> list[str]:
    traced = unit.figures.allocations
    if traced is None:
        return [
            "  allocations: not traced in this unit; the next "
            f"{unit.kind} {unit.name} of this process will be (ZENMETRY_MEMORY_TRACE)"
        ]
    lines = [f"  allocations still held at the end, largest first ({traced.traced_bytes / 2**20:.1f} MiB traced):"]
    for site in traced.sites:
        place, size, count = site.rsplit(" ", 2)
        lines.append(f"    {int(size) / 2**20:>8.1f} MiB  {int(count):>6} blocks  {place}")
    return lines
