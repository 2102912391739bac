"""pymongo: each MongoDB command shaped from what the command listener sees, and every
``MongoClient`` checked for timeouts as it is created.

The instrumentation's ``db.statement`` holds only the command name unless statements are
captured (and then with values); the listener's command document gives the collection,
the command and the filter's keys, from which the shape is built without any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Final

import wrapt

from zenmetry import _guard
from zenmetry.integrations import Integration, report
from zenmetry.units._no_timeout import Finding
from zenmetry.units._processor import UnitProcessor
from zenmetry.units._shapes import MAX_TEXT, ROUND_TRIP, exportable

_MAX_ITEMS = 20
"""A list of documents (``$or``, a pipeline) shows at most its first 20 shapes."""

_MAX_DEPTH = 20
"""Documents nested deeper show ``{...}``: the shape stays cheap and its recursion bounded."""


class PymongoIntegration(Integration):
    library = "pymongo"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        kwargs.setdefault("request_hook", partial(request_hook, processor))
        watch_clients(processor)


INTEGRATION: Final = PymongoIntegration()


def request_hook(processor: UnitProcessor, span: Any, event: Any) -> None:
    """``PymongoInstrumentor(request_hook=partial(request_hook, processor))``: note the command's
    shape for its unit."""
    try:
        processor.note_shape(span, mongo_shape(event.command))
    except Exception:  # noqa: BLE001
        _guard.swallow("the pymongo request hook")


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


def watch_clients(processor: UnitProcessor) -> None:
    """Check every ``MongoClient`` as it is created."""
    wrapt.wrap_function_wrapper("pymongo", "MongoClient.__init__", partial(_client_created, processor))


def _client_created(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        finding = check_mongo_client(instance)
        if finding is not None:
            report(finding, processor)
    except Exception:  # noqa: BLE001
        _guard.swallow("the MongoClient timeout check")
    return result


_CURSOR_COMMANDS: Final = frozenset({"getMore", "killCursors"})


def mongo_shape(command: Mapping[str, Any]) -> tuple[str, str]:
    """The shape of one MongoDB command as seen by the driver's command listener.

    The command name and collection are kept, and the *keys* of the filter (``filter``,
    ``q``, pipeline stages, ``query``), with every value replaced by ``?``; documents being
    written are left out entirely. A cursor's ``getMore`` and ``killCursors`` are round trips
    of the query that opened the cursor (``_shapes.round_trip``), named ``products.getMore``:
    reading a large result in batches is one query, and not an N+1.

    >>> mongo_shape({"find": "products", "filter": {"sku": "A1", "price": {"$gt": 3}}})[1]
    'products.find {"sku": ?, "price": {"$gt": ?}}'
    """
    items = iter(command.items())
    name, collection = next(items, ("", ""))
    if name in _CURSOR_COMMANDS:
        collection = command.get("collection", collection)  # killCursors names it first
        return ROUND_TRIP, exportable(f"{collection}.{name}"[:MAX_TEXT]) if isinstance(collection, str) else name
    parts = [f"{collection}.{name}" if isinstance(collection, str) else str(name)]
    if name == "aggregate":
        parts.append(_value_shape(command.get("pipeline", [])))
    elif name in ("update", "delete"):
        statements = command.get("updates" if name == "update" else "deletes") or [{}]
        first = statements[0] if isinstance(statements, list) else {}
        parts.append(_value_shape(first.get("q", {}) if isinstance(first, Mapping) else {}))
    else:
        for field in ("filter", "query"):
            if field in command:
                parts.append(_value_shape(command[field]))
                break
    text = " ".join(parts)[:MAX_TEXT]
    text = text if text.isascii() else exportable(text)
    return text, text


def _value_shape(value: Any, depth: int = 0) -> str:
    if isinstance(value, Mapping):
        if depth == _MAX_DEPTH:
            return "{...}"
        inner: list[str] = []
        length = 0
        for key, item in value.items():
            inner.append(f'"{key}": {_value_shape(item, depth + 1)}')
            length += len(inner[-1]) + 2
            if length > MAX_TEXT:
                break  # the text is cut at MAX_TEXT: a huge document costs no more than that
        return "{" + ", ".join(inner) + "}"
    if isinstance(value, (list, tuple)):
        # A list of documents keeps its first document's shape; a list of values is one "?".
        if value and isinstance(value[0], Mapping):
            if depth == _MAX_DEPTH:
                return "[...]"
            return "[" + ", ".join(_value_shape(item, depth + 1) for item in value[:_MAX_ITEMS]) + "]"
        return "[?]"
    return "?"
