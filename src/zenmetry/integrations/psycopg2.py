"""psycopg2: one DB span per round trip the application asks the driver for.

``opentelemetry-instrumentation-psycopg2`` traces ``execute``, ``executemany`` and
``callproc`` of the cursors a connection's ``cursor_factory`` makes (psycopg2's cursor is a C
type: a subclass is the only way in). It misses what zenmetry adds here:

- cursors made with ``connection.cursor(cursor_factory=...)``: the classes of
  ``psycopg2.extras`` (``RealDictCursor``, ``NamedTupleCursor``, ``DictCursor``, the logging
  cursors) are Python classes, traced at the class level;
- a named (server-side) cursor's ``FETCH`` (``fetchone``/``fetchmany``/``fetchall``, and
  iteration when its buffer runs out), ``MOVE`` (``scroll``) and ``CLOSE``;
- the ``BEGIN`` psycopg2 sends, in C, before a transaction's first statement: zenmetry has
  psycopg2 send it just before the statement instead (``connection.lobject(1, "n")``: psycopg2
  begins the transaction as for any command, exactly as it would have, and ``"n"`` opens no
  large object), so that it is a span of its own and the statement's span does not contain it;
- ``COMMIT`` and ``ROLLBACK``: the connection's methods are C, so they are traced where Django
  calls them (``DatabaseWrapper._commit``/``_rollback``); a bare psycopg2 connection's
  ``commit()`` outside Django is not seen.

With psycopg2 the traced factory stays a subclass of the one the application gave (psycopg2
offers no other way in); with psycopg 3 zenmetry leaves the connection untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import psycopg2
import psycopg2.extensions
import psycopg2.extras
import wrapt
from opentelemetry.instrumentation.psycopg2 import CursorTracer, Psycopg2Instrumentor
from opentelemetry.instrumentation.psycopg2.version import __version__

from zenmetry import _guard
from zenmetry.integrations import Integration
from zenmetry.integrations._dbapi import call_in_span, traced_here
from zenmetry.integrations._statements import StatementTracer, Tracers
from zenmetry.units._processor import UnitProcessor

SCOPE: Final = "opentelemetry.instrumentation.psycopg2"
_UPSTREAM: Final = "opentelemetry.instrumentation.psycopg2"
_READY: Final = psycopg2.extensions.STATUS_READY
_IN_TRANSACTION: Final = psycopg2.extensions.STATUS_BEGIN
_NO_CLOSE: Final = frozenset(
    {psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN, psycopg2.extensions.TRANSACTION_STATUS_INERROR}
)
_ISOLATION: Final = {
    psycopg2.extensions.ISOLATION_LEVEL_READ_UNCOMMITTED: " ISOLATION LEVEL READ UNCOMMITTED",
    psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED: " ISOLATION LEVEL READ COMMITTED",
    psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ: " ISOLATION LEVEL REPEATABLE READ",
    psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE: " ISOLATION LEVEL SERIALIZABLE",
}
# The Python cursor classes of psycopg2.extras, which connection.cursor(cursor_factory=...)
# makes without going through the instrumentation.
_EXTRAS: Final = ("DictCursor", "RealDictCursor", "NamedTupleCursor", "LoggingCursor", "MinTimeLoggingCursor")
_STATEMENTS: Final = ("execute", "executemany", "callproc")
_FETCHES: Final = ("fetchone", "fetchmany", "fetchall")


class _Tracer(StatementTracer, CursorTracer):
    """The instrumentation's cursor tracer, tracing statements at less cost (_statements)."""


tracer_for: Final = Tracers(SCOPE, Psycopg2Instrumentor, psycopg2, __version__, _Tracer)
"""The instrumentation's cursor tracer for a connection, with its attributes."""


class Psycopg2Integration(Integration):
    library = "psycopg2"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        tracer_for.remember(kwargs, processor)

    def after(self, entry_point: str, processor: UnitProcessor) -> None:
        wrapt.wrap_function_wrapper(_UPSTREAM, "_new_cursor_factory", _factory_made)
        for name in _EXTRAS:
            trace_cursor_class(getattr(psycopg2.extras, name), statements=True)
        wrapt.register_post_import_hook(_trace_django, "django.db.backends.base.base")


INTEGRATION: Final = Psycopg2Integration()


def trace_cursor_class(cls: type, *, statements: bool) -> None:
    """Add what the instrumentation misses to a cursor class: the ``BEGIN`` before its
    statements (and, with ``statements``, the statements' own spans), and a named cursor's
    fetches, scrolls and close."""
    wrapper = _statement if statements else _begin_then
    for name in _STATEMENTS:
        wrapt.wrap_function_wrapper(cls, name, wrapper)
    for name in _FETCHES:
        wrapt.wrap_function_wrapper(cls, name, _fetch)
    wrapt.wrap_function_wrapper(cls, "__next__", _next)
    wrapt.wrap_function_wrapper(cls, "scroll", _scroll)
    wrapt.wrap_function_wrapper(cls, "close", _close)


