"""The ``zenmetry`` configurator, and ``configure()`` for processes started without the launcher.

It builds the SDK exactly as OpenTelemetry's own configurator does, with five additions:
the unit processor ahead of the exporting processor, the configured sampler wrapped so that
metrics stay exact whatever it drops, span exporters wrapped so that no statement literal
or query-string value is exported, exporting processors gated so that the DB spans of
healthy units are summarized by their figures (``ZENMETRY_DB_SPANS``), and an exit bounded to
``_outbox.FLUSH_TIMEOUT_MILLIS`` (the OTLP exporters' timeout too, unless the environment sets one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._configuration import _import_sampler, _OTelSDKConfigurator
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_TRACES_SAMPLER,
)
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler, _get_from_env_or_default

from zenmetry import _distro, _state, outputs
from zenmetry.export import _outbox
from zenmetry.export._gate import ExportGate
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.export._scrub import ScrubbingExporter
from zenmetry.units._processor import UnitProcessor

logger = logging.getLogger("zenmetry")
_NO_OP: Final = SpanProcessor()

OTEL_CONFIG_FILE = "OTEL_CONFIG_FILE"

_TIMEOUTS: Final = (
    (OTLPSpanExporter, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT),
    (OTLPMetricExporter, OTEL_EXPORTER_OTLP_METRICS_TIMEOUT),
    (OTLPLogExporter, OTEL_EXPORTER_OTLP_LOGS_TIMEOUT),
)


class ZenmetryConfigurator(_OTelSDKConfigurator):
    """OpenTelemetry's SDK set-up, plus the unit processor and the always-record sampler."""

    def _configure(self, **kwargs: Any) -> None:
        settings = _distro.settings(exit_on_error=True)
        gate = ExportGate(settings)
        processor = UnitProcessor(settings, listeners=outputs.listeners(settings), gate=gate)
        outbox = _outbox.Outbox()
        if os.environ.get(OTEL_CONFIG_FILE):
            # Declarative configuration ignores configurator arguments: add the processor to
            # whatever provider the file built, and say what is lost.
            super()._configure(**kwargs)
            provider = trace.get_tracer_provider()
            if isinstance(provider, TracerProvider):
                provider.add_span_processor(processor)
                logger.warning(
                    "zenmetry: %s is set; the unit processor was added to the provider it built, but its "
                    "sampler is not wrapped (zenmetry's metrics count sampled traces only) and neither are its "
                    "exporters (statements and URLs are exported as the instrumentations record them)",
                    OTEL_CONFIG_FILE,
                )
            else:
                logger.warning("zenmetry: %s built no SDK tracer provider; units are not measured", OTEL_CONFIG_FILE)
                return
        else:
            kwargs["sampler"] = AlwaysRecordSampler(kwargs.get("sampler") or _configured_sampler())
            export_processor = kwargs.get("export_span_processor") or BatchSpanProcessor

            # Each exporting processor is counted (for the exit's warning) and fed by the export
            # gate, which the unit processor feeds: a healthy unit's DB spans never reach it. The
            # provider gets the unit processor in place of the first, and a no-op for the others.
            def export_span_processor(exporter: Any, *args: Any, **options: Any) -> SpanProcessor:
                export = outbox.span_processor(export_processor, ScrubbingExporter(exporter), *args, **options)
                return processor if gate.add(export) == 1 else _NO_OP

            kwargs["export_span_processor"] = export_span_processor
            kwargs["exporter_args_map"] = _bounded_timeouts(kwargs.get("exporter_args_map"))
            super()._configure(**kwargs)
            provider = trace.get_tracer_provider()
            if not gate.exporting() and isinstance(provider, TracerProvider):
                provider.add_span_processor(processor)  # no trace exporter: measured all the same
        outbox.watch_metrics(metrics.get_meter_provider())
        _outbox.install(outbox)
        _state.state.outbox = outbox
        _state.state.processor = processor


def _bounded_timeouts(given: Mapping[type, Mapping[str, Any]] | None) -> dict[type, dict[str, Any]]:
    """The OTLP/HTTP exporters' arguments with their timeout set to the exit bound, for each
    signal whose timeout the environment does not set (the exporters read it in seconds)."""
    arguments = {exporter: dict(options) for exporter, options in (given or {}).items()}
    for exporter, variable in _TIMEOUTS:
        if not os.environ.get(variable) and not os.environ.get(OTEL_EXPORTER_OTLP_TIMEOUT):
            arguments.setdefault(exporter, {}).setdefault("timeout", _outbox.FLUSH_TIMEOUT_MILLIS / 1000)
    return arguments


def _configured_sampler() -> Sampler:
    """The sampler ``OTEL_TRACES_SAMPLER`` names (built-in or entry point), else the SDK default."""
    sampler = _import_sampler(os.environ.get(OTEL_TRACES_SAMPLER)) if os.environ.get(OTEL_TRACES_SAMPLER) else None
    return sampler or _get_from_env_or_default()


def configure() -> None:
    """Set up OpenTelemetry with zenmetry and instrument every installed library.

    For processes not started by ``opentelemetry-instrument``: call it in gunicorn's
    ``post_fork`` or Celery's ``worker_process_init``. It is idempotent, and a no-op in a
    process the launcher (or a parent before fork) has already configured. Bad settings
    raise ``zenmetry.ConfigError``.
    """
    if _state.state.processor is not None:
        return
    from opentelemetry.instrumentation.auto_instrumentation._load import _load_instrumentors

    distro = _distro.ZenmetryDistro()
    distro.configure(exit_on_error=False)
    _distro.settings(exit_on_error=False)
    ZenmetryConfigurator().configure()
    _load_instrumentors(distro)
