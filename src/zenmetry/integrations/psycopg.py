"""psycopg 3: one DB span per round trip the application asks the driver for, and every
connection left exactly as the application made it.

``opentelemetry-instrumentation-psycopg`` traces a connection by replacing its
``cursor_factory`` with a subclass of its own: the application then reads back a class it
never set (Django's ``OPTIONS["cursor_factory"]`` and ``server_side_binding`` tests fail on
it), and whatever does not go through that factory is missed: server-side cursors, the
``BEGIN`` psycopg sends before a transaction's first statement, ``COMMIT``, ``ROLLBACK``,
``FETCH`` and ``CLOSE``. zenmetry takes the instrumentation's connect wrappers off again and
traces at the class level instead, with the instrumentation's own ``CursorTracer`` (the
spans carry the same name and attributes as upstream's):

- a statement: ``execute``/``executemany`` of ``Cursor`` and ``AsyncCursor`` (and so of
  ``ClientCursor``, ``RawCursor`` and every application subclass), and ``execute`` of the
  server-side cursors (their ``DECLARE``);
- an internal command, ``BaseConnection._exec_command``: the implicit ``BEGIN``, ``COMMIT``,
  ``ROLLBACK``, a server-side cursor's ``FETCH``, ``MOVE`` and ``CLOSE``, the savepoints of
  ``Connection.transaction()``, two-phase commands and ``DEALLOCATE``;
- a server-side cursor's ``DESCRIBE`` of its portal, the round trip psycopg makes after the
  ``DECLARE``, inside its statement: a round trip without a span, its time the statement's.

A transaction's ``BEGIN`` travels inside its first statement's call; zenmetry sends that same
command just before the statement (what psycopg itself would do first), so that it is a span
of its own and the statement's span does not contain it: durations never overlap, and their
sum is the time spent in the database. Pipeline mode batches round trips: its commands are
not counted one by one.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Generator
from functools import partial
from typing import Any, Final

import psycopg
import wrapt
from opentelemetry import context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from psycopg import pq
from psycopg.sql import Composable

from zenmetry import _guard
from zenmetry.integrations import Integration
from zenmetry.integrations._dbapi import Statements, spanned, traced_here
from zenmetry.units._processor import UnitProcessor

SCOPE: Final = "opentelemetry.instrumentation.psycopg"
_IDLE: Final = pq.TransactionStatus.IDLE
_SERVER_CURSORS: Final = (psycopg.ServerCursor, psycopg.AsyncServerCursor)


@functools.cache
def upstream() -> Any:
    """The instrumentation's cursor tracer for each connection, with its attributes
    (``_statements.Tracers``); its class is ``upstream().tracer``."""
    from opentelemetry.instrumentation.psycopg import CursorTracer, PsycopgInstrumentor
    from opentelemetry.instrumentation.psycopg.version import __version__

    from zenmetry.integrations._statements import StatementTracer, Tracers

    class Tracer(StatementTracer, CursorTracer):
        """The instrumentation's cursor tracer, tracing statements at less cost (_statements)."""

    return Tracers(SCOPE, PsycopgInstrumentor, psycopg, __version__, Tracer)


def _untraced(connection: Any) -> Statements | None:
    return None


tracer_for: Callable[[Any], Statements | None] = _untraced
"""A connection's statement tracer, None where nothing is traced: the instrumentation's
(``upstream()``), or a test suite's (``zenmetry.testing``); given once, by ``trace_psycopg``.
A module global, read for every statement (an attribute of an object would cost a look-up more)."""


class PsycopgIntegration(Integration):
    library = "psycopg"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        upstream().remember(kwargs, processor)

    def after(self, entry_point: str, processor: UnitProcessor) -> None:
        # Upstream's connect wrappers swap the connection's cursor_factory: take them off.
        # Read from __dict__: through the class, a wrapped classmethod would come back bound.
        for owner in (psycopg, psycopg.Connection, psycopg.AsyncConnection):
            wrapper = vars(owner).get("connect")
            if isinstance(wrapper, wrapt.BaseObjectProxy):
                setattr(owner, "connect", wrapper.__wrapped__)  # noqa: B010
        trace_psycopg(upstream(), processor)


INTEGRATION: Final = PsycopgIntegration()


def trace_psycopg(statements: Callable[[Any], Statements | None], processor: UnitProcessor) -> None:
    """Trace psycopg's round trips with ``statements`` (a connection's tracer, None where nothing
    is traced), for ``processor``'s units: wrap its cursor and connection classes (see the
    module docstring)."""
    global tracer_for  # noqa: PLW0603 - given once per process, before any statement
    tracer_for = statements
    for name in ("Cursor.execute", "Cursor.executemany", "ServerCursor.execute"):
        wrapt.wrap_function_wrapper("psycopg", name, _statement)
    for name in ("AsyncCursor.execute", "AsyncCursor.executemany", "AsyncServerCursor.execute"):
        wrapt.wrap_function_wrapper("psycopg", name, _statement_async)
    wrapt.wrap_function_wrapper("psycopg._connection_base", "BaseConnection._exec_command", _command)
    wrapt.wrap_function_wrapper(
        "psycopg._server_cursor_base", "ServerCursorMixin._describe_gen", partial(_describe, processor)
    )
    wrapt.when_imported("psycopg_pool")(partial(_trace_pool, processor))


