"""Units of work: the running figures of one request or task, and what they come to.

An ``OpenUnit`` is fed by the span processor as the unit's DB and external calls end; when
the unit finishes, ``OpenUnit.figures()`` freezes them, ``breaches()`` checks them against the
budget that applies, and the processor hands one ``FinishedUnit`` to every consumer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry.trace import Span

from zenmetry import _names
from zenmetry.config._budgets import Budget
from zenmetry.config._limits import BY_NAME, Limits
from zenmetry.units._callsite import CallSite
from zenmetry.units._memtrace import Allocations
from zenmetry.units._no_timeout import Finding
from zenmetry.units._shapes import ROUND_TRIP

NEVER: Final = 2**62
"""A duration no call reaches: the slow-call check when ``slow_query_ms`` is off."""
_FAILED_STATES: Final = frozenset({"FAILURE", "RETRY"})


def failed(point: Mapping[str, str | int]) -> bool:
    """Whether a unit ended in error, by its metric point: a 5xx response, a Celery task that
    failed or is retried, a Django task that failed, a command that raised or exited non-zero."""
    status = point.get(_names.HTTP_RESPONSE_STATUS_CODE, 0)
    return (
        (isinstance(status, int) and status >= 500)
        or point.get(_names.CELERY_STATE) in _FAILED_STATES
        or point.get(_names.COMMAND_STATUS) == "ERROR"
        or point.get(_names.DJANGO_TASK_STATUS) == "FAILED"
    )


class OpenUnit:
    """Running figures of one unit. Mutated only by the span processor, under its lock (the
    threads a unit starts feed it at the same time)."""

    __slots__ = (
        "cache_calls",
        "cache_misses",
        "cache_ns",
        "db_ns",
        "db_spans",
        "enclosing",
        "external_calls",
        "external_ns",
        "finished",
        "kind",
        "limits_resolved",
        "name",
        "no_timeout",
        "no_timeout_sites",
        "other_spans",
        "overflow",
        "override",
        "pool_wait_ns",
        "queries",
        "queue_wait_ns",
        "repeated_crossing",
        "round_trips",
        "rss_start",
        "shapes",
        "shared",
        "sites",
        "slow",
        "slow_ns",
        "slowest_ns",
        "span",
        "span_id",
        "start_ns",
        "statements",
        "systems",
        "traced",
    )

    def __init__(self, kind: str, span: Span, start_ns: int, rss_start: int) -> None:
        self.kind = kind
        self.span = span
        self.span_id = span.get_span_context().span_id
        self.start_ns = start_ns
        self.rss_start = rss_start
        # True once another unit (not an enclosing one) ran in the process beside this one:
        # the RSS delta is then the process's, shared with it.
        self.shared = False
        # Queries as Django counts them; round trips as the server sees them (CONTRACT.md).
        self.queries = 0
        self.round_trips = 0
        self.db_ns = 0
        self.slowest_ns = 0
        self.systems: dict[str, list[int]] = {}
        # (system, shape key) -> [count, shape text]
        self.shapes: dict[tuple[str, str], list[Any]] = {}
        self.external_calls = 0
        self.external_ns = 0
        self.no_timeout = 0
        self.finished = False
        self.statements: list[Statement] | None = None
        # What the integrations said while the unit ran (``UnitProcessor.note_unit``).
        self.name: str | None = None
        self.override: Limits | None = None
        # The limits checked while calls end, resolved at the first DB call (or when the unit is
        # named): the count at which a shape crosses repeated_queries (-1: off), and the duration
        # over which a call is slow (NEVER: off). Until then every call is "slow", so that the
        # first DB call resolves them.
        self.limits_resolved = False
        self.repeated_crossing = -1
        self.slow_ns = 0
        # Call sites, taken only when a limit was crossed: per shape, the call that crossed
        # repeated_queries; per shape, its slowest call over slow_query_ms [ns, system, text, site].
        self.sites: dict[tuple[str, str], CallSite | None] = {}
        self.slow: dict[tuple[str, str], list[Any]] = {}
        self.no_timeout_sites: list[CallSite] = []
        self.traced = False
        self.cache_calls = self.cache_misses = self.cache_ns = 0
        self.pool_wait_ns = 0
        # A task's wait in its queue, when the enqueue (or due) time is known (``note_unit``).
        self.queue_wait_ns: int | None = None
        # The export verdict's: the DB spans held until the unit ends (None: none held), its other
        # spans held to carry its verdict (released whatever it is), whether more than MAX_HELD
        # came, and the open unit enclosing this one.
        self.db_spans: list[Any] | None = None
        self.other_spans: list[Any] | None = None
        self.overflow = False
        self.enclosing: OpenUnit | None = None

    def add_db(self, system: str, duration_ns: int, shape: tuple[str, str] | None) -> int:
        """Count one DB call, a round trip; a query too unless its shape is a round trip's
        (``_shapes.round_trip``). Returns how many times its shape ran so far (0: none counted)."""
        self.round_trips += 1
        self.db_ns += duration_ns
        if duration_ns > self.slowest_ns:  # noqa: PLR1730 - a comparison, not a call to max(), per DB call
            self.slowest_ns = duration_ns
        query = shape is None or shape[0] is not ROUND_TRIP
        per_system = self.systems.get(system)
        if per_system is None:
            self.systems[system] = [1 if query else 0, duration_ns]
        else:
            per_system[0] += query
            per_system[1] += duration_ns
        if self.statements is not None:
            self.statements.append(Statement(system, shape[1] if shape else "", duration_ns / 1e6, query))
        if not query:
            return 0
        self.queries += 1
        if shape is None:
            return 0
        key = (system, shape[0])
        seen = self.shapes.get(key)
        if seen is None:
            self.shapes[key] = [1, shape[1]]
            return 1
        count = seen[0] = seen[0] + 1
        return count  # type: ignore[no-any-return]

    def add_bare(self, system: str, text: str, *, query: bool) -> None:
        """Count a query or a round trip that is no DB call of its own: transaction control as
        Django logs it (``query``: ``BEGIN`` when ``atomic()`` opens a transaction, where the
        driver sends it later, or never for an empty block; ``COMMIT`` and ``ROLLBACK``, whose
        round trips are DB calls), or a round trip made inside another DB call (psycopg's
        describing a server-side cursor after its ``DECLARE``), whose time is that call's."""
        per_system = self.systems.get(system)
        if per_system is None:
            per_system = self.systems[system] = [0, 0]
        if query:
            self.queries += 1
            per_system[0] += 1
        else:
            self.round_trips += 1
        if self.statements is not None:
            self.statements.append(Statement(system, text, 0.0, query=query, round_trip=not query))

    def add_cache_call(self, duration_ns: int, missed: int) -> None:
        """One call through Django's cache API (``missed``: 1 for a read that found nothing)."""
        self.cache_calls += 1
        self.cache_misses += missed
        self.cache_ns += duration_ns

    def add_pool_wait(self, duration_ns: int) -> None:
        """Time spent waiting for a connection from a pool."""
        self.pool_wait_ns += duration_ns

    def add_slow(self, system: str, shape: tuple[str, str] | None, duration_ns: int, site: CallSite | None) -> None:
        """A call over ``slow_query_ms``: kept per shape, the slowest with its call site."""
        key = (system, shape[0] if shape else "")
        seen = self.slow.get(key)
        if seen is None or duration_ns > seen[0]:
            self.slow[key] = [duration_ns, system, shape[1] if shape else "", site]

    def add_external(self, duration_ns: int) -> None:
        self.external_calls += 1
        self.external_ns += duration_ns

    def figures(
        self, name: str, end_ns: int, rss_end: int, slow_ms: float = 0.0, allocations: Allocations | None = None
    ) -> Figures:
        """Freeze the running figures; called once, when the unit finishes. ``slow_ms`` is the
        unit's final ``slow_query_ms`` (0: off): the slow calls over it are kept."""
        # Only shapes that ran more than once can be reported as repeated.
        repeated = sorted(
            (
                Repetition(system, text, count, self.sites.get((system, key)))
                for (system, key), (count, text) in self.shapes.items()
                if count > 1
            ),
            key=lambda repetition: -repetition.count,
        )
        slow_ns = slow_ms * 1e6 if slow_ms else NEVER
        slow = sorted(
            (SlowQuery(system, text, ns / 1e6, site) for ns, system, text, site in self.slow.values() if ns > slow_ns),
            key=lambda query: -query.duration_ms,
        )
        return Figures(
            kind=self.kind,
            name=name,
            queries=self.queries,
            round_trips=self.round_trips,
            db_duration_ms=self.db_ns / 1e6,
            systems={system: (count, ns / 1e6) for system, (count, ns) in self.systems.items()},
            repeated_max=repeated[0].count if repeated else (1 if self.shapes else 0),
            repetitions=tuple(repeated),
            external_calls=self.external_calls,
            external_duration_ms=self.external_ns / 1e6,
            no_timeout=self.no_timeout,
            rss_delta_bytes=rss_end - self.rss_start,
            memory_shared=self.shared,
            duration_ms=max(end_ns - self.start_ns, 0) / 1e6,
            statements=tuple(self.statements) if self.statements is not None else None,
            slowest_ms=self.slowest_ns / 1e6,
            slow_queries=tuple(slow),
            no_timeout_sites=tuple(self.no_timeout_sites),
            allocations=allocations,
            queue_wait_ms=self.queue_wait_ns / 1e6 if self.queue_wait_ns is not None else None,
            cache_calls=self.cache_calls,
            cache_misses=self.cache_misses,
            cache_duration_ms=self.cache_ns / 1e6,
            pool_wait_ms=self.pool_wait_ns / 1e6,
        )


