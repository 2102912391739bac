"""Django's queries counted as Django counts them: transaction control where Django logs it,
connection set-up as round trips, and Django's own query log kept out of the figures."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Final

import wrapt
from opentelemetry import context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

from zenmetry import _guard
from zenmetry.units._processor import UnitProcessor


def quiet_debug_quoting() -> None:
    """Keep Django's own query log out of the figures.

    With ``DEBUG=True`` (or in ``assertNumQueries``), Django's SQLite backend logs each
    statement with its parameters quoted by SQLite itself: one extra ``SELECT QUOTE(?)`` per
    parameterised query, through the same connection. Those are Django's bookkeeping, not the
    application's queries, and would double every count and fake an N+1 on any page.
    """

    # Patched when Django loads its SQLite backend (importing it here, before the settings,
    # would trip Django's own import cycle between the backend's modules).
    @wrapt.when_imported("django.db.backends.sqlite3.base")
    def _patch(module: Any) -> None:
        wrapt.wrap_function_wrapper(module.DatabaseOperations, "_quote_params_for_last_executed_query", _unmeasured)


# Django's vendor -> the system its DB spans name (``db.system``).
_SYSTEMS: Final = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "oracle": "oracle"}


def count_transactions(processor: UnitProcessor) -> None:
    """Count transaction control where Django logs it, as Django counts it (CONTRACT.md).

    Django logs ``BEGIN`` when ``atomic()`` opens a transaction, and ``COMMIT`` and
    ``ROLLBACK``, through ``debug_transaction`` (``django.db.backends.utils``, since 4.2): a query
    of the unit open at that moment. The driver sends the ``BEGIN`` later, with the
    transaction's first statement (in a test, with the first statement of the test's own
    transaction, inside whichever unit makes it): that round trip is no query, so a test's
    transaction adds nothing to the units inside it. Savepoints are statements Django executes.
    """

    def patch(module: Any) -> None:
        if hasattr(module, "debug_transaction"):
            wrapt.wrap_function_wrapper(module, "debug_transaction", partial(_transaction_logged, processor))

    @wrapt.when_imported("django.db.backends.base.base")
    def _patch_base(module: Any) -> None:
        patch(module)
        wrapt.wrap_function_wrapper(module, "BaseDatabaseWrapper.connect", partial(_connecting, processor))
        # Its receivers run inside connect(), once the connection is set up: what they execute
        # through Django's cursor, Django logs (a session's search_path, say).
        wrapt.wrap_function_wrapper(module.connection_created, "send", partial(_created, processor))

    wrapt.when_imported("django.db.backends.oracle.base")(patch)  # its COMMIT has its own


def _connecting(processor: UnitProcessor, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ``connect()``: what Django sends to set a new connection up (its time zone, its
    role) goes through the raw driver, unlogged: round trips, not queries."""
    return processor.setting_up(lambda: wrapped(*args, **kwargs))


def _created(processor: UnitProcessor, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ``connection_created.send``: the set-up is over, its receivers' statements are queries."""
    return processor.set_up(lambda: wrapped(*args, **kwargs))


def _transaction_logged(
    processor: UnitProcessor, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    """Around ``debug_transaction(connection, sql)``: a query for the current units."""
    try:
        connection, sql = args if len(args) == 2 else (kwargs.get("connection"), kwargs.get("sql"))
        if not context.get_value(_SUPPRESS_INSTRUMENTATION_KEY):
            vendor = str(connection.vendor)
            processor.note_bare(trace.get_current_span(), _SYSTEMS.get(vendor, vendor), str(sql), query=True)
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django transaction hook")
    return wrapped(*args, **kwargs)


def _unmeasured(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    from opentelemetry.instrumentation.utils import suppress_instrumentation  # not at import: see UnitMiddleware

    with suppress_instrumentation():
        return wrapped(*args, **kwargs)
