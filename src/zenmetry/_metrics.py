"""zenmetry's metrics: one histogram per figure and the breach counter (meter ``zenmetry``).

Every point carries ``zen.unit.kind`` and ``zen.unit.name`` plus the bounded attributes its
kind adds (method and status code for ``http``, ``celery.state`` for ``task``); nothing
unbounded (path, id, user, statement) is ever recorded.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.metrics import MeterProvider, get_meter

from zenmetry import _names
from zenmetry._units import FinishedUnit

# Bucket boundaries sized for requests and tasks; the SDK's defaults (0 to 10,000) suit
# neither seconds nor query counts.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 300)
_COUNTS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000)
_BYTES = tuple(float(2**power) for power in range(16, 31, 2))  # 64 KiB .. 1 GiB

Attributes = Mapping[str, str | int]


class Instruments:
    """The instruments, created once per meter provider."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        from zenmetry import __version__

        meter = get_meter(_names.METER_NAME, __version__, meter_provider)
        self.duration = meter.create_histogram(
            _names.METRIC_DURATION,
            unit="s",
            description="Wall time of a request or task.",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.db_queries = meter.create_histogram(
            _names.METRIC_DB_QUERIES,
            unit="{query}",
            description="DB calls per unit, per db.system and all.",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.db_duration = meter.create_histogram(
            _names.METRIC_DB_DURATION,
            unit="s",
            description="Time in DB calls per unit, per db.system and all.",
            explicit_bucket_boundaries_advisory=_SECONDS,
        )
        self.memory_growth = meter.create_histogram(
            _names.METRIC_MEMORY_GROWTH,
            unit="By",
            description="Resident set size growth per unit (0 when it shrank).",
            explicit_bucket_boundaries_advisory=_BYTES,
        )
        self.external_calls = meter.create_histogram(
            _names.METRIC_EXTERNAL_CALLS,
            unit="{call}",
            description="Calls to external systems per unit.",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.external_no_timeout = meter.create_histogram(
            _names.METRIC_EXTERNAL_NO_TIMEOUT,
            unit="{call}",
            description="External calls made without a timeout, per unit.",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.breaches = meter.create_counter(
            _names.METRIC_BREACHES,
            unit="{breach}",
            description="Budget limits exceeded, by zen.limit.",
        )

    def record(self, unit: FinishedUnit) -> None:
        """Record one finished unit, with its kind's own bounded point attributes."""
        figures = unit.figures
        base = {_names.UNIT_KIND: figures.kind, _names.UNIT_NAME: figures.name, **unit.point}
        self.duration.record(figures.duration_ms / 1e3, base)
        if not figures.memory_shared:  # a shared figure is the process's, not this unit's
            self.memory_growth.record(max(figures.rss_delta_bytes, 0), base)
        self.external_calls.record(figures.external_calls, base)
        self.external_no_timeout.record(figures.no_timeout, base)
        for system, (count, duration_ms) in figures.systems.items():
            per_system = {**base, _names.DB_SYSTEM: system}
            self.db_queries.record(count, per_system)
            self.db_duration.record(duration_ms / 1e3, per_system)
        overall = {**base, _names.DB_SYSTEM: _names.ALL_SYSTEMS}
        self.db_queries.record(figures.queries, overall)
        self.db_duration.record(figures.db_duration_ms / 1e3, overall)
        for breach in unit.breaches:
            self.breaches.add(1, {**base, _names.LIMIT: breach.limit})