@dataclass(frozen=True, slots=True)
class Statement:
    """One query or round trip, in execution order (kept only when a test asks for it)."""

    system: str
    text: str
    duration_ms: float
    query: bool = True
    """A query (CONTRACT.md): a statement the application executed, or transaction control
    Django logs; False for a round trip of the driver's own (``BEGIN``, ``FETCH``, ...)."""
    round_trip: bool = True
    """An exchange with the server; False for transaction control Django logged where the
    driver sent nothing at that moment (``BEGIN``)."""


@dataclass(frozen=True, slots=True)
class Repetition:
    """How many times one statement shape ran in a unit, and the call that crossed
    ``repeated_queries`` (when one did)."""

    system: str
    text: str
    count: int
    site: CallSite | None = None


@dataclass(frozen=True, slots=True)
class SlowQuery:
    """A statement shape with a call over ``slow_query_ms``: its slowest call and where it was made."""

    system: str
    text: str
    duration_ms: float
    site: CallSite | None = None


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
    slowest_ms: float = 0.0
    slow_queries: tuple[SlowQuery, ...] = ()
    """Shapes with a call over ``slow_query_ms``, slowest first."""
    no_timeout_sites: tuple[CallSite, ...] = ()
    """Where the external calls without a timeout were made (the first ten)."""
    allocations: Allocations | None = None
    """What a traced unit still held at its end (``ZENMETRY_MEMORY_TRACE``)."""
    round_trips: int = 0
    """Exchanges with the databases' servers: statements, and the driver's own round trips."""
    queue_wait_ms: float | None = None
    """A task's wait in its queue, from its enqueue (or due) time to its start; None unknown."""
    cache_calls: int = 0
    """Calls through Django's cache API (``zen.cache.calls``)."""
    cache_misses: int = 0
    """The reads among them that found nothing (``zen.cache.misses``)."""
    cache_duration_ms: float = 0.0
    """Their time, for ``Server-Timing`` (their servers' commands are DB calls too)."""
    pool_wait_ms: float = 0.0
    """Time spent waiting for a connection from a pool (``zen.db.pool_wait_ms``), not DB time."""
    memory_shared: bool = False
    """Another unit ran in the process beside this one (threads, greenlets, ASGI): the RSS
    delta is the process's, shared with it, so ``memory_mb`` is not checked and no memory
    growth is recorded for this unit."""

    def actual(self, limit: str) -> int | float | None:
        """The figure a limit is checked against, in the limit's own unit (None: not known)."""
        row = BY_NAME[limit]
        value: int | float | None = getattr(self, row.figure)
        return value if row.scale == 1 or value is None else value / row.scale


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
        if limit == "memory_mb" and figures.memory_shared:
            continue  # the growth of the process, not this unit's own
        actual = figures.actual(limit)
        if actual is not None and actual > value:
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
    db_spans: str = _names.DB_SPANS_EXPORTED
    """``exported`` when the unit's DB spans were exported one by one, ``summarized`` otherwise."""
    findings: tuple[Finding, ...] = ()
    """Connections found without timeouts since the last unit, reported on this one's span."""

    @property
    def kind(self) -> str:
        return self.figures.kind

    @property
    def kept(self) -> bool:
        """``zen.unit.kept``: it breached a limit or ended in error, so its trace is kept."""
        return bool(self.breaches) or failed(self.point)

    # The unit span's figures, by their names there (``assert unit.queries == 3``).

    @property
    def queries(self) -> int:
        """``zen.db.queries``: queries as Django counts them."""
        return self.figures.queries

    @property
    def round_trips(self) -> int:
        """``zen.db.round_trips``: every exchange with the databases' servers."""
        return self.figures.round_trips

    @property
    def db_time_ms(self) -> float:
        """``zen.db.duration_ms``: the time of those round trips."""
        return self.figures.db_duration_ms

    @property
    def duration_ms(self) -> float:
        """``zen.duration_ms``: the unit's wall time."""
        return self.figures.duration_ms

    @property
    def external_calls(self) -> int:
        """``zen.external.calls``."""
        return self.figures.external_calls

    @property
    def name(self) -> str:
        return self.figures.name

    def site_of(self, limit: str) -> CallSite | None:
        """The call site that explains a breach of ``limit``, when there is one."""
        if limit == "repeated_queries":
            over = self.budget.limit(limit)
            return next((r.site for r in self.figures.repetitions if r.count > over and r.site), None)
        if limit == "slow_query_ms":
            return next((q.site for q in self.figures.slow_queries if q.site), None)
        return None

    def title(self) -> str:
        """``http GET orders/``, ``task shop.tasks.invoice``."""
        if self.kind == _names.KIND_HTTP:
            method = self.point.get(_names.HTTP_REQUEST_METHOD)
            return f"http {method} {self.name}" if method else f"http {self.name}"
        return f"{self.kind} {self.name}"
