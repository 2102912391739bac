"""Units of work: the running figures of one request or task, and what they come to.

An ``OpenUnit`` is fed by the span processor as the unit's DB and external calls end; when
the unit finishes, ``OpenUnit.figures()`` freezes them, ``breaches()`` checks them against the
budget that applies, and the processor hands one ``FinishedUnit`` to every consumer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from zenmetry import _names
from zenmetry._budgets import Budget
from zenmetry._limits import BY_NAME


class OpenUnit:
    """Running figures of one unit. Mutated only by the span processor, without locks: each
    unit is fed by the spans of its own request or task."""

    __slots__ = (
        "db_ns",
        "external_calls",
        "external_ns",
        "finished",
        "kind",
        "no_timeout",
        "queries",
        "rss_start",
        "shapes",
        "span",
        "span_id",
        "start_ns",
        "statements",
        "systems",
    )

    def __init__(self, kind: str, span: Span, start_ns: int, rss_start: int) -> None:
        self.kind = kind
        self.span = span
        self.span_id = span.get_span_context().span_id
        self.start_ns = start_ns
        self.rss_start = rss_start
        self.queries = 0
        self.db_ns = 0
        self.systems: dict[str, list[int]] = {}
        # (system, shape key) -> [count, shape text]
        self.shapes: dict[tuple[str, str], list[Any]] = {}
        self.external_calls = 0
        self.external_ns = 0
        self.no_timeout = 0
        self.finished = False
        self.statements: list[Statement] | None = None

    def add_db(self, system: str, duration_ns: int, shape: tuple[str, str] | None) -> None:
        self.queries += 1
        self.db_ns += duration_ns
        per_system = self.systems.get(system)
        if per_system is None:
            self.systems[system] = [1, duration_ns]
        else:
            per_system[0] += 1
            per_system[1] += duration_ns
        if shape is not None:
            key = (system, shape[0])
            seen = self.shapes.get(key)
            if seen is None:
                self.shapes[key] = [1, shape[1]]
            else:
                seen[0] += 1
        if self.statements is not None:
            self.statements.append(Statement(system, shape[1] if shape else "", duration_ns / 1e6))

    def add_external(self, duration_ns: int) -> None:
        self.external_calls += 1
        self.external_ns += duration_ns

    def figures(self, name: str, end_ns: int, rss_end: int) -> Figures:
        """Freeze the running figures; called once, when the unit finishes."""
        # Only shapes that ran more than once can be reported as repeated.
        repeated = sorted(
            (Repetition(system, text, count) for (system, _), (count, text) in self.shapes.items() if count > 1),
            key=lambda repetition: -repetition.count,
        )
        return Figures(
            kind=self.kind,
            name=name,
            queries=self.queries,
            db_duration_ms=self.db_ns / 1e6,
            systems={system: (count, ns / 1e6) for system, (count, ns) in self.systems.items()},
            repeated_max=repeated[0].count if repeated else (1 if self.shapes else 0),
            repetitions=tuple(repeated),
            external_calls=self.external_calls,
            external_duration_ms=self.external_ns / 1e6,
            no_timeout=self.no_timeout,
            rss_delta_bytes=rss_end - self.rss_start,
            duration_ms=max(end_ns - self.start_ns, 0) / 1e6,
            statements=tuple(self.statements) if self.statements is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Statement:
    """One DB call, in execution order (kept only when a test asks for it)."""

    system: str
    text: str
    duration_ms: float


@dataclass(frozen=True, slots=True)
class Repetition:
    """How many times one statement shape ran in a unit."""

    system: str
    text: str
    count: int


@dataclass(frozen=True, slots=True)
class Figures:
    """What one unit came to: the values of CONTRACT.md's unit attributes."""

    kind: str
    name: str
    queries: int
    db_duration_ms: float
    systems: dict[str, tuple[int, float]]
    repeated_max: int
    repetitions: tuple[Repetition, ...]
    external_calls: int
    external_duration_ms: float
    no_timeout: int
    rss_delta_bytes: int
    duration_ms: float
    statements: tuple[Statement, ...] | None = None

    def actual(self, limit: str) -> int | float:
        """The figure a limit is checked against, in the limit's own unit."""
        row = BY_NAME[limit]
        value: int | float = getattr(self, row.figure)
        return value if row.scale == 1 else value / row.scale


@dataclass(frozen=True, slots=True)
class Breach:
    """One limit exceeded: ``actual > value``."""

    limit: str
    value: int | float
    actual: int | float


def breaches(budget: Budget, figures: Figures) -> list[Breach]:
    """The limits of ``budget`` that ``figures`` exceed (strictly: equality is within budget)."""
    found = []
    for limit, value in budget.checks:
        actual = figures.actual(limit)
        if actual > value:
            found.append(Breach(limit, value, actual))
    return found


@dataclass(frozen=True, slots=True)
class FinishedUnit:
    """One finished request or task, as every consumer sees it: built once by the processor and
    handed to the span writer, the metrics, the console line, listeners and ``zenmetry.testing``.
    """

    figures: Figures
    point: Mapping[str, str | int]
    """The kind's own bounded attributes of its metric points (method and status, or state)."""
    budget: Budget
    breaches: tuple[Breach, ...]
    span_id: int
    """The unit span's id (never exported from here; ``zenmetry.testing`` tells its blocks by it)."""

    @property
    def kind(self) -> str:
        return self.figures.kind

    @property
    def name(self) -> str:
        return self.figures.name

    def title(self) -> str:
        """``http GET orders/``, ``task shop.tasks.invoice``."""
        if self.kind == _names.KIND_HTTP:
            method = self.point.get(_names.HTTP_REQUEST_METHOD)
            return f"http {method} {self.name}" if method else f"http {self.name}"
        return f"{self.kind} {self.name}"
