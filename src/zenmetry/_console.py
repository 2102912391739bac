"""The console line (``ZENMETRY_CONSOLE=1``): one line per unit on stderr, for development."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from zenmetry import _names
from zenmetry._limits import MIB
from zenmetry._units import Figures, FinishedUnit


def line(unit: FinishedUnit) -> str:
    """Format one unit, e.g. (one line)::

    zenmetry http GET orders/<int:pk>/ 200 | queries 10 (mongodb 3, postgresql 7) | db 12.3 ms
    | mem +1.2 MiB | ext 0 | 92.1 ms | BREACH queries 10>8
    """
    figures, found = unit.figures, unit.breaches
    head = " ".join(str(part) for part in (figures.kind, *_point_head(figures, unit.point)))
    systems = ", ".join(f"{system} {count}" for system, (count, _) in sorted(figures.systems.items()))
    parts = [
        f"zenmetry {head}",
        f"queries {figures.queries}" + (f" ({systems})" if systems else ""),
        f"db {figures.db_duration_ms:.1f} ms",
        f"mem {_signed_mib(figures.rss_delta_bytes)}",
        f"ext {figures.external_calls}" + (f" ({figures.no_timeout} without timeout)" if figures.no_timeout else ""),
        f"{figures.duration_ms:.1f} ms",
    ]
    if found:
        parts.append("BREACH " + ", ".join(f"{b.limit} {_number(b.actual)}>{_number(b.value)}" for b in found))
    return " | ".join(parts)


def _point_head(figures: Figures, point: Mapping[str, str | int]) -> list[object]:
    if figures.kind == _names.KIND_HTTP:
        method = point.get(_names.HTTP_REQUEST_METHOD, "?")
        return [method, figures.name, point.get(_names.HTTP_RESPONSE_STATUS_CODE, "?")]
    return [figures.name, point.get(_names.CELERY_STATE, "?")]


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
