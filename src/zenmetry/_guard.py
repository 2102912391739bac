"""The guard every hook and processor runs in: zenmetry never raises into the application.

Call ``swallow(where)`` from an ``except Exception:`` block (a bare ``try`` costs nothing on
the hot path, a context manager does). The error is logged on the ``zenmetry`` logger;
zenmetry's own test suite turns every such record into a failure.
"""

from __future__ import annotations

import contextlib
import logging

logger = logging.getLogger("zenmetry")

INTERNAL_ERROR = "zenmetry: internal error in %s; the request or task was not affected"


def swallow(where: str) -> None:
    """Log the exception being handled; never raises."""
    with contextlib.suppress(Exception):  # a broken logging set-up must not break the app either
        logger.exception(INTERNAL_ERROR, where)
