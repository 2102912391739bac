"""pymongo glue: shape each MongoDB command from what the command listener sees.

The instrumentation's ``db.statement`` holds only the command name unless statements are
captured (and then with values); the listener's command document gives the collection,
the command and the filter's keys, from which the shape is built without any value.
"""

from __future__ import annotations

from typing import Any

from zenmetry import _config, _guard
from zenmetry._fingerprint import mongo_shape


def request_hook(span: Any, event: Any) -> None:
    """``PymongoInstrumentor(request_hook=...)``: note the command's shape for its unit."""
    processor = _config.processor()
    if processor is None:
        return
    try:
        processor.note_shape(span, mongo_shape(event.command))
    except Exception:  # noqa: BLE001
        _guard.swallow("the pymongo request hook")