# -- statements ------------------------------------------------------------------------


def _statement(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tracer, connection, ahead = _prepare(instance)
    if tracer is None:
        return wrapped(*args, **kwargs)
    if ahead:
        # Errors here are the statement's own (its BEGIN failed): the application gets them.
        try:
            with connection.lock:
                for generator in ahead:
                    connection.wait(generator)
        except psycopg.Error:
            raise
        except Exception:  # noqa: BLE001 - not the database's: psycopg sends what is left, as usual
            _guard.swallow("the psycopg round trips ahead of a statement")
    return tracer.execute(instance, wrapped, args, kwargs)


async def _statement_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    tracer, connection, ahead = _prepare(instance)
    if tracer is None:
        return await wrapped(*args, **kwargs)
    if ahead:
        try:
            async with connection.lock:
                for generator in ahead:
                    await connection.wait(generator)
        except psycopg.Error:
            raise
        except Exception:  # noqa: BLE001
            _guard.swallow("the psycopg round trips ahead of a statement")
    return await tracer.execute_async(instance, wrapped, args, kwargs)


_NOTHING: Final[list[Any]] = []  # never appended to


def _prepare(cursor: Any) -> tuple[Any, Any, list[Any]]:
    """The tracer, connection and round trips to send first for a statement on ``cursor``;
    no tracer when the statement is not to be traced on its own."""
    try:
        if not traced_here(SCOPE):
            return None, None, _NOTHING
        connection = cursor._conn  # noqa: SLF001
        tracer = tracer_for(connection)
        if tracer is None:
            return None, None, _NOTHING
        return tracer, connection, _ahead(cursor, connection)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg statement wrapper")
        return None, None, _NOTHING


def _ahead(cursor: Any, connection: Any) -> list[Any]:
    """The round trips psycopg would make at the start of this statement, before its own:
    closing a server-side cursor being reused, and the transaction's ``BEGIN``. Sent first,
    each is a span of its own, outside the statement's."""
    # A client cursor in autocommit (Django's default) sends nothing first: answered before
    # anything else is read. Only a server-side cursor has ``_described`` (Cursor has slots,
    # where a missing attribute costs an exception).
    described = isinstance(cursor, _SERVER_CURSORS) and cursor._described  # noqa: SLF001
    if connection._autocommit and not described:  # noqa: SLF001
        return _NOTHING
    if cursor.closed or connection._pipeline or connection.closed:  # noqa: SLF001
        return _NOTHING  # psycopg raises, or batches: leave it all to psycopg
    ahead = []
    if described:  # ServerCursor._declare_gen does this first
        ahead.append(_close_server_cursor(cursor))
    if not connection._autocommit and connection.pgconn.transaction_status == _IDLE:  # noqa: SLF001
        ahead.append(connection._start_query())  # noqa: SLF001
    return ahead


def _close_server_cursor(cursor: Any) -> Generator[Any, Any, None]:
    yield from cursor._close_gen()  # noqa: SLF001
    cursor._described = False  # noqa: SLF001


def _describe(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    generator = wrapped(*args, **kwargs)
    try:
        connection = instance._conn  # noqa: SLF001
        if (
            not connection._pipeline  # noqa: SLF001
            and not context.get_value(_SUPPRESS_INSTRUMENTATION_KEY)
            and tracer_for(connection) is not None
        ):
            processor.note_bare(trace.get_current_span(), "postgresql", "DESCRIBE", query=False)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg describe wrapper")
    return generator


# -- connection pools ------------------------------------------------------------------


def _trace_pool(processor: UnitProcessor, module: Any) -> None:
    """psycopg_pool (used directly, or by Django's ``OPTIONS["pool"]``): the time a unit waits
    for a connection (``getconn``, which ``connection()`` calls too) is its pool wait, apart from
    its DB time."""
    wrapt.wrap_function_wrapper(module, "ConnectionPool.getconn", partial(_getconn, processor))
    wrapt.wrap_function_wrapper(module, "AsyncConnectionPool.getconn", partial(_getconn_async, processor))


def _getconn(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    started = time.perf_counter_ns()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _waited(processor, time.perf_counter_ns() - started)


async def _getconn_async(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    started = time.perf_counter_ns()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _waited(processor, time.perf_counter_ns() - started)


def _waited(processor: UnitProcessor, duration_ns: int) -> None:
    try:
        processor.note_pool_wait(trace.get_current_span(), duration_ns)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg pool wrapper")


# -- internal commands -----------------------------------------------------------------


def _command(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    generator = wrapped(*args, **kwargs)
    try:
        if instance._pipeline or not traced_here(SCOPE):  # noqa: SLF001
            return generator
        tracer = tracer_for(instance)
        if tracer is None:
            return generator
        command = args[0] if args else kwargs["command"]
        if isinstance(command, bytes):
            statement = command.decode("utf-8", "replace")
        elif isinstance(command, Composable):
            statement = command.as_string(instance)
        else:
            statement = str(command)
        return spanned(tracer, instance, statement, generator)
    except Exception:  # noqa: BLE001
        _guard.swallow("the psycopg command wrapper")
        return generator
