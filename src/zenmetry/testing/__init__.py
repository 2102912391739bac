"""zenmetry in a test suite: the units a test produced, and budgets asserted on them.

Everything runs in memory (no exporter, no network): the first use instruments this process
with zenmetry's processor and the installed OpenTelemetry instrumentations.

- ``assert_budget(queries=3, external_calls=0)``: a context manager (or decorator) that
  measures its block as one unit, and also checks every request or task unit that finished
  during it (a live server's, a worker thread's); an ``AssertionError`` reports each limit
  exceeded and, for query limits, the statements in execution order.
- ``recorded()``: a context manager collecting the ``ZenUnit`` of every unit that finishes;
  ``unit.queries``, ``unit.round_trips``, ``unit.db_time_ms``, ``unit.duration_ms`` and
  ``unit.external_calls`` read as the unit span's attributes do.

The pytest plugin (``pytest --zenmetry``, this package's ``_plugin``) checks every unit of every
test against the project's budget file; its ``zen_units`` fixture lists a test's units.

This package also holds everything that exists only for tests (the lean spans, the Django
middleware and psycopg statements of a test suite, connections opened before it was
instrumented, snapshots); each plugs into a seam of the production code it stands beside.
The API is imported at its first use (``_api``): pytest loads the plugin in every run, which
must not load the SDK for a suite that never asks for zenmetry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zenmetry.testing._api import ZenUnit, assert_budget, recorded, report, start

__all__ = ["ZenUnit", "assert_budget", "recorded", "report", "start"]


def __getattr__(name: str) -> Any:
    if name.startswith("_"):  # a submodule being imported (``from zenmetry.testing import _snapshots``)
        raise AttributeError(f"module 'zenmetry.testing' has no attribute {name!r}")
    _api = importlib.import_module("zenmetry.testing._api")
    try:
        return getattr(_api, name)
    except AttributeError:
        raise AttributeError(f"module 'zenmetry.testing' has no attribute {name!r}") from None
