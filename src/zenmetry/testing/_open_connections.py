"""Instrumenting late: the database connections a test process opened before ``zenmetry.testing``
instrumented it.

The driver instrumentations trace the connections opened *after* they load (they wrap
``connect``); a connection already open stays untraced, and a block measured on it would count
none of its queries. ``zenmetry.testing`` may be imported at any time (inside a test, long after
pytest-django opened the test database), so when it instruments the process it looks for the
Django connections already open, and traces each one in place (psycopg 3 needs nothing: zenmetry
traces its cursor classes themselves): for psycopg2 a
traced cursor factory derived from the connection's own (Django's cursor classes are kept), for
SQLite the instrumentation's connection proxy. A connection that cannot be traced is watched
instead (Django's ``execute_wrappers``): statements run on it while something measures are
counted, and the measurement fails saying why and how to fix it (``unmeasured()``).

The pytest plugin calls ``watch()`` at start-up, which remembers every Django connection opened
in any thread (Django's ``connection_created`` signal, a weak reference each); without it only
the connections of the instrumenting thread are found.
"""

from __future__ import annotations

import importlib
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

_opened: weakref.WeakSet[Any] = weakref.WeakSet()
"""Django connections (``DatabaseWrapper``) opened since ``watch()``, in any thread."""

_TRACED: Final = "_zenmetry_traced"
"""Set on a driver connection zenmetry traced late."""


class _Watch:
    """Counts the statements run on one connection that could not be traced."""

    def __init__(self, alias: str, vendor: str, why: str) -> None:
        self.alias, self.vendor, self.why = alias, vendor, why
        self.statements = 0

    def __call__(self, execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any) -> Any:
        self.statements += 1
        return execute(sql, params, many, context)


_watches: list[_Watch] = []
_lock = threading.Lock()


def watch() -> None:
    """Remember every Django connection opened from now on (the pytest plugin calls this early)."""
    if "django" not in sys.modules:
        return
    from django.db.backends.signals import connection_created

    connection_created.connect(_created, dispatch_uid="zenmetry-late-connections", weak=False)


def _created(sender: Any, connection: Any, **kwargs: Any) -> None:
    _opened.add(connection)


def instrument_open_connections(tracer_provider: Any) -> None:
    """Trace the Django connections open now (this thread's, and every one ``watch()`` saw)."""
    django = sys.modules.get("django.db")
    if django is None:
        return  # Django's databases were never used: every connection opens traced from now on
    wrappers = list(_opened)
    try:
        wrappers += [w for w in django.connections.all(initialized_only=True) if w not in wrappers]
    except Exception:  # noqa: BLE001  # Django's settings are not configured: no connection exists
        return
    with _lock:
        for wrapper in wrappers:
            if getattr(wrapper, "connection", None) is not None:
                _trace(wrapper, tracer_provider)


def _trace(wrapper: Any, tracer_provider: Any) -> None:
    connection = wrapper.connection
    module = type(connection).__module__.split(".")[0]
    try:
        if module == "psycopg":
            # zenmetry's psycopg integration traces the cursor classes themselves: every
            # connection, however old, is traced then, and a traced factory would count twice.
            if not _class_traced():
                _trace_cursor_factory(connection, "psycopg", tracer_provider)
        elif module == "psycopg2":
            _trace_cursor_factory(connection, "psycopg2", tracer_provider)
        elif module == "sqlite3" and wrapper.vendor == "sqlite":
            from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

            wrapper.connection = SQLite3Instrumentor.instrument_connection(connection, tracer_provider)
        elif "TracedConnectionProxy" not in type(connection).__name__:
            _unmeasurable(wrapper, f"zenmetry cannot trace an open {wrapper.vendor} connection")
    except Exception as error:  # noqa: BLE001  # the instrumentation refused it: say so where it matters
        _unmeasurable(wrapper, f"tracing it failed ({type(error).__name__}: {error})")


def _class_traced() -> bool:
    import psycopg

    return hasattr(psycopg.Cursor.execute, "__wrapped__")


def _trace_cursor_factory(connection: Any, driver: str, tracer_provider: Any) -> None:
    """Derive a traced cursor factory from the connection's own, as the instrumentation does
    for the connections it opens (it keeps the factory ``connect()`` was given)."""
    factory = connection.cursor_factory
    if getattr(connection, _TRACED, False) or "TracedCursorFactory" in getattr(factory, "__qualname__", ""):
        return
    instrumentation = importlib.import_module(f"opentelemetry.instrumentation.{driver}")
    connection.cursor_factory = instrumentation._new_cursor_factory(  # noqa: SLF001  # what its connect() uses
        base_factory=factory, tracer_provider=tracer_provider
    )
    setattr(connection, _TRACED, True)


def _unmeasurable(wrapper: Any, why: str) -> None:
    if any(isinstance(w, _Watch) for w in wrapper.execute_wrappers):
        return
    found = _Watch(wrapper.alias, wrapper.vendor, why)
    wrapper.execute_wrappers.append(found)
    _watches.append(found)


def unmeasured_since(before: dict[int, int]) -> list[str]:
    """Why a measurement missed statements: one line per connection that ran statements untraced
    since ``before`` (a ``counts()`` taken when the measurement started)."""
    return [
        f"{w.statements - before.get(id(w), 0)} statement(s) ran on the {w.vendor} connection {w.alias!r}, "
        f"which was opened before zenmetry instrumented this process ({w.why})"
        for w in _watches
        if w.statements > before.get(id(w), 0)
    ]


def counts() -> dict[int, int]:
    """The statements counted so far on the connections that could not be traced."""
    return {id(w): w.statements for w in _watches} if _watches else {}


HOW_TO_FIX: Final = (
    "so the block was not measured. Instrument before the first connection opens: import "
    "zenmetry.testing's helpers in conftest.py (from zenmetry.testing import assert_budget), or run pytest "
    "with --zenmetry (or zenmetry = true in the ini file)"
)
