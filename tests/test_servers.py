"""Real servers under ``opentelemetry-instrument``, exporting OTLP/HTTP to the test receiver:
gunicorn (sync and gthread workers), ``runserver --noreload`` and uvicorn (ASGI)."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import django
import pytest

from support.otlp import Receiver
from support.processes import BIN, free_port, gunicorn, otel_env, path_of, start_server, uvicorn


@pytest.mark.usefixtures("postgres_db", "mongo_url")
class TestGunicorn:
    @pytest.mark.parametrize("worker", ["sync", "gthread"])
    def test_each_request_is_a_unit_with_exact_figures(self, receiver: Receiver, mongo_url: str, worker: str) -> None:
        """Two workers; every unit exported with its own figures, and histogram totals exact."""
        server = gunicorn(receiver, "--workers", "2", "--worker-class", worker, ZEN_TEST_MONGO_URL=mongo_url)
        assert server.get("/mixed/")[0] == 200
        assert server.get("/queries/4/")[0] == 200
        output = server.stop()
        receiver.wait(lambda r: len(r.units()) == 2)
        mixed, four = sorted(receiver.units(), key=lambda span: span.attributes["zen.unit.name"])
        assert (
            mixed.attributes["zen.db.queries"],
            mixed.attributes["zen.db.postgresql.queries"],
            mixed.attributes["zen.db.mongodb.queries"],
        ) == (10, 7, 3)
        assert (four.attributes["zen.unit.name"], four.attributes["zen.db.queries"]) == ("queries/<int:n>/", 4)
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 2)
        assert receiver.total("zen.unit.db.queries", zen__unit__name="mixed/", db__system="postgresql").sum == 7
        assert receiver.total("zen.unit.db.queries", zen__unit__name="mixed/", db__system="mongodb").sum == 3
        assert receiver.total("zen.unit.db.queries", zen__unit__name="mixed/", db__system="all").sum == 10
        assert "Traceback" not in output

    @pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
    def test_queries_are_what_django_counts_in_production(self, receiver: Receiver, driver: str) -> None:
        """Under gunicorn (autocommit, no test transaction) each block's unit counts the
        statements Django's own CaptureQueriesContext captured in the same request, as the test
        client's units do (test_django_count.py)."""
        server = gunicorn(receiver, "--workers", "1", ZEN_TEST_PG_DRIVER=driver)
        blocks = ("atomic", "savepoints", "iterator", "empty_atomic", "update_or_create")
        captured = {}
        for block in blocks:
            status, body = server.get(f"/count/block/{block}/")
            assert status == 200, body
            captured[block] = len(json.loads(body)["django"])
        server.stop()
        receiver.wait(lambda r: len(r.units()) == len(blocks))
        counted = [unit.attributes["zen.db.queries"] for unit in sorted(receiver.units(), key=lambda u: u.start_ns)]
        iterator = 5 if django.VERSION < (6,) else 3  # its bulk_create: in a transaction before Django 6
        assert counted == [captured[block] for block in blocks] == [3, 10, iterator, 2, 10]

    def test_a_request_waiting_for_the_pools_one_connection_says_so(self, receiver: Receiver) -> None:
        """Django's psycopg pool of one connection, two gthread threads: a request that comes while
        another holds the connection (a 0.6 s statement) waits for it; the wait is its
        zen.db.pool_wait_ms, not its DB time; a request that found the connection free waited
        about nothing."""
        server = gunicorn(
            receiver, "--workers", "1", "--worker-class", "gthread", "--threads", "2", ZEN_TEST_PG_POOL="1"
        )
        assert server.get("/queries/1/")[0] == 200  # the pool opened, its connection made
        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(server.get, "/slow/")
            time.sleep(0.2)
            waiter = pool.submit(server.get, "/queries/1/")
            assert (holder.result()[0], waiter.result()[0]) == (200, 200)
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 3)
        first, slow, waited = sorted(receiver.units(), key=lambda unit: unit.start_ns)
        assert [unit.attributes["zen.unit.name"] for unit in (first, slow, waited)] == [
            "queries/<int:n>/",
            "slow/",
            "queries/<int:n>/",
        ]
        assert 250 <= waited.attributes["zen.db.pool_wait_ms"] < 600
        assert waited.attributes["zen.db.duration_ms"] < 100
        assert slow.attributes["zen.db.pool_wait_ms"] < 100
        assert slow.attributes["zen.db.duration_ms"] >= 600

    def test_without_a_pool_there_is_no_pool_wait(self, receiver: Receiver) -> None:
        server = gunicorn(receiver, "--workers", "1")
        assert server.get("/queries/2/")[0] == 200
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 1)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.db.pool_wait_ms"], unit.attributes["zen.db.queries"]) == (0.0, 2)

    def test_concurrent_requests_on_threads_never_mix_their_figures(self, receiver: Receiver) -> None:
        """8 threads serve 200 concurrent requests of 0 to 9 queries: each unit exact, totals exact."""
        server = gunicorn(receiver, "--workers", "1", "--worker-class", "gthread", "--threads", "8")
        counts = [i % 10 for i in range(200)]
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(lambda n: server.get(f"/queries/{n}/")[0], counts))
        assert statuses == [200] * 200
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 200)
        for unit in receiver.units():
            n = int(path_of(unit).strip("/").split("/")[-1])
            assert (unit.attributes["zen.db.queries"], unit.attributes["zen.db.repeated_max"]) == (n, n)
            assert len([s for s in receiver.spans() if s.parent_span_id == unit.span_id and s.kind == "CLIENT"]) == n
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 200)
        total = receiver.total("zen.unit.db.queries", db__system="all")
        assert (total.count, total.sum) == (200, sum(counts))

    def test_a_sampler_that_keeps_nothing_still_gives_exact_metrics(self, receiver: Receiver) -> None:
        """OTEL_TRACES_SAMPLER=traceidratio at 0: no span is exported, every unit is still counted."""
        server = gunicorn(receiver, "--workers", "1", OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
        for n in (1, 2, 3, 4):
            assert server.get(f"/queries/{n}/")[0] == 200
        server.stop()
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 4)
        assert receiver.total("zen.unit.db.queries", db__system="all").sum == 10
        assert receiver.total("zen.unit.db.queries", db__system="postgresql").sum == 10
        assert receiver.total("zen.unit.duration").count == 4
        assert receiver.spans() == []

    def test_psycopg2_queries_become_db_spans(self, receiver: Receiver) -> None:
        """With Django on psycopg2 (psycopg 3 hidden) under the launcher, every round trip of the
        ORM (its 11 statements, and BEGIN, COMMIT, FETCH, CLOSE) is a DB span of its request."""
        server = gunicorn(receiver, "--workers", "1", ZEN_TEST_PG_DRIVER="psycopg2")
        status, body = server.get("/orm/")
        assert (status, body) == (200, b'{"executed": 11}')
        server.get("/queries/5/")
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 2)
        by_name = {unit.attributes["zen.unit.name"]: unit for unit in receiver.units()}
        # Django's 11 statements, 3 BEGIN and 3 COMMIT; the 21 round trips are the DB spans.
        assert by_name["orm/"].attributes["zen.db.postgresql.queries"] == 17
        assert by_name["orm/"].attributes["zen.db.round_trips"] == 21
        assert by_name["queries/<int:n>/"].attributes["zen.db.postgresql.queries"] == 5
        client_spans = [
            s for s in receiver.spans() if s.kind == "CLIENT" and s.parent_span_id == by_name["orm/"].span_id
        ]
        assert {s.scope for s in client_spans} == {"opentelemetry.instrumentation.psycopg2"}
        assert len(client_spans) == 21


