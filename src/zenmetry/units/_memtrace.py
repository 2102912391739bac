"""Memory growth explained (``ZENMETRY_MEMORY_TRACE``): one unit's allocations traced with
``tracemalloc``, alone in its process.

By default (``breach``), after a unit breaches ``memory_mb`` the next unit of the same kind and
name is traced; a share traces that share of all units instead (decided from the trace id);
``off`` never traces. A trace starts only when no other unit is open in the process (threads and
ASGI share one heap: the figures would be someone else's), and is thrown away, the name staying
armed, if another unit opens while it runs; at most one trace a minute per name; tracing stops
when the unit ends, whatever happens. A process that already traces (its own ``tracemalloc``)
is left alone.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from dataclasses import dataclass
from typing import Final

from zenmetry.units._callsite import relative

MAX_SITES: Final = 10
EVERY_S: Final = 60.0
"""At most one trace per unit name in this time."""

_SHARE_SCALE: Final = 1 << 32
_EXCLUDED: Final = (tracemalloc.__file__, os.path.dirname(os.path.dirname(__file__)) + os.sep)  # zenmetry, from units/
"""Allocations of these files are tracing's own, or zenmetry's: not the unit's."""


@dataclass(frozen=True, slots=True)
class Allocations:
    """What a traced unit still held at its end: the largest sites first."""

    sites: tuple[str, ...]
    """``path:line size_bytes count``, at most ``MAX_SITES``."""
    traced_bytes: int
    """Everything still allocated at the unit's end, of what it allocated."""


class MemoryTracer:
    """Decides which unit to trace and traces it; used by the unit processor only."""

    def __init__(self) -> None:
        self._armed: set[tuple[str, str]] = set()
        self._last: dict[tuple[str, str], float] = {}
        self._tracing: int | None = None  # span id of the unit being traced
        self._spoiled = False

    def arm(self, mode: str | float, kind: str, name: str) -> None:
        """A unit breached ``memory_mb``: in ``breach`` mode, trace the next one of its name."""
        if mode == "breach":
            self._armed.add((kind, name))

    def wanted(self, mode: str | float, kind: str, name: str, trace_id: int) -> bool:
        """Whether the unit about to run should be traced (before the process is checked)."""
        if mode == "off":
            return False
        if mode == "breach":
            if (kind, name) not in self._armed:
                return False
        elif not isinstance(mode, float) or (trace_id % _SHARE_SCALE) >= mode * _SHARE_SCALE:
            return False
        last = self._last.get((kind, name))
        return last is None or time.monotonic() - last >= EVERY_S

    def start(self, span_id: int) -> bool:
        """Trace the unit ``span_id``; False if something in the process already traces."""
        if self._tracing is not None or tracemalloc.is_tracing():
            return False
        tracemalloc.start(1)
        self._tracing = span_id
        self._spoiled = False
        return True

    def another_unit_opened(self) -> None:
        """The trace running, if any, would count another unit's allocations: throw it away."""
        if self._tracing is not None:
            self._spoiled = True

    def own_memory(self) -> int:
        """What tracemalloc itself holds while it traces (its traces), in bytes."""
        return tracemalloc.get_tracemalloc_memory() if self._tracing is not None else 0

    def stop(self, span_id: int, kind: str, name: str) -> Allocations | None:
        """Stop tracing the unit ``span_id``; its allocations, unless the trace was spoiled."""
        if self._tracing != span_id:
            return None
        try:
            snapshot = None if self._spoiled else tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
            self._tracing = None
        if snapshot is None:
            return None
        self._armed.discard((kind, name))
        self._last[(kind, name)] = time.monotonic()
        # Grouped by line first, then the lines of tracemalloc and zenmetry dropped: filtering
        # the traces themselves matches a pattern per allocation, ten times slower.
        statistics = [
            stat for stat in snapshot.statistics("lineno") if not stat.traceback[0].filename.startswith(_EXCLUDED)
        ]
        sites = tuple(
            f"{relative(stat.traceback[0].filename)}:{stat.traceback[0].lineno} {stat.size} {stat.count}"
            for stat in statistics[:MAX_SITES]
        )
        return Allocations(sites, sum(stat.size for stat in statistics))
