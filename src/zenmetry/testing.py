"""zenmetry in a test suite: the units a test produced, and budgets asserted on them.

Everything runs in memory (no exporter, no network): the first use instruments this process
with zenmetry's processor and the installed OpenTelemetry instrumentations.

- ``assert_budget(queries=3, external_calls=0)``: a context manager (or decorator) that
  measures its block as one unit, and also checks every request or task unit that finished
  during it (a live server's, a worker thread's); an ``AssertionError`` reports each limit
  exceeded and, for query limits, the statements in execution order.
- ``recorded()``: a context manager collecting the ``ZenUnit`` of every unit that finishes.

The pytest plugin (``pytest --zenmetry``) checks every unit of every test against the
project's budget file; its ``zen_units`` fixture lists a test's units.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Iterator, Sequence
from contextlib import ContextDecorator
from dataclasses import dataclass
from typing import Any, Unpack

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from zenmetry import _config, _names
from zenmetry._budgets import Budget, Limits, LimitsKwargs, parse_limits
from zenmetry._metrics import Attributes
from zenmetry._processor import UnitProcessor
from zenmetry._sampler import UnitsOnlySampler
from zenmetry._settings import Settings
from zenmetry._units import Breach, Figures, Statement, Unit, breaches

__all__ = ["ZenUnit", "assert_budget", "recorded", "report", "start"]

MAX_STATEMENT_LINES = 40
BLOCK = "assert_budget"


@dataclass(frozen=True)
class ZenUnit:
    """One finished request or task: its figures, the budget that applied, what it exceeded."""

    kind: str
    name: str
    figures: Figures
    budget: Budget
    breaches: tuple[Breach, ...]
    point: dict[str, str | int]

    @property
    def queries(self) -> int:
        return self.figures.queries

    @property
    def db_duration_ms(self) -> float:
        return self.figures.db_duration_ms

    @property
    def external_calls(self) -> int:
        return self.figures.external_calls

    @property
    def duration_ms(self) -> float:
        return self.figures.duration_ms

    @property
    def statements(self) -> tuple[Statement, ...]:
        return self.figures.statements or ()

    def title(self) -> str:
        if self.kind == _names.KIND_HTTP:
            method = self.point.get(_names.HTTP_REQUEST_METHOD)
            return f"http {method} {self.name}" if method else f"http {self.name}"
        return f"{self.kind} {self.name}"


class _Recorder:
    """The in-memory instrumentation of this process (created once) and who listens to it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processor: UnitProcessor | None = None
        self.tracer_provider: TracerProvider | None = None
        self.collectors: list[list[ZenUnit]] = []
        # assert_budget blocks open: unit span id -> the block's own figures, once finished
        self.blocks: dict[int, list[Figures]] = {}

    def listen(self, unit: Unit, figures: Figures, point: Attributes, budget: Budget, found: list[Breach]) -> None:
        own = self.blocks.get(unit.span_id)
        if own is not None:
            own.append(figures)  # a block is judged by its own limits, not the budget file
            return
        record = ZenUnit(unit.kind, figures.name, figures, budget, tuple(found), dict(point))
        for collector in list(self.collectors):
            collector.append(record)


_recorder = _Recorder()


def start(settings: Settings | None = None) -> UnitProcessor:
    """Instrument this process in memory (once); later calls may replace the settings."""
    with _recorder.lock:
        processor = _recorder.processor
        if processor is None:
            processor = _config.processor()
            if processor is None:
                processor = _instrument(settings or Settings())
            else:
                processor._keep_statements = True  # noqa: SLF001 - a process zenmetry already configured
            processor.listeners.append(_recorder.listen)
            _recorder.processor = processor
        if settings is not None:
            processor.settings = settings
        return processor


# Instrumentations loaded when their library is first imported (a test suite that never
# imports pymongo pays nothing for it); any other installed instrumentation loads at once.
_LIBRARIES = {
    "celery": "celery",
    "httpx": "httpx",
    "httpx2": "httpx",
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "pymongo": "pymongo",
    "requests": "requests",
    "sqlite3": "sqlite3",
    "urllib": "urllib.request",
    "urllib3": "urllib3",
}


def _on_import(load: Any, entry_point: Any, _module: Any) -> None:
    load(entry_point)


def _instrument(settings: Settings) -> UnitProcessor:
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts
    from opentelemetry.util._importlib_metadata import entry_points

    from zenmetry._distro import ZenmetryDistro

    tracer_provider = TracerProvider(sampler=UnitsOnlySampler())
    # Tests export nothing: the instrumentations' own metrics go nowhere, at no cost.
    meter_provider = NoOpMeterProvider()
    processor = UnitProcessor(settings, meter_provider, keep_statements=True, record_metrics=False)
    tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    _config.state.processor = processor
    _config.state.settings = settings
    _recorder.tracer_provider = tracer_provider
    distro = ZenmetryDistro()

    def load(entry_point: Any) -> None:
        with contextlib.suppress(ImportError):  # the instrumented library is not installed
            if entry_point.dist is not None and get_dist_dependency_conflicts(entry_point.dist):
                return
            distro.load_instrumentor(
                entry_point, tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True
            )

    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        library = _LIBRARIES.get(entry_point.name)
        if library is None:
            load(entry_point)
        else:
            wrapt.when_imported(library)(functools.partial(_on_import, load, entry_point))
    return processor


