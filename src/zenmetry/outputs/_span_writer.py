"""The span writer: a finished unit's figures, breach events and explanations on its span.

The unit span is still open when the hooks finish a unit (a span cannot be changed once
``end()`` has begun): the Django response hook, Celery's ``task_postrun`` receiver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from zenmetry import _names
from zenmetry.units._figures import FinishedUnit


def write(unit: FinishedUnit, span: Span | None) -> None:
    """Write ``unit``'s figures and events on its span, while the span is still open."""
    if span is None or not span.is_recording():
        return
    figures, source, found = unit.figures, unit.budget.source, unit.breaches
    attributes: dict[str, str | int | float | tuple[str, ...]] = {
        _names.UNIT_KIND: figures.kind,
        _names.UNIT_NAME: figures.name,
        _names.DB_QUERIES: figures.queries,
        _names.DB_ROUND_TRIPS: figures.round_trips,
        _names.DB_DURATION_MS: figures.db_duration_ms,
        _names.DB_REPEATED_MAX: figures.repeated_max,
        _names.EXTERNAL_CALLS: figures.external_calls,
        _names.EXTERNAL_DURATION_MS: figures.external_duration_ms,
        _names.EXTERNAL_NO_TIMEOUT: figures.no_timeout,
        _names.DB_SLOWEST_MS: figures.slowest_ms,
        _names.MEMORY_RSS_DELTA: figures.rss_delta_bytes,
        _names.MEMORY_SHARED: figures.memory_shared,
        _names.DURATION_MS: figures.duration_ms,
        _names.BUDGET: source,
        _names.DB_POOL_WAIT_MS: figures.pool_wait_ms,
        _names.CACHE_CALLS: figures.cache_calls,
        _names.CACHE_MISSES: figures.cache_misses,
        _names.DB_SPANS: unit.db_spans,
    }
    for system, (count, duration_ms) in figures.systems.items():
        attributes[_names.db_system_queries(system)] = count
        attributes[_names.db_system_duration_ms(system)] = duration_ms
    if figures.queue_wait_ms is not None:
        attributes[_names.TASK_QUEUE_WAIT_MS] = figures.queue_wait_ms
    if found:
        attributes[_names.BUDGET_BREACHED] = tuple(breach.limit for breach in found)
    if unit.kept:
        attributes[_names.UNIT_KEPT] = True
    write_attributes(span, attributes)
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
                    **(repetition.site.attributes() if repetition.site else {}),
                },
            )
    for slow in figures.slow_queries:
        span.add_event(
            _names.EVENT_SLOW_QUERY,
            {
                _names.STATEMENT_FINGERPRINT: slow.text,
                _names.DURATION_MS: slow.duration_ms,
                _names.DB_SYSTEM: slow.system,
                **(slow.site.attributes() if slow.site else {}),
            },
        )
    if figures.allocations is not None:
        span.add_event(
            _names.EVENT_ALLOCATIONS,
            {
                _names.MEMORY_SITES: list(figures.allocations.sites),
                _names.MEMORY_TRACED_BYTES: figures.allocations.traced_bytes,
            },
        )
    for finding in unit.findings:
        span.add_event(
            _names.EVENT_CONFIG_NO_TIMEOUT,
            {
                _names.DB_SYSTEM: finding.system,
                _names.CONFIG_SOURCE: finding.source,
                _names.CONFIG_MISSING: list(finding.missing),
            },
        )


def write_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """``span.set_attributes(attributes)`` for values that are valid attribute values already
    (str, bool, int, float, tuples of str: zenmetry's own figures).

    The SDK cleans every value it is given (type checks, sequences copied, strings cut to the
    value length limit) and inserts each under its lock: 25 us for a unit's 16 figures, more than
    the rest of its finish. With no limit to apply (none is set by default) they go straight
    into the SDK's dict, under the span's lock as ``set_attributes`` takes it; with a count or
    length limit set, or another kind of span, through ``set_attributes``.
    """
    bounded = getattr(span, "_attributes", None)
    inner = getattr(bounded, "_dict", None)
    lock = getattr(span, "_lock", None)
    if (
        isinstance(inner, dict)
        and lock is not None
        and bounded.max_value_len is None  # type: ignore[union-attr]
        and (bounded.maxlen is None or len(inner) + len(attributes) <= bounded.maxlen)  # type: ignore[union-attr]
    ):
        with lock:
            if span._end_time is None and not bounded._immutable:  # type: ignore[attr-defined,union-attr]  # noqa: SLF001
                inner.update(attributes)
                return
    span.set_attributes(attributes)
