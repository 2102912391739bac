"""What zenmetry adds to each library's OpenTelemetry instrumentation, one module per library.

Every integration has the same small shape (``Integration``): whether its library is present,
what it does before the instrumentor loads (wrap the library, hand the instrumentor a hook),
what after, and when the instrumentor may load (now, or for Django once its settings can be
read). The distro hands each the unit processor its hooks report to; none looks it up.
``INTEGRATIONS`` maps an instrumentor's entry-point name to the module of its integration; the
distro loops over it. An integration module is imported only when its instrumentor loads, which
the launcher does only for libraries that are installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final

from zenmetry import _state
from zenmetry.units._no_timeout import Finding

if TYPE_CHECKING:
    from zenmetry.units._processor import UnitProcessor

logger = logging.getLogger("zenmetry")


class Integration:
    """One library zenmetry plugs into; subclasses override what they need."""

    library: ClassVar[str]
    """The module whose presence means the library is installed."""

    def present(self) -> bool:
        try:
            return importlib.util.find_spec(self.library) is not None
        except (ImportError, ValueError):
            return False

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        """Runs before the instrumentor loads; may add to the instrumentor's ``kwargs``. Its hooks
        report to ``processor``."""

    def after(self, entry_point: str, processor: UnitProcessor) -> None:
        """Runs once the instrumentor has loaded."""

    def load(self, instrument: Callable[[], None]) -> None:
        """Load the instrumentor (``instrument`` runs it, then ``after``): now, by default."""
        instrument()


INTEGRATIONS: Final = {
    "celery": "celery",
    "django": "django",
    "httpx": "http",
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "pymongo": "pymongo",
    "redis": "redis",
    "requests": "http",
    "urllib": "http",
    "urllib3": "http",
}
"""Instrumentor entry-point name -> module of ``zenmetry.integrations`` (its ``INTEGRATION``)."""


def for_entry_point(name: str) -> Integration | None:
    """The integration of an instrumentor, imported on first use; None when zenmetry adds nothing."""
    module = INTEGRATIONS.get(name)
    if module is None:
        return None
    integration: Integration = importlib.import_module(f"{__name__}.{module}").INTEGRATION
    return integration


def report(finding: Finding, processor: UnitProcessor) -> None:
    """A connection without timeouts: warn once per process and connection, and queue the
    event for the next unit the processor finishes."""
    if finding.source in _state.state.reported:
        return
    _state.state.reported.add(finding.source)
    logger.warning(finding.message())
    processor.note_config(finding)
