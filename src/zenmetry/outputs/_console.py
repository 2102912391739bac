"""The console line (``ZENMETRY_CONSOLE=1``): one line per unit on stderr, for development."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from zenmetry import _names
from zenmetry.config._limits import MIB
from zenmetry.units._figures import Breach, Figures, FinishedUnit


def line(unit: FinishedUnit) -> str:
    """Format one unit, e.g. (one line)::

    zenmetry http GET orders/<int:pk>/ 200 | queries 10 (mongodb 3, postgresql 7) | db 12.3 ms
    | mem +1.2 MiB | ext 0 | 92.1 ms | BREACH queries 10>8, repeated_queries 9>5 at shop/views.py:41 orders

    A breach that a call explains names its call site; a call without a timeout names its own;
    a traced unit (``ZENMETRY_MEMORY_TRACE``) says what it still held and where most of it is.
    """
    figures, found = unit.figures, unit.breaches
    head = " ".join(str(part) for part in (figures.kind, *_point_head(figures, unit.point)))
    systems = ", ".join(f"{system} {count}" for system, (count, _) in sorted(figures.systems.items()))
    external = f"ext {figures.external_calls}"
    if figures.no_timeout:
        where = f" at {figures.no_timeout_sites[0]}" if figures.no_timeout_sites else ""
        external += f" ({figures.no_timeout} without timeout{where})"
    memory = f"mem {_signed_mib(figures.rss_delta_bytes)}" + (" shared" if figures.memory_shared else "")
    if figures.allocations is not None:
        memory += f" (traced: {_mib(figures.allocations.traced_bytes)} held"
        if figures.allocations.sites:
            site, size, _count = figures.allocations.sites[0].rsplit(" ", 2)
            memory += f", most at {site} {_mib(int(size))}"
        memory += ")"
    parts = [
        f"zenmetry {head}",
        queries(figures) + (f" ({systems})" if systems else ""),
        f"db {figures.db_duration_ms:.1f} ms",
        memory,
        external,
        f"{figures.duration_ms:.1f} ms",
    ]
    if figures.cache_calls:
        parts.insert(
            3, f"cache {figures.cache_calls} ({figures.cache_misses} miss{'' if figures.cache_misses == 1 else 'es'})"
        )
    if figures.queue_wait_ms is not None:
        parts.insert(-1, f"queued {figures.queue_wait_ms:.1f} ms")
    if found:
        parts.append("BREACH " + ", ".join(_breach(unit, breach) for breach in found))
    return " | ".join(parts)


def queries(figures: Figures) -> str:
    """``queries 3``, or ``queries 1 (12 round trips)`` when the driver made more exchanges."""
    text = f"queries {figures.queries}"
    if figures.round_trips != figures.queries:
        text += f" ({figures.round_trips} round trip{'' if figures.round_trips == 1 else 's'})"
    return text


def _breach(unit: FinishedUnit, breach: Breach) -> str:
    site = unit.site_of(breach.limit)
    return f"{breach.limit} {_number(breach.actual)}>{_number(breach.value)}" + (f" at {site}" if site else "")


def _point_head(figures: Figures, point: Mapping[str, str | int]) -> list[object]:
    if figures.kind == _names.KIND_HTTP:
        method = point.get(_names.HTTP_REQUEST_METHOD, "?")
        return [method, figures.name, point.get(_names.HTTP_RESPONSE_STATUS_CODE, "?")]
    if figures.kind == _names.KIND_COMMAND:
        return [figures.name, point.get(_names.COMMAND_STATUS, "?")]
    return [figures.name, point.get(_names.CELERY_STATE) or point.get(_names.DJANGO_TASK_STATUS, "?")]


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def _signed_mib(delta: int) -> str:
    return f"{'+' if delta >= 0 else '-'}{abs(delta) / MIB:.1f} MiB"


def _number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def write(text: str) -> None:
    """One write per line, so lines from concurrent units do not interleave.

    To the process's real stderr: Celery workers replace ``sys.stderr`` with a logger that
    would re-format every line as a warning.
    """
    stream = sys.__stderr__ or sys.stderr
    stream.write(text + "\n")
    stream.flush()
