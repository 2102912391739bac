"""MongoDB command shapes keep keys and lose every value; a command is one DB call."""

from __future__ import annotations

import importlib.util

import pytest

from support.harness import Harness
from zenmetry.integrations.pymongo import mongo_shape
from zenmetry.units._shapes import MAX_TEXT, ROUND_TRIP


class TestMongoShape:
    @pytest.mark.parametrize(
        ("command", "expected"),
        [
            (
                {"find": "products", "filter": {"sku": "A1", "price": {"$gt": 3}}, "limit": 1, "$db": "shop"},
                'products.find {"sku": ?, "price": {"$gt": ?}}',
            ),
            (
                {"find": "products", "filter": {"$or": [{"a": 1}, {"b": {"$in": [1, 2]}}]}},
                'products.find {"$or": [{"a": ?}, {"b": {"$in": [?]}}]}',
            ),
            (
                {
                    "aggregate": "orders",
                    "pipeline": [{"$match": {"x": 5}}, {"$group": {"_id": "$y", "n": {"$sum": 1}}}],
                },
                'orders.aggregate [{"$match": {"x": ?}}, {"$group": {"_id": ?, "n": {"$sum": ?}}}]',
            ),
            (
                {"update": "orders", "updates": [{"q": {"_id": 5}, "u": {"$set": {"a": "secret"}}}]},
                'orders.update {"_id": ?}',
            ),
            ({"delete": "orders", "deletes": [{"q": {"state": "old"}, "limit": 0}]}, 'orders.delete {"state": ?}'),
            ({"insert": "orders", "documents": [{"a": "secret"}]}, "orders.insert"),
            ({"count": "orders", "query": {"state": "new"}}, 'orders.count {"state": ?}'),
            ({"ping": 1}, "ping"),
        ],
    )
    def test_values_are_removed_and_keys_kept(self, command: dict[str, object], expected: str) -> None:
        assert mongo_shape(command) == (expected, expected)

    @pytest.mark.parametrize(
        ("command", "expected"),
        [
            ({"getMore": 8127, "collection": "products", "batchSize": 10}, "products.getMore"),
            ({"killCursors": "products", "cursors": [8127]}, "products.killCursors"),
        ],
    )
    def test_a_cursors_commands_are_round_trips_named_without_its_id(
        self, command: dict[str, object], expected: str
    ) -> None:
        """A cursor's next batch and its end are round trips of the query that opened it (an
        the round trip key), named by the collection and command, never by the cursor's id."""
        assert mongo_shape(command) == (ROUND_TRIP, expected)

    def test_twelve_lookups_with_different_values_share_one_shape(self) -> None:
        shapes = {mongo_shape({"find": "products", "filter": {"sku": f"SKU-{i}"}, "limit": 1}) for i in range(12)}
        assert shapes == {('products.find {"sku": ?}', 'products.find {"sku": ?}')}

    def test_a_document_nested_deeper_than_twenty_levels_is_cut(self) -> None:
        """Found by the fuzzer: a filter 2,000 levels deep raised RecursionError in the request hook."""
        document: dict[str, object] = {"a": "secret"}
        for _ in range(2_000):
            document = {"a": document}
        text = mongo_shape({"find": "c", "filter": document})[1]
        assert text == "c.find " + '{"a": ' * 20 + "{...}" + "}" * 20

    def test_a_huge_document_stops_at_the_shape_length(self) -> None:
        text = mongo_shape({"find": "c", "filter": {f"field{i}": i for i in range(100_000)}})[1]
        assert (len(text), text[:28]) == (MAX_TEXT, 'c.find {"field0": ?, "field1')


class TestOneSpanPerCommand:
    def test_a_command_is_one_db_call_even_with_pymongo_tracing_asked_for(
        self, zen: Harness, mongo_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Newer pymongo emits OpenTelemetry spans of its own when asked (this variable, or
        ``MongoClient(tracing=...)``): with the pymongo instrumentation also running, a command
        would be two or three DB calls. The pinned pymongo has none (``pymongo._otel`` absent):
        one command, one DB span, the instrumentation's. Raising the pin must keep this true."""
        import pymongo

        monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_MONGODB_ENABLED", "true")
        with pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000, socketTimeoutMS=5000) as client:
            client.catalogue.products.find_one({"sku": "S1"})
        (span,) = zen.db_spans()
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.pymongo"
        assert importlib.util.find_spec("pymongo._otel") is None
