"""zenmetry's parts wired as the configurator wires them, around the test's own exporters."""

from __future__ import annotations

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.trace import SpanProcessor

from zenmetry import outputs
from zenmetry.config._settings import Settings
from zenmetry.export._gate import ExportGate
from zenmetry.units._processor import UnitProcessor


def wired(
    settings: Settings | None = None, *exports: SpanProcessor, meter_provider: MeterProvider | None = None
) -> tuple[UnitProcessor, ExportGate]:
    """A unit processor with production's listeners (metrics through ``meter_provider``, none by
    default) and an export gate feeding ``exports``; add the processor to the provider."""
    settings = settings or Settings()
    gate = ExportGate(settings)
    for export in exports:
        gate.add(export)
    listeners = outputs.listeners(settings, meter_provider or NoOpMeterProvider())
    return UnitProcessor(settings, listeners=listeners, gate=gate), gate
