"""zenmetry's metrics: one histogram per figure and the breach counter (meter ``zenmetry``).

Every point carries ``zen.unit.kind`` and ``zen.unit.name`` plus the bounded attributes its
kind adds (method and status code for ``http``, ``celery.state`` or ``django.task.status`` for
``task``, ``zen.command.status`` for ``command``); nothing
unbounded (path, id, user, statement) is ever recorded.

The points go into the SDK's own aggregations, bound once per attribute set. Through the
public ``record()``, every point pays the SDK's per-point work again: cleaning the attributes,
the exemplar filter, finding the reader storages and views, hashing the attributes to find the
aggregation (about 13 us per point, 8 points per unit: 107 us per unit on this machine). The
aggregation an attribute set lands in never changes while the readers stay the same, so the
first point of each set goes through ``record()``, which creates the aggregations, and the next
ones are handed to those aggregations directly (about 25 us per unit). The SDK still does all
the rest, so the output is the same: temporality, views, exemplars, readers, Prometheus.
Aggregating in zenmetry and handing the SDK finished points was the other way; it would be
cheaper still by ~20 us but has to redo temporality, views and exemplars per reader.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.metrics import MeterProvider, get_meter

from zenmetry import _names
from zenmetry.units._figures import FinishedUnit

# Bucket boundaries sized for requests and tasks; the SDK's defaults (0 to 10,000) suit
# neither seconds nor query counts.
_WAITS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""A task's queue wait, from nothing to an hour behind."""
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
        self.queue_wait = meter.create_histogram(
            _names.METRIC_QUEUE_WAIT,
            unit="s",
            description="Time a task waited in its queue, from its enqueue (or due) time to its start.",
            explicit_bucket_boundaries_advisory=_WAITS,
        )
        self.cache_calls = meter.create_histogram(
            _names.METRIC_CACHE_CALLS,
            unit="{call}",
            description="Calls through Django's cache API per unit (units that made any).",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.cache_misses = meter.create_histogram(
            _names.METRIC_CACHE_MISSES,
            unit="{call}",
            description="Cache reads that found nothing, per unit (units that called the cache).",
            explicit_bucket_boundaries_advisory=_COUNTS,
        )
        self.breaches = meter.create_counter(
            _names.METRIC_BREACHES,
            unit="{breach}",
            description="Budget limits exceeded, by zen.limit.",
        )

        self._consumer = getattr(self.duration, "_measurement_consumer", None)
        self._measurement, self._hash_attributes = _sdk_internals()
        # (instrument, unit attributes, system or limit) -> the SDK aggregations its points go
        # to in every reader, or None when the SDK's internals are not what _bind expects.
        self._bound: dict[tuple[Any, ...], tuple[Any, ...] | None] = {}
        self._storages: object = None

    def record(self, unit: FinishedUnit) -> None:
        """Record one finished unit, with its kind's own bounded point attributes."""
        storages = getattr(self._consumer, "_reader_storages", None)
        if storages is not self._storages:  # a reader was added or removed: bind again
            self._bound, self._storages = {}, storages
        figures = unit.figures
        base = {_names.UNIT_KIND: figures.kind, _names.UNIT_NAME: figures.name, **unit.point}
        points = _Points(self, tuple(base.items()))
        points.add(self.duration, figures.duration_ms / 1e3, base)
        if not figures.memory_shared:  # a shared figure is the process's, not this unit's
            points.add(self.memory_growth, max(figures.rss_delta_bytes, 0), base)
        points.add(self.external_calls, figures.external_calls, base)
        points.add(self.external_no_timeout, figures.no_timeout, base)
        if figures.queue_wait_ms is not None:
            points.add(self.queue_wait, figures.queue_wait_ms / 1e3, base)
        if figures.cache_calls:  # only units that called the cache: nothing to record for the others
            points.add(self.cache_calls, figures.cache_calls, base)
            points.add(self.cache_misses, figures.cache_misses, base)
        for system, (count, duration_ms) in figures.systems.items():
            per_system = {**base, _names.DB_SYSTEM: system}
            points.add(self.db_queries, count, per_system, system)
            points.add(self.db_duration, duration_ms / 1e3, per_system, system)
        overall = {**base, _names.DB_SYSTEM: _names.ALL_SYSTEMS}
        points.add(self.db_queries, figures.queries, overall, _names.ALL_SYSTEMS)
        points.add(self.db_duration, figures.db_duration_ms / 1e3, overall, _names.ALL_SYSTEMS)
        for breach in unit.breaches:
            points.add(self.breaches, 1, {**base, _names.LIMIT: breach.limit}, breach.limit)


_UNBOUND: Any = object()


class _Points:
    """The points of one unit: one time, one context and one exemplar decision for all."""

    __slots__ = ("_context", "_enabled", "_instruments", "_key", "_now", "_sample")

    def __init__(self, instruments: Instruments, key: tuple[Any, ...]) -> None:
        self._instruments = instruments
        self._key = key
        self._now = time.time_ns()
        self._context = get_current()
        self._sample: bool | None = None
        self._enabled = True

    def add(self, instrument: Any, value: float, attributes: Mapping[str, str | int], extra: str = "") -> None:
        bound, key = self._instruments._bound, (instrument, self._key, extra)
        aggregations = bound.get(key, _UNBOUND)
        if aggregations is _UNBOUND or aggregations is None or not 0 <= value < math.inf:
            # The SDK's own path, which also warns about a value it refuses. The first point of
            # an attribute set creates its aggregations: bind them for the next ones.
            if instrument is self._instruments.breaches:
                instrument.add(value, attributes, self._context)
            else:
                instrument.record(value, attributes, self._context)
            if aggregations is _UNBOUND:
                bound[key] = _bind(instrument, attributes, self._instruments._hash_attributes)
            return
        if self._sample is None:
            # What the SDK decides per point from the context, the same for all of them (and the
            # meter's enabled flag, the same for every instrument of it).
            config = self._instruments._consumer._sdk_config  # type: ignore[union-attr]
            self._enabled = instrument._is_enabled()
            self._sample = self._enabled and config.exemplar_filter.should_sample(value, self._now, None, self._context)
        if not self._enabled:
            return
        # No attributes on the measurement: the aggregation has them, and an exemplar carries
        # only the attributes a view filtered out of its point (none here).
        measurement = self._instruments._measurement(value, self._now, instrument, self._context, None)
        for aggregation in aggregations:
            aggregation.aggregate(measurement, self._sample)


def _sdk_internals() -> tuple[Any, Any]:
    """The SDK's ``Measurement`` and attribute hash the binding reaches (both None when absent:
    every point then takes ``record()``). Imported here, when the first unit records its points,
    not with this module: the test suite's processor records none, and importing the metrics SDK
    was an eighth of what the pytest plugin adds to a small suite."""
    try:
        from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
        from opentelemetry.sdk.metrics._internal.measurement import Measurement
    except ImportError:  # pragma: no cover - another SDK
        return None, None
    return Measurement, _hash_attributes


def _bind(instrument: Any, attributes: Mapping[str, str | int], hash_attributes: Any) -> tuple[Any, ...] | None:
    """The aggregations the SDK made for ``attributes`` in every reader's storage, found as its
    ``_ViewInstrumentMatch.consume_measurement`` finds them; None if its internals differ."""
    if hash_attributes is None:
        return None
    try:
        if not instrument._is_enabled():
            return None
        found = []
        for storage in instrument._measurement_consumer._reader_storages.values():
            for match in storage._instrument_view_instrument_matches[instrument]:
                keys = match._view._attribute_keys
                kept = dict(attributes) if keys is None else {k: v for k, v in attributes.items() if k in keys}
                found.append(match._attributes_aggregation[hash_attributes(kept)])
        return tuple(found)
    except (AttributeError, KeyError, TypeError):
        return None
