"""The consumers of a finished unit: the span writer, the metrics and the console line.

Each is a listener (``Listener``): the unit processor calls every listener it was given, in
order, with the ``FinishedUnit`` and its span (still open, or None when the unit ended without a
hook). ``listeners()`` is production's list; a test suite gives its own (``zenmetry.testing``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span

from zenmetry.outputs import _console
from zenmetry.outputs._span_writer import write
from zenmetry.units._figures import FinishedUnit

if TYPE_CHECKING:
    from zenmetry.config._settings import Settings
    from zenmetry.outputs._metrics import Instruments

Listener = Callable[[FinishedUnit, "Span | None"], None]
"""Called with every finished unit and its span."""


class Metrics:
    """Records each finished unit's metric points. The instruments are made at the first unit:
    the configurator builds the meter provider after the span processors."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        self._meter_provider = meter_provider
        self._instruments: Instruments | None = None

    def __call__(self, unit: FinishedUnit, span: Span | None) -> None:
        if self._instruments is None:
            from zenmetry.outputs._metrics import Instruments

            self._instruments = Instruments(self._meter_provider)
        self._instruments.record(unit)


def console(unit: FinishedUnit, span: Span | None) -> None:
    """The unit's console line on stderr (``ZENMETRY_CONSOLE``)."""
    _console.write(_console.line(unit))


def listeners(settings: Settings, meter_provider: MeterProvider | None = None) -> list[Listener]:
    """Production's consumers of a finished unit: the span writer, the metrics (through
    ``meter_provider``, the global one by default), and the console line when it is on."""
    found: list[Listener] = [write, Metrics(meter_provider)]
    if settings.console:
        found.append(console)
    return found
