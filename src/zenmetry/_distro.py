"""The ``zenmetry`` distro: environment defaults, and a loop over zenmetry's integrations.

``opentelemetry-instrument`` calls ``configure()`` first, then the configurator, then
``load_instrumentor()`` for every installed instrumentation.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # untyped module
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL
from opentelemetry.util._importlib_metadata import EntryPoint

from zenmetry import _green, _state, integrations


class ZenmetryDistro(BaseDistro):
    """Defaults the user's environment can override, and zenmetry's integrations."""

    def _configure(self, **kwargs: Any) -> None:
        # First: a gevent or eventlet worker is patched before the SDK creates anything.
        _green.patch()
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        # OTLP over HTTP/protobuf: lighter on the request path than gRPC, and the only
        # exporter zenmetry installs.
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")
        # A bad budget file or ZENMETRY_* variable stops the process here, before anything runs.
        _state.settings(exit_on_error=kwargs.get("exit_on_error", True))

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        integration = integrations.for_entry_point(entry_point.name)
        if integration is None:
            super().load_instrumentor(entry_point, **kwargs)
            return
        integration.before(entry_point.name, kwargs)

        def instrument() -> None:
            super(ZenmetryDistro, self).load_instrumentor(entry_point, **kwargs)
            integration.after(entry_point.name)

        integration.load(instrument)
