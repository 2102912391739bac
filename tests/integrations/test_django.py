"""Requests as units, in this process: Django's test client, the real instrumentations,
real PostgreSQL and the MongoDB wire-protocol server."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import pytest
from django.test import Client
from opentelemetry.sdk.trace import ReadableSpan

from support.harness import Harness
from zenmetry.config._settings import Settings


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


class TestRequestFigures:
    @pytest.mark.parametrize("n", [0, 1, 7])
    def test_each_query_of_a_view_is_counted(self, zen: Harness, client: Client, n: int) -> None:
        """A view making n queries exports exactly n, for PostgreSQL and in all."""
        assert client.get(f"/queries/{n}/").status_code == 200
        attributes = zen.unit().attributes
        assert attributes["zen.unit.kind"] == "http"
        assert attributes["zen.unit.name"] == "queries/<int:n>/"
        assert attributes["zen.db.queries"] == n
        assert attributes.get("zen.db.postgresql.queries", 0) == n
        assert attributes["zen.db.repeated_max"] == n
        assert attributes["zen.budget"] == "default"
        assert len(zen.db_spans()) == n

    def test_postgresql_and_mongodb_are_counted_per_system(self, zen: Harness, client: Client) -> None:
        """7 PostgreSQL queries and 3 MongoDB calls: 10 in all, 7 and 3 per system, spans and metrics."""
        assert client.get("/mixed/").status_code == 200
        attributes = zen.unit().attributes
        assert (
            attributes["zen.db.queries"],
            attributes["zen.db.postgresql.queries"],
            attributes["zen.db.mongodb.queries"],
        ) == (10, 7, 3)
        assert attributes["zen.db.duration_ms"] == pytest.approx(
            attributes["zen.db.postgresql.duration_ms"] + attributes["zen.db.mongodb.duration_ms"]
        )
        base = {
            ("zen.unit.kind", "http"),
            ("zen.unit.name", "mixed/"),
            ("http.request.method", "GET"),
            ("http.response.status_code", 200),
        }
        queries = zen.metric("zen.unit.db.queries")
        assert queries == {
            frozenset(base | {("db.system", "postgresql")}): (1, 7),
            frozenset(base | {("db.system", "mongodb")}): (1, 3),
            frozenset(base | {("db.system", "all")}): (1, 10),
        }
        assert set(zen.metric("zen.unit.duration")) == {frozenset(base)}

    def test_every_orm_statement_becomes_a_db_span_of_the_request(self, zen: Harness, client: Client) -> None:
        """Inserts, bulk inserts, transactions, savepoints, updates, a server-side cursor
        (``iterator()``), counts, joins and cascading deletes: each statement Django executes is
        one DB span of the request, and so is each other round trip (BEGIN, COMMIT, FETCH, CLOSE).
        Queries are Django's 11 statements and its 3 BEGIN and 3 COMMIT; round trips, the 21 DB
        spans, and on psycopg 3 the server-side cursor's DESCRIBE."""
        response = client.get("/orm/")
        executed = response.json()["executed"]
        assert executed == 11
        described = 0 if os.environ.get("ZEN_TEST_PG_DRIVER") == "psycopg2" else 1
        assert zen.unit().attributes["zen.db.queries"] == 11 + 3 + 3
        assert zen.unit().attributes["zen.db.round_trips"] == 21 + described
        assert len(zen.db_spans()) == 21
        statements = [span.attributes["db.statement"].split()[0] for span in zen.db_spans()]
        assert statements == [
            "INSERT",
            "BEGIN",
            "INSERT",
            "SAVEPOINT",
            "UPDATE",
            "RELEASE",
            "COMMIT",
            "SELECT",  # the server-side cursor's DECLARE: its span ends before its fetches'
            "FETCH",
            "FETCH",
            "FETCH",
            "CLOSE",
            "SELECT",
            "SELECT",
            "BEGIN",
            "DELETE",
            "COMMIT",
            "BEGIN",
            "DELETE",
            "DELETE",
            "COMMIT",
        ]

    def test_a_route_inside_an_include_is_named_by_its_full_template(self, zen: Harness, client: Client) -> None:
        client.get("/api/v1/customers/2/")
        assert zen.unit().attributes["zen.unit.name"] == "api/v1/customers/<int:n>/"

    def test_a_request_matching_no_route_is_named_unmatched(self, zen: Harness, client: Client) -> None:
        assert client.get("/no/such/page").status_code == 404
        attributes = zen.unit().attributes
        assert (attributes["zen.unit.name"], attributes["zen.db.queries"]) == ("unmatched", 0)
        assert set(zen.metric("zen.unit.duration")) == {
            frozenset(
                {
                    ("zen.unit.kind", "http"),
                    ("zen.unit.name", "unmatched"),
                    ("http.request.method", "GET"),
                    ("http.response.status_code", 404),
                }
            )
        }

    def test_a_view_that_raises_still_reports_its_figures(self, zen: Harness, client: Client) -> None:
        assert client.get("/boom/").status_code == 500
        attributes = zen.unit().attributes
        assert (attributes["zen.unit.name"], attributes["zen.db.queries"]) == ("boom/", 1)

    def test_class_based_views_are_units(self, zen: Harness, client: Client) -> None:
        client.get("/cbv/")
        attributes = zen.unit().attributes
        assert (attributes["zen.unit.name"], attributes["zen.db.queries"]) == ("cbv/", 1)

    def test_memory_kept_by_a_request_shows_as_rss_growth(self, zen: Harness, client: Client) -> None:
        """A view keeping 32 MiB alive grows the process by at least that, and the histogram records it."""
        client.get("/grow/32/")
        delta = zen.unit().attributes["zen.memory.rss_delta_bytes"]
        assert 32 * 2**20 <= delta < 48 * 2**20
        ((count, growth),) = zen.metric("zen.unit.memory.growth").values()
        assert (count, growth) == (1, delta)

    def test_every_contract_attribute_is_present_with_its_type_even_when_zero(
        self, zen: Harness, client: Client
    ) -> None:
        """CONTRACT.md's types: counts are int, milliseconds float, names and the budget strings."""
        client.get("/queries/0/")
        attributes = zen.unit().attributes
        zero = {key: (type(attributes[key]), attributes[key]) for key in ZERO_WHEN_IDLE}
        assert zero == {key: (kind, kind(0)) for key, kind in ZERO_WHEN_IDLE.items()}
        assert type(attributes["zen.memory.rss_delta_bytes"]) is int
        assert type(attributes["zen.duration_ms"]) is float
        assert attributes["zen.duration_ms"] > 0
        assert (attributes["zen.unit.kind"], attributes["zen.unit.name"], attributes["zen.budget"]) == (
            "http",
            "queries/<int:n>/",
            "default",
        )
        assert "zen.budget.breached" not in attributes


