"""The ``zenmetry`` distro: environment defaults and instrumentor hooks, nothing else.

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

from zenmetry import _config


class ZenmetryDistro(BaseDistro):
    """Defaults the user's environment can override, and zenmetry's instrumentor hooks."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "otlp")
        # OTLP over HTTP/protobuf: lighter on the request path than gRPC, and the only
        # exporter zenmetry installs.
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf")
        # A bad budget file or ZENMETRY_* variable stops the process here, before anything runs.
        _config.settings(exit_on_error=kwargs.get("exit_on_error", True))

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        name = entry_point.name
        if name == "django":
            from zenmetry import _django

            kwargs.setdefault("response_hook", _django.response_hook)
            _django.instrument_when_ready(lambda: super(ZenmetryDistro, self).load_instrumentor(entry_point, **kwargs))
            return
        if name == "pymongo":
            from zenmetry import _db_timeouts, _pymongo

            kwargs.setdefault("request_hook", _pymongo.request_hook)
            _db_timeouts.watch_mongo_clients()
        elif name in ("requests", "urllib3", "httpx", "urllib"):
            from zenmetry import _external

            # Before the instrumentation: for httpx both wrap one method, and the timeout check
            # must run inside the call's span.
            _external.install(name)
        elif name == "celery":
            from zenmetry import _celery

            # Connected before the instrumentation's own receivers, which end the span.
            _celery.connect()
        super().load_instrumentor(entry_point, **kwargs)
        if name == "psycopg":
            from zenmetry import _psycopg

            _psycopg.trace_server_cursors()
