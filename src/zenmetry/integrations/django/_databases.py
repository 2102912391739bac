"""Databases are external systems too: Django's ``DATABASES`` configured without timeouts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from zenmetry.units._no_timeout import Finding


def check_databases(
    databases: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] = os.environ
) -> list[Finding]:
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


# -- in a test suite -------------------------------------------------------------------------