ZERO_WHEN_IDLE = {
    "zen.db.queries": int,
    "zen.db.duration_ms": float,
    "zen.db.repeated_max": int,
    "zen.external.calls": int,
    "zen.external.duration_ms": float,
    "zen.external.no_timeout": int,
}


class TestStreamedResponsesInProcess:
    """The streamed body in this process (Django's test clients); the real servers, and clients
    that leave mid-stream, are in ``tests/test_execution_models.py``."""

    def test_a_streamed_body_counts_until_the_response_is_closed(self, zen: Harness, client: Client) -> None:
        """Nothing is finished while the body is unread; reading it all closes the response and
        finishes the unit with 1 + 6 queries, each a child of the request span."""
        response = client.get("/stream/1/6/")
        assert zen.units() == []
        assert b"".join(response.streaming_content) == b"x" * 18
        unit = zen.unit()
        assert unit.attributes["zen.db.queries"] == 7
        assert [span.parent.span_id for span in zen.db_spans()] == [unit.context.span_id] * 7
        assert unit.end_time >= max(span.end_time for span in zen.db_spans())

    def test_an_async_body_under_the_async_client(self, zen: Harness) -> None:
        import asyncio

        from django.test import AsyncClient

        async def fetch() -> bytes:
            response = await AsyncClient().get("/astream/2/3/")
            return b"".join([part async for part in response.streaming_content])

        assert asyncio.run(fetch()) == b"x" * 9
        assert zen.unit().attributes["zen.db.queries"] == 5

    def test_a_file_response_finishes_when_closed(self, zen: Harness, client: Client) -> None:
        response = client.get("/file/64/")
        assert len(b"".join(response.streaming_content)) == 64 * 1024
        response.close()
        assert (zen.unit().attributes["zen.unit.name"], zen.unit().attributes["zen.db.queries"]) == (
            "file/<int:kib>/",
            1,
        )

    def test_a_body_that_raises_still_finishes_its_unit(self, zen: Harness, client: Client) -> None:
        """The application sees its own error; the unit has the query made before it."""
        response = client.get("/stream-fails/")
        with pytest.raises(RuntimeError, match="the body fails on purpose"):
            b"".join(response.streaming_content)
        response.close()
        assert zen.unit().attributes["zen.db.queries"] == 1


class TestThreadsInProcess:
    def test_executor_and_thread_queries_count_for_the_request(self, zen: Harness, client: Client) -> None:
        assert client.get("/fanout/8/").status_code == 200
        assert zen.unit().attributes["zen.db.queries"] == 8
        zen.reset()
        assert client.get("/threads/3/").status_code == 200
        assert zen.unit().attributes["zen.db.queries"] == 3


def _timing(unit: ReadableSpan, calls: int = 0) -> str:
    """The Server-Timing header of a unit, from the figures on its span."""
    attributes = unit.attributes or {}
    return (
        f'db;dur={attributes["zen.db.duration_ms"]:.1f};desc="{attributes["zen.db.queries"]} queries", '
        f'ext;dur={attributes["zen.external.duration_ms"]:.1f};desc="{calls} calls", '
        f"total;dur={attributes['zen.duration_ms']:.1f}"
    )