@contextlib.contextmanager
def recorded() -> Iterator[list[ZenUnit]]:
    """Collect every unit that finishes inside the block (from any thread)."""
    start()
    collector: list[ZenUnit] = []
    _recorder.collectors.append(collector)
    try:
        yield collector
    finally:
        _recorder.collectors.remove(collector)


class assert_budget(ContextDecorator):
    """Assert that a block of code stays within limits; usable as ``with`` or as a decorator.

    ``assert_budget(queries=3, db_time_ms=50, memory_mb=10, external_calls=0,
    repeated_queries=5, duration_ms=200)``: only the limits given are checked. The block is
    measured as one unit (a Django test-client request inside it is part of it); every
    request or task unit that finished during it in another thread (a live server, a worker)
    is checked too. An unknown or wrong limit raises ``zenmetry.ConfigError`` at once, so a
    decorated test fails at collection.
    """

    def __init__(self, **limits: Unpack[LimitsKwargs]) -> None:
        caller = inspect.stack()[1]
        self._where = f"{caller.filename}:{caller.lineno}"
        given = parse_limits(limits, f"assert_budget at {self._where}")
        self._budget = Budget(BLOCK, given.over(Limits(repeated_queries=0)))
        self._state = threading.local()

    def __enter__(self) -> assert_budget:
        processor = start()
        tracer = (_recorder.tracer_provider or trace.get_tracer_provider()).get_tracer("zenmetry.testing")
        span = tracer.start_span(f"{BLOCK} {self._where}", kind=SpanKind.SERVER)
        _recorder.blocks[span.get_span_context().span_id] = []
        collector: list[ZenUnit] = []
        _recorder.collectors.append(collector)
        token = otel_context.attach(trace.set_span_in_context(span))
        self._frames().append((processor, span, collector, token))
        return self

    def _frames(self) -> list[tuple[UnitProcessor, Any, list[ZenUnit], Any]]:
        if not hasattr(self._state, "frames"):
            self._state.frames = []
        frames: list[tuple[UnitProcessor, Any, list[ZenUnit], Any]] = self._state.frames
        return frames

    def __exit__(self, *exc: object) -> None:
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        processor, span, collector, token = self._frames().pop()
        otel_context.detach(token)
        _recorder.collectors.remove(collector)
        name = f"block at {self._where}"
        try:
            processor.finish(span, name, {})
        finally:
            span.end()
            block = _recorder.blocks.pop(span.get_span_context().span_id)
        if exc[0] is not None:
            return  # the block's own error comes first
        checked: list[tuple[str, str, Figures, dict[str, str | int]]] = [(BLOCK, name, f, {}) for f in block]
        checked += [(u.kind, u.name, u.figures, u.point) for u in collector]
        failed = [
            ZenUnit(kind, unit_name, figures, self._budget, tuple(found), point)
            for kind, unit_name, figures, point in checked
            if (found := breaches(self._budget, figures))
        ]
        if failed:
            raise AssertionError(report(failed))


def report(units: Sequence[ZenUnit]) -> str:
    """A readable account of units over their budget: each limit exceeded, and for query
    limits the statements in execution order, the repeated ones marked."""
    lines = [f"zenmetry: {len(units)} unit{'s' if len(units) != 1 else ''} over budget"]
    for unit in units:
        lines.append(f"{unit.title()}  (budget: {unit.budget.source})")
        lines.extend(f"  {_number(b.limit, b.actual)} > {_number(b.limit, b.value)}  {b.limit}" for b in unit.breaches)
        if {b.limit for b in unit.breaches} & {"queries", "db_time_ms", "repeated_queries"}:
            lines.extend(_statements(unit))
    return "\n".join(lines)


def _statements(unit: ZenUnit) -> list[str]:
    shapes: dict[tuple[str, str], list[float]] = {}
    for statement in unit.statements:
        shapes.setdefault((statement.system, statement.text), []).append(statement.duration_ms)
    if not shapes:
        return []
    lines = ["  statements, in order of first execution (count, total time):"]
    for index, ((system, text), durations) in enumerate(shapes.items()):
        if index == MAX_STATEMENT_LINES:
            lines.append(f"    ... {len(shapes) - MAX_STATEMENT_LINES} more statement shapes")
            break
        mark = "  <- repeated" if len(durations) > 1 else ""
        lines.append(
            f"    {len(durations):>4}x {sum(durations):>8.1f} ms  {system:<10} {text or '(no statement)'}{mark}"
        )
    return lines


def _number(limit: str, value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f} {'MiB' if limit == 'memory_mb' else 'ms'}"
