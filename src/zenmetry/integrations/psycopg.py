"""psycopg 3: DB spans for server-side cursors, which the instrumentation misses.

``opentelemetry-instrumentation-psycopg`` traces cursors made by ``cursor_factory``; named
(server-side) cursors come from ``ServerCursor``, which it never wraps. Django's
``QuerySet.iterator()`` on PostgreSQL uses one, so without this those queries would be
missing from their request. The wrapper reuses the instrumentation's own cursor tracer, so
the spans look exactly like the others.
"""

from __future__ import annotations

import weakref
from typing import Any, Final

import wrapt
from opentelemetry.instrumentation.psycopg import CursorTracer, DatabaseApiIntegration, PsycopgInstrumentor
from opentelemetry.instrumentation.psycopg.version import __version__

from zenmetry import _guard
from zenmetry.integrations import Integration

# The instrumentation's integration object for each connection, made at its first server-side
# cursor and dropped with the connection: a cache, not state (a new one would trace the same).
_integrations: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


class PsycopgIntegration(Integration):
    library = "psycopg"

    def after(self, entry_point: str) -> None:
        trace_server_cursors()


INTEGRATION: Final = PsycopgIntegration()


def trace_server_cursors() -> None:
    """Wrap ``psycopg.ServerCursor.execute`` (sync only: Django's ORM is sync underneath)."""
    wrapt.wrap_function_wrapper("psycopg", "ServerCursor.execute", _traced_execute)


def _traced_execute(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        tracer = _tracer_for(instance.connection)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg server-side cursor wrapper")
        return wrapped(*args, **kwargs)
    return tracer.traced_execution(instance, wrapped, *args, **kwargs)


def _tracer_for(connection: Any) -> Any:
    integration = _integrations.get(connection)
    if integration is None:
        integration = DatabaseApiIntegration(
            "opentelemetry.instrumentation.psycopg",
            PsycopgInstrumentor._DATABASE_SYSTEM,  # noqa: SLF001
            connection_attributes=PsycopgInstrumentor._CONNECTION_ATTRIBUTES,  # noqa: SLF001
            version=__version__,
        )
        integration.get_connection_attributes(connection)
        _integrations[connection] = integration
    return CursorTracer(integration)