class TestServerTiming:
    """``ZENMETRY_SERVER_TIMING=1``: the unit's figures in the response, for the browser's tools."""

    def test_the_header_carries_the_units_figures(self, zen: Harness, client: Client) -> None:
        zen.reset(Settings(server_timing=True))
        response = client.get("/queries/3/")
        unit = zen.unit()
        assert unit.attributes["zen.db.queries"] == 3
        assert response["Server-Timing"] == _timing(unit)

    def test_off_by_default(self, zen: Harness, client: Client) -> None:
        response = client.get("/queries/3/")
        assert response.status_code == 200
        assert "Server-Timing" not in response

    def test_a_header_the_view_set_is_kept(self, zen: Harness, client: Client) -> None:
        zen.reset(Settings(server_timing=True))
        response = client.get("/timed/")
        assert response["Server-Timing"] == 'app;dur=1.5;desc="the view\'s own", ' + _timing(zen.unit())

    def test_never_on_a_streamed_response(self, zen: Harness, client: Client) -> None:
        zen.reset(Settings(server_timing=True))
        response = client.get("/stream/1/2/")
        assert b"".join(response.streaming_content) == b"xxxxxx"  # type: ignore[attr-defined]
        response.close()
        assert "Server-Timing" not in response
        assert zen.unit().attributes["zen.db.queries"] == 3


class TestCache:
    """Calls through Django's cache API, and the reads that found nothing, on the unit span."""

    @pytest.mark.parametrize("alias", ["default", "redis"])
    def test_calls_and_misses(self, zen: Harness, client: Client, alias: str) -> None:
        """A write, then a hit, a miss and a get_many that finds neither of its keys: 4 calls,
        2 misses, for the in-process cache and Redis alike."""
        assert client.get(f"/cached/{alias}/").json() == {"found": ["value", None, {}]}
        attributes = zen.unit().attributes
        assert (attributes["zen.cache.calls"], attributes["zen.cache.misses"]) == (4, 2)

    def test_a_page_without_cache_calls_says_zero(self, zen: Harness, client: Client) -> None:
        client.get("/queries/1/")
        attributes = zen.unit().attributes
        assert (attributes["zen.cache.calls"], attributes["zen.cache.misses"]) == (0, 0)

    def test_the_metrics_record_calls_and_misses_of_units_that_called_the_cache(
        self, zen: Harness, client: Client
    ) -> None:
        """zen.unit.cache.calls and .misses: one point for the page that called the cache (4 calls,
        2 misses), none for the page that did not."""
        client.get("/cached/default/")
        client.get("/queries/1/")
        point = frozenset(
            {
                ("zen.unit.kind", "http"),
                ("zen.unit.name", "cached/<str:alias>/"),
                ("http.request.method", "GET"),
                ("http.response.status_code", 200),
            }
        )
        assert zen.metric("zen.unit.cache.calls") == {point: (1, 4)}
        assert zen.metric("zen.unit.cache.misses") == {point: (1, 2)}

    def test_server_timing_shows_the_cache(self, zen: Harness, client: Client) -> None:
        zen.reset(Settings(server_timing=True))
        response = client.get("/cached/default/")
        entries = re.findall(r'(\w+);dur=[\d.]+(?:;desc="([^"]*)")?', response["Server-Timing"])
        assert entries == [("db", "0 queries"), ("ext", "0 calls"), ("cache", "4 calls, 2 misses"), ("total", "")]


def _redis_commands(server: Any) -> Counter[str]:
    """The Redis server's own count of the commands it ran, by command (``INFO commandstats``)."""
    stats = server.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()})


class TestRedis:
    def test_redis_commands_are_db_calls_named_by_their_command(self, zen: Harness, client: Client) -> None:
        """The cache's Redis commands are DB calls of system redis, as many as the server ran,
        shaped by their command alone: no key in any exported byte."""
        import redis
        from django.core.cache import caches

        caches["redis"].get("warm-up")  # the cache's connection made (its handshake is no call of the unit)
        with redis.Redis(host="127.0.0.1", port=6379) as server:
            before = _redis_commands(server)
            client.get("/cached/redis/")
            ran = _redis_commands(server) - before
        ran.pop("info", None)  # our own question
        attributes = zen.unit().attributes
        assert attributes["zen.db.redis.queries"] == sum(ran.values()) == 4
        trace_id = zen.unit().context.trace_id
        statements = sorted(str(s.attributes["db.statement"]) for s in zen.db_spans() if s.context.trace_id == trace_id)
        assert [statement.split()[0] for statement in statements] == ["GET", "GET", "MGET", "SET"]
        assert all("zen-" not in statement for statement in statements)

    def test_the_celery_brokers_commands_are_no_queries(self, zen: Harness, client: Client, task_queue: str) -> None:
        """A task sent to Celery's Redis broker is the request's producer span; the broker's own
        commands (kombu's LPUSH, pipelines) are how the message travels, not queries."""
        assert client.get(f"/enqueue/{task_queue}/").json() == {"sent": task_queue}
        attributes = zen.unit().attributes
        assert (attributes["zen.db.queries"], attributes["zen.db.round_trips"]) == (0, 0)
        assert "zen.db.redis.queries" not in attributes
        assert [span.name for span in zen.exporter.get_finished_spans() if span.kind.name == "PRODUCER"] == [
            "apply_async/zentestapp.tasks.three_queries"
        ]
