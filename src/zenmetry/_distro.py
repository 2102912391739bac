"""The ``zenmetry`` distro: environment defaults, and a loop over zenmetry's integrations.

``opentelemetry-instrument`` calls ``configure()`` first, then the configurator, then
``load_instrumentor()`` for every installed instrumentation.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER, OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # untyped module
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_PROTOCOL
from opentelemetry.util._importlib_metadata import EntryPoint

from zenmetry import _cooperative, _state, integrations
from zenmetry._errors import ConfigError
from zenmetry.config._settings import Settings


class ZenmetryDistro(BaseDistro):
    """Defaults the user's environment can override, and zenmetry's integrations."""

    def _configure(self, **kwargs: Any) -> None:
        # First: a gevent or eventlet worker is patched before the SDK creates anything.
        _cooperative.patch()
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        # OTLP over HTTP/protobuf: lighter on the request path than gRPC, and the only
        # exporter zenmetry installs.
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")
        # A bad budget file or ZENMETRY_* variable stops the process here, before anything runs.
        settings(exit_on_error=kwargs.get("exit_on_error", True))

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        # The processor the configurator made (or zenmetry.testing): each integration's hooks
        # report to it. Without one, zenmetry is not configured here and adds nothing.
        processor = _state.state.processor
        integration = integrations.for_entry_point(entry_point.name) if processor is not None else None
        if processor is None or integration is None:
            super().load_instrumentor(entry_point, **kwargs)
            return
        integration.before(entry_point.name, kwargs, processor)

        def instrument() -> None:
            super(ZenmetryDistro, self).load_instrumentor(entry_point, **kwargs)
            integration.after(entry_point.name, processor)

        integration.load(instrument)


def settings(*, exit_on_error: bool) -> Settings:
    """This process's settings (``_state``). A bad setting raises ``ConfigError``, or with
    ``exit_on_error`` prints one line per problem and exits with status 2: the launcher swallows
    exceptions raised while configuring, so stopping is zenmetry's job."""
    try:
        return _state.settings()
    except ConfigError as error:
        if not exit_on_error:
            raise
        sys.stderr.write("".join(f"zenmetry: {problem}\n" for problem in error.problems))
        sys.stderr.write("zenmetry: fix the configuration above; the process was not started\n")
        sys.stderr.flush()
        # SystemExit inside sitecustomize becomes "Fatal Python error" with exit status 1.
        os._exit(2)
