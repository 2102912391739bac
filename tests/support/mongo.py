"""A MongoDB wire-protocol server for the tests, or the real ``mongod`` of ``ZENMETRY_TEST_MONGO_URL``.

No MongoDB server can be installed on these machines. ``mockupdb`` speaks the real wire
protocol (OP_MSG), so the real pymongo driver, its command listener and the OpenTelemetry
instrumentation run unchanged; this module answers the commands the tests send with a
small in-memory store (documents per collection, equality filters on top-level fields).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mockupdb import MockupDB

REAL_MONGO_VARIABLE = "ZENMETRY_TEST_MONGO_URL"


class Store:
    """Collections of documents, shared by every connection to one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collections: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def handle(self, request: Any) -> bool:
        name = request.command_name
        doc = request.doc
        with self._lock:
            if name == "find":
                found = self._find(doc[name], doc.get("filter") or {})
                limit = doc.get("limit") or len(found)
                return request.replies(cursor={"id": 0, "ns": f"{doc['$db']}.{doc[name]}", "firstBatch": found[:limit]})
            if name == "insert":
                documents = self._collections.setdefault(doc[name], [])
                for document in request.docs[1:] or doc.get("documents", []):
                    documents.append(dict(document))
                return request.replies(n=len(doc.get("documents", [])) or len(request.docs) - 1)
            if name == "count":
                return request.replies(n=len(self._find(doc[name], doc.get("query") or {})))
            if name == "aggregate":
                return request.replies(cursor={"id": 0, "ns": f"{doc['$db']}.{doc[name]}", "firstBatch": []})
            if name in ("delete", "update", "drop", "endSessions", "ping", "killCursors"):
                return request.replies(n=0)
        return False

    def _find(self, collection: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        documents = self._collections.get(collection, [])
        return [d for d in documents if all(d.get(k) == v for k, v in query.items() if not isinstance(v, dict))]


@contextmanager
def mongo_server() -> Iterator[str]:
    """Yield a MongoDB URL: the real server's when ``ZENMETRY_TEST_MONGO_URL`` is set, else mockupdb's."""
    real = os.environ.get(REAL_MONGO_VARIABLE)
    if real:
        yield real
        return
    server = MockupDB(auto_ismaster={"maxWireVersion": 21, "minWireVersion": 0})
    store = Store()
    server.autoresponds(store.handle)
    server.run()
    try:
        yield f"mongodb://127.0.0.1:{server.port}/?directConnection=true&serverSelectionTimeoutMS=5000&socketTimeoutMS=5000"
    finally:
        server.stop()
