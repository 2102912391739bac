"""Databases are external systems too: connections configured without timeouts are reported.

Once per process and per connection: a warning on the ``zenmetry`` logger when it is found,
and a ``zen.config.no_timeout`` event on the first unit the process finishes afterwards (so
the finding also reaches the trace backend, from every process). Checked: each Django
database (PostgreSQL: ``connect_timeout`` and a ``statement_timeout`` in ``options``; MySQL:
``connect_timeout`` and ``read_timeout``) when Django is instrumented, and each
``MongoClient`` (``serverSelectionTimeoutMS`` and ``socketTimeoutMS``, or ``timeoutMS``) when
it is created. A timeout set on the server (``ALTER ROLE ... SET statement_timeout``) is not
visible from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import wrapt

from zenmetry import _config, _guard

logger = logging.getLogger("zenmetry")

_reported: set[str] = set()


@dataclass(frozen=True, slots=True)
class Finding:
    """One connection without timeouts."""

    system: str
    source: str
    missing: tuple[str, ...]

    def message(self) -> str:
        return (
            f"zenmetry: {self.source} ({self.system}) has no {' and no '.join(self.missing)}: "
            "a stuck database makes every request and task that uses it hang"
        )


def report(finding: Finding) -> None:
    """Warn once per process and connection, and queue the event for the next unit."""
    if finding.source in _reported:
        return
    _reported.add(finding.source)
    logger.warning(finding.message())
    processor = _config.processor()
    if processor is not None:
        processor.note_config(finding)


def check_django(databases: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] = os.environ) -> list[Finding]:
    """Findings for Django's ``DATABASES``."""
    found = []
    for alias, database in databases.items():
        engine = str(database.get("ENGINE", ""))
        options = database.get("OPTIONS") or {}
        missing: list[str] = []
        if engine.endswith("postgresql") or "postgis" in engine:
            system = "postgresql"
            if not options.get("connect_timeout") and not environ.get("PGCONNECT_TIMEOUT"):
                missing.append("connect timeout (OPTIONS['connect_timeout'])")
            if "statement_timeout" not in f"{options.get('options', '')} {environ.get('PGOPTIONS', '')}":
                missing.append("statement timeout (OPTIONS['options'] = '-c statement_timeout=5000')")
        elif engine.endswith("mysql"):
            system = "mysql"
            if not options.get("connect_timeout"):
                missing.append("connect timeout (OPTIONS['connect_timeout'])")
            if not options.get("read_timeout"):
                missing.append("read timeout (OPTIONS['read_timeout'])")
        else:
            continue  # SQLite lives in the process; other engines are not known here
        if missing:
            found.append(Finding(system, f"Django database {alias!r}", tuple(missing)))
    return found


def check_mongo_client(client: Any) -> Finding | None:
    """The finding for one ``MongoClient``, if it lacks timeouts."""
    given = {key.lower() for key in client.options._options}  # noqa: SLF001 - the options as passed
    if "timeoutms" in given:
        return None  # client-side operation timeout covers selection and sockets
    missing = []
    if "serverselectiontimeoutms" not in given:
        missing.append("serverSelectionTimeoutMS (the default waits 30 s for a server)")
    if client.options.pool_options.socket_timeout is None:
        missing.append("socketTimeoutMS")
    if not missing:
        return None
    seeds = ",".join(f"{host}:{port}" for host, port in sorted(client._topology_settings.seeds))  # noqa: SLF001
    return Finding("mongodb", f"MongoClient({seeds})", tuple(missing))


def watch_mongo_clients() -> None:
    """Check every ``MongoClient`` as it is created."""
    wrapt.wrap_function_wrapper("pymongo", "MongoClient.__init__", _client_created)


def _client_created(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        finding = check_mongo_client(instance)
        if finding is not None:
            report(finding)
    except Exception:  # noqa: BLE001
        _guard.swallow("the MongoClient timeout check")
    return result
