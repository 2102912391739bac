"""What libpq sent: its own trace (``PQtrace``) of a connection, for exact round-trip counts.

psycopg 3 exposes the trace (``PGconn.trace``); psycopg2 does not, so its connection's ``PGconn``
(``pgconn_ptr``) is traced through the libpq its wheel ships, the very library it is linked to.
A round trip is one exchange the client waits on: a simple ``Query`` message, or an extended-
protocol batch (``Parse``/``Bind``/``Describe``/``Execute``) closed by ``Sync``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SUPPRESS_TIMESTAMPS_AND_REGRESS = 1 | 2  # PQTRACE_SUPPRESS_TIMESTAMPS | PQTRACE_REGRESS_MODE
_ROUND_TRIPS = frozenset({"Query", "Sync"})


def round_trips(trace: str) -> list[str]:
    """The round trips in a libpq trace: each ``Query`` with its statement's first word, each ``Sync``."""
    found = []
    for line in trace.splitlines():
        fields = line.split("\t")  # F, length, message type, its contents
        if len(fields) >= 3 and fields[0] == "F" and fields[2] in _ROUND_TRIPS:
            found.append(fields[3].strip().strip('"').split()[0] if fields[2] == "Query" else "Sync")
    return found


@contextlib.contextmanager
def traced(connection: Any) -> Iterator[list[str]]:
    """Trace ``connection`` (a psycopg or psycopg2 connection) in the block; the list yielded
    holds its round trips once the block is over (``round_trips``)."""
    sent: list[str] = []
    with tempfile.TemporaryFile() as log:
        stop = (
            _psycopg(connection, log.fileno()) if hasattr(connection, "pgconn") else _psycopg2(connection, log.fileno())
        )
        try:
            yield sent
        finally:
            stop()
        log.seek(0)
        sent.extend(round_trips(log.read().decode("utf-8", "replace")))


def _psycopg(connection: Any, fileno: int) -> Any:
    from psycopg import pq

    pgconn = connection.pgconn
    descriptor = os.dup(fileno)
    pgconn.trace(descriptor)
    pgconn.set_trace_flags(pq.Trace(_SUPPRESS_TIMESTAMPS_AND_REGRESS))

    def stop() -> None:
        pgconn.untrace()  # flushes; the FILE libpq wrote through is left open, so close its descriptor
        os.close(descriptor)

    return stop


def _psycopg2(connection: Any, fileno: int) -> Any:
    import psycopg2

    libraries = Path(psycopg2.__file__).parent.parent / "psycopg2_binary.libs"
    (found,) = libraries.glob("libpq-*.so*")
    libpq = ctypes.CDLL(str(found))
    libc = ctypes.CDLL(None)
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = (ctypes.c_int, ctypes.c_char_p)
    libc.fclose.argtypes = (ctypes.c_void_p,)
    stream = libc.fdopen(os.dup(fileno), b"w")
    pgconn = ctypes.c_void_p(connection.pgconn_ptr)
    libpq.PQtrace.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
    libpq.PQsetTraceFlags.argtypes = (ctypes.c_void_p, ctypes.c_int)
    libpq.PQuntrace.argtypes = (ctypes.c_void_p,)
    libpq.PQtrace(pgconn, stream)
    libpq.PQsetTraceFlags(pgconn, _SUPPRESS_TIMESTAMPS_AND_REGRESS)

    def stop() -> None:
        libpq.PQuntrace(pgconn)
        libc.fclose(stream)

    return stop