def _factory_made(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """``_new_cursor_factory``: the instrumentation's traced cursor class, made per connection."""
    cls = wrapped(*args, **kwargs)
    try:
        trace_cursor_class(cls, statements=False)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 cursor factory")
    return cls


def _traced(connection: Any) -> bool:
    return traced_here(SCOPE) and not connection.closed


# -- statements ------------------------------------------------------------------------


def _statement(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """A statement of a cursor the instrumentation does not trace."""
    try:
        connection = instance.connection
        tracer = tracer_for(connection) if _traced(connection) else None
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 statement wrapper")
        tracer = None
    if tracer is None:
        return wrapped(*args, **kwargs)
    _begin_first(connection, instance)
    return tracer.execute(instance, wrapped, args, kwargs)


def _begin_then(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """A statement of the instrumentation's own cursor class (it makes the statement's span)."""
    try:
        connection = instance.connection
        begin = _traced(connection)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 statement wrapper")
        begin = False
    if begin:
        _begin_first(connection, instance)
    return wrapped(*args, **kwargs)


def _begin_first(connection: Any, cursor: Any) -> None:
    """Send the transaction's ``BEGIN`` now, in a span of its own, if psycopg2 is about to
    send it inside the statement. Its error, if it fails, is the statement's: it propagates."""
    try:
        if (
            connection.autocommit
            or connection.status != _READY
            or connection.async_
            or cursor.closed
            or psycopg2.extensions.get_wait_callback() is not None  # green mode refuses lobjects
        ):
            return
        tracer = tracer_for(connection)
        statement = _begin_statement(connection)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 BEGIN")
        return
    try:
        # The C method itself, not a subclass's override of it.
        call_in_span(tracer, cursor, statement, lambda: psycopg2.extensions.connection.lobject(connection, 1, "n"))
    except psycopg2.Error:
        raise
    except Exception:  # noqa: BLE001 - not the database's: psycopg2 sends the BEGIN itself, as usual
        _guard.swallow("the psycopg2 BEGIN")


def _begin_statement(connection: Any) -> str:
    """The ``BEGIN`` psycopg2 sends for this connection's session characteristics."""
    statement = "BEGIN" + _ISOLATION.get(connection.isolation_level, "")
    if connection.readonly is not None:
        statement += " READ ONLY" if connection.readonly else " READ WRITE"
    if connection.deferrable is not None:
        statement += " DEFERRABLE" if connection.deferrable else " NOT DEFERRABLE"
    return statement


# -- a named cursor's round trips --------------------------------------------------------


def _named(cursor: Any) -> Any:
    """The tracer for a named cursor's next call, or None (not named, closed, not traced)."""
    try:
        if cursor.name is None or cursor.closed or not _traced(cursor.connection):
            return None
        return tracer_for(cursor.connection)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 named cursor wrapper")
        return None


def _in_span(tracer: Any, cursor: Any, statement: str, call: Callable[[], Any]) -> Any:
    return call() if tracer is None else call_in_span(tracer, cursor, statement, call)


def _fetch(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tracer = _named(instance)
    if tracer is None:
        return wrapped(*args, **kwargs)
    name = wrapped.__name__
    size = "ALL" if name == "fetchall" else 1 if name == "fetchone" else (args[0] if args else kwargs.get("size"))
    statement = _fetch_statement(instance, size or instance.arraysize)
    return call_in_span(tracer, instance, statement, lambda: wrapped(*args, **kwargs))


def _next(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tracer = _named(instance)
    try:
        # Iterating a named cursor fetches itersize rows whenever its buffer is used up.
        if tracer is not None and instance.rownumber < instance.rowcount:
            tracer = None
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 named cursor wrapper")
        tracer = None
    statement = _fetch_statement(instance, instance.itersize) if tracer is not None else ""
    return _in_span(tracer, instance, statement, lambda: wrapped(*args, **kwargs))


def _scroll(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tracer = _named(instance)
    return _in_span(tracer, instance, f'MOVE ? FROM "{instance.name}"', lambda: wrapped(*args, **kwargs))


def _close(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tracer = _named(instance)
    try:
        if tracer is not None and instance.connection.info.transaction_status in _NO_CLOSE:
            tracer = None  # psycopg2 then closes it locally only
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 named cursor wrapper")
        tracer = None
    return _in_span(tracer, instance, f'CLOSE "{instance.name}"', lambda: wrapped(*args, **kwargs))


def _fetch_statement(cursor: Any, size: object) -> str:
    return f'FETCH FORWARD {size} FROM "{cursor.name}"'


# -- COMMIT and ROLLBACK, where Django calls them ----------------------------------------------


def _trace_django(module: Any) -> None:
    try:
        wrapt.wrap_function_wrapper(module, "BaseDatabaseWrapper._commit", _ending("COMMIT"))
        wrapt.wrap_function_wrapper(module, "BaseDatabaseWrapper._rollback", _ending("ROLLBACK"))
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg2 transaction wrappers")


def _ending(statement: str) -> Callable[..., Any]:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        connection = None
        try:
            connection = instance.connection
            tracer = (
                tracer_for(connection)
                if isinstance(connection, psycopg2.extensions.connection)
                and connection.status == _IN_TRANSACTION  # otherwise psycopg2 sends nothing
                and _traced(connection)
                else None
            )
        except Exception:  # noqa: BLE001
            _guard.swallow("the psycopg2 transaction wrapper")
            tracer = None
        return _in_span(tracer, connection, statement, lambda: wrapped(*args, **kwargs))

    return wrapper
