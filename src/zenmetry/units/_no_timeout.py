"""Databases are external systems too: connections configured without timeouts are reported.

Once per process and per connection: a warning on the ``zenmetry`` logger when it is found,
and a ``zen.config.no_timeout`` event on the first unit the process finishes afterwards (so
the finding also reaches the trace backend, from every process; ``integrations.report``
does both). The integrations find them:
each Django database when Django is instrumented (``integrations.django``), each
``MongoClient`` when it is created (``integrations.pymongo``). A timeout set on the server
(``ALTER ROLE ... SET statement_timeout``) is not visible from here.
"""

from __future__ import annotations

from dataclasses import dataclass


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
