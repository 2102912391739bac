"""The export verdict (``ZENMETRY_DB_SPANS``): a healthy unit's DB spans are summarized by its
figures instead of exported one by one.

The unit processor passes every span on to the exporting processors (``export_to``), except,
while a unit runs, its sampled DB spans (leaves: nothing downstream depends on them), which it
holds; when the unit finishes, the processor releases them to every exporting processor if the unit
breached a limit, ended in error or falls in ``ZENMETRY_DB_SPANS_RATIO`` (decided from the
trace id, so a trace is kept or summarized whole), and forgets them otherwise. Spans that carry
context to another process (external calls, Celery producer spans) are never held.
"""

from __future__ import annotations

from typing import Final

MAX_HELD: Final = 1000
"""DB spans held per unit. Past it the unit exports its DB spans as plain OpenTelemetry does:
the held ones are released at its end whatever its verdict, and the rest pass at once."""

_RATIO_SCALE: Final = 1 << 64


def in_ratio(trace_id: int, ratio: float) -> bool:
    """Whether a trace falls in ``ratio``: its id's lower 64 bits, as ``TraceIdRatioBased`` decides."""
    return (trace_id & (_RATIO_SCALE - 1)) < ratio * _RATIO_SCALE