@pytest.mark.usefixtures("postgres_db")
class TestOtherServers:
    def test_runserver_without_reloader(self, receiver: Receiver) -> None:
        port = free_port()
        command = [
            str(BIN / "opentelemetry-instrument"),
            sys.executable,
            "-m",
            "django",
            "runserver",
            f"127.0.0.1:{port}",
            "--noreload",
        ]
        server = start_server(command, otel_env(receiver), port)
        assert server.get("/queries/3/")[0] == 200
        server.stop(signal.SIGINT)  # runserver exits cleanly on Ctrl-C only
        receiver.wait(lambda r: len(r.units()) == 1)
        assert receiver.units()[0].attributes["zen.db.queries"] == 3
        # runserver serves forever: it is no command unit, its requests are the units
        assert [unit.attributes["zen.unit.kind"] for unit in receiver.units()] == ["http"]

    def test_uvicorn_async_and_sync_views(self, receiver: Receiver) -> None:
        """Under ASGI, async views (ORM in a worker thread) and sync views are exact units;
        concurrent async requests keep their figures apart."""
        server = uvicorn(receiver)
        counts = [i % 6 for i in range(30)]
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda n: server.get(f"/async/{n}/")[0], counts))
        assert statuses == [200] * 30
        assert server.get("/queries/2/")[0] == 200
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 31)
        for unit in receiver.units():
            n = int(path_of(unit).strip("/").split("/")[-1])
            assert unit.attributes["zen.db.queries"] == n, path_of(unit)
        assert {unit.attributes["zen.unit.name"] for unit in receiver.units()} == {"async/<int:n>/", "queries/<int:n>/"}


@pytest.mark.usefixtures("postgres_db")
class TestConsole:
    def test_console_prints_one_line_per_request(self, receiver: Receiver) -> None:
        server = gunicorn(receiver, "--workers", "1", ZENMETRY_CONSOLE="1")
        server.get("/queries/3/")
        server.get("/nowhere")
        output = server.stop()
        lines = [line for line in output.splitlines() if line.startswith("zenmetry ")]
        assert len(lines) == 2
        assert re.fullmatch(
            r"zenmetry http GET queries/<int:n>/ 200 \| queries 3 \(postgresql 3\) \| db \d+\.\d ms \| "
            r"mem [+-]\d+\.\d MiB \| ext 0 \| \d+\.\d ms",
            lines[0],
        ), lines[0]
        assert re.fullmatch(
            r"zenmetry http GET unmatched 404 \| queries 0 \| db 0\.0 ms \| mem [+-]\d+\.\d MiB \| ext 0 \| \d+\.\d ms",
            lines[1],
        ), lines[1]
