"""What is measured where: each execution model on a real server or worker, every figure
compared with what the test app knows it did (README, "What is measured where").

Streamed responses (``StreamingHttpResponse``, ``FileResponse``) under gunicorn sync and
gthread and under uvicorn, clients that leave mid-stream, threads started by a request
(``ThreadPoolExecutor``, ``threading.Thread``, asgiref's ``sync_to_async``), and Celery's gevent
and eventlet pools and gunicorn's gevent worker, all under ``opentelemetry-instrument``.

Units are awaited before a server stops: uvicorn re-raises SIGTERM once it has shut down, so
the SDK's exit handlers, and the last export they make, never run there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.celery_worker import QUERIES, Worker, start_worker, units_named
from support.external_server import external_server
from support.otlp import Receiver, Span
from support.processes import Server, gunicorn, leave_mid_stream, path_of, uvicorn

MIB = 1024 * 1024

SERVERS: dict[str, Callable[..., Server]] = {
    "gunicorn-sync": lambda receiver, **env: gunicorn(receiver, "--workers", "1", **env),
    "gunicorn-gthread": lambda receiver, **env: gunicorn(
        receiver, "--workers", "1", "--worker-class", "gthread", "--threads", "4", **env
    ),
    "uvicorn": uvicorn,
}


@pytest.fixture(scope="module")
def external_url() -> Iterator[str]:
    with external_server() as url:
        yield url


def db_children(receiver: Receiver, unit: Span) -> list[Span]:
    """The DB spans whose parent is ``unit``'s span."""
    return [
        span
        for span in receiver.spans()
        if span.parent_span_id == unit.span_id and span.kind == "CLIENT" and "db.system" in span.attributes
    ]


def stopped(process: Server | Worker) -> str:
    """Stop a server or worker; what it printed, checked for context errors (a context attached
    in one thread and detached in another, as a wrong hand-over to threads would do)."""
    output = process.stop()
    assert "Failed to detach context" not in output, output
    assert "Exception in thread" not in output, output
    return output


def wait_for_file(path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


@pytest.mark.usefixtures("postgres_db")
class TestStreamedResponses:
    @pytest.mark.parametrize("server_name", list(SERVERS))
    @pytest.mark.parametrize("view", ["stream", "astream"])
    def test_the_queries_of_a_streamed_body_count_for_its_request(
        self, receiver: Receiver, server_name: str, view: str
    ) -> None:
        """1 query in the view and 6 while the body streams (each part 0.05 s apart): the unit
        reports 7, its span covers the body, its metrics say 7."""
        server = SERVERS[server_name](receiver)
        status, body = server.get(f"/{view}/1/6/?sleep=0.05")
        assert (status, body) == (200, b"x" * 18)
        # Units and metrics before stopping: uvicorn re-raises SIGTERM once it has shut down, so
        # the SDK's exit handlers (and their last export) never run there.
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 1)
        receiver.wait(lambda r: len(r.units()) == 1)
        output = stopped(server)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.db.queries"], unit.attributes["zen.db.postgresql.queries"]) == (7, 7)
        assert unit.attributes["zen.db.repeated_max"] == 7
        assert len(db_children(receiver, unit)) == 7
        # the body sleeps 6 x 0.05 s: the unit and its span end after it
        assert unit.attributes["zen.duration_ms"] >= 300
        assert unit.end_ns - unit.start_ns >= 300_000_000
        assert all(span.end_ns <= unit.end_ns for span in db_children(receiver, unit))
        assert receiver.total("zen.unit.db.queries", db__system="all").sum == 7
        assert receiver.total("zen.unit.duration").sum >= 0.3
        assert "Traceback" not in output

    @pytest.mark.parametrize("server_name", ["gunicorn-sync", "gunicorn-gthread"])
    def test_external_calls_and_memory_of_a_streamed_body_count_for_its_request(
        self, receiver: Receiver, server_name: str, external_url: str
    ) -> None:
        """A body that calls an external system for each of its 3 parts and keeps 40 MiB at its
        end: 3 external calls and the growth are the request's; a breach of the budget is too."""
        server = SERVERS[server_name](receiver, ZEN_TEST_EXTERNAL_URL=external_url)
        assert server.get("/stream/0/3/?call=1&grow=40")[0] == 200
        receiver.wait(lambda r: len(r.units()) == 1)
        stopped(server)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.db.queries"], unit.attributes["zen.external.calls"]) == (3, 3)
        assert unit.attributes["zen.memory.rss_delta_bytes"] >= 40 * MIB
        calls = [
            span
            for span in receiver.spans()
            if span.parent_span_id == unit.span_id and span.kind == "CLIENT" and "db.system" not in span.attributes
        ]
        assert len(calls) == 3

    def test_a_budget_breached_by_the_body_is_a_breach_of_its_request(self, receiver: Receiver, tmp_path: Path) -> None:
        """queries = 5 for the route; 1 + 6 queries of one shape: both limits breached, with the
        events and the counter; the repetition's call site is the body's line."""
        budget = tmp_path / "zenmetry.toml"
        budget.write_text('[http."stream/<int:before>/<int:during>/"]\nqueries = 5\n')
        server = SERVERS["gunicorn-sync"](receiver, ZENMETRY_BUDGETS=str(budget))
        assert server.get("/stream/1/6/")[0] == 200
        receiver.wait(lambda r: len(r.units()) == 1)
        stopped(server)
        (unit,) = receiver.units()
        assert unit.attributes["zen.budget.breached"] == ["queries", "repeated_queries"]
        events = unit.events_named("zen.budget.breach")
        assert [(e["zen.limit"], e["zen.limit.value"], e["zen.actual"]) for e in events] == [
            ("queries", 5, 7),
            ("repeated_queries", 5, 7),
        ]
        (repeated,) = unit.events_named("zen.db.repeated_query")
        assert (repeated["zen.count"], repeated["code.function.name"]) == (7, "stream.<locals>.body")
        receiver.wait(lambda r: r.total("zen.budget.breaches", zen__limit="queries").value == 1)

    @pytest.mark.parametrize("server_name", list(SERVERS))
    def test_a_file_response_is_one_unit_ending_when_the_file_is_sent(
        self, receiver: Receiver, server_name: str
    ) -> None:
        """``FileResponse`` of 512 KiB after 1 query: the whole file arrives, the unit has its 1 query."""
        server = SERVERS[server_name](receiver)
        status, body = server.get("/file/512/")
        assert (status, len(body)) == (200, 512 * 1024)
        receiver.wait(lambda r: len(r.units()) == 1)
        stopped(server)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.unit.name"], unit.attributes["zen.db.queries"]) == ("file/<int:kib>/", 1)
        assert len(db_children(receiver, unit)) == 1

    @pytest.mark.parametrize("server_name", list(SERVERS))
    def test_a_client_that_leaves_mid_stream_still_finishes_the_unit(
        self, receiver: Receiver, server_name: str, tmp_path: Path
    ) -> None:
        """The client reads 128 KiB of a 2,000-part body (64 KiB each, one query each) and goes
        away: the unit finishes with exactly the queries the body made before it stopped. Under
        ASGI the body may be stopped in the middle of a query (the ORM's thread goes on): that
        query ends after the unit, is not counted, and is still exported as its DB span."""
        view = "astream" if server_name == "uvicorn" else "stream"
        record = tmp_path / "made"
        server = SERVERS[server_name](receiver)
        read = leave_mid_stream(server, f"/{view}/0/2000/?size=65536&sleep=0.002&record={record}", 128 * 1024)
        assert read >= 128 * 1024
        made, started = map(int, wait_for_file(record).split())
        receiver.wait(lambda r: len(r.units()) == 1)
        assert server.get("/queries/2/")[0] == 200  # the server goes on serving
        receiver.wait(lambda r: len(r.units()) == 2)
        receiver.wait(lambda r: len(r.spans()) == 2 + 2 + started)
        stopped(server)
        (unit,) = [u for u in receiver.units() if u.attributes["zen.unit.name"].startswith(view)]
        assert 2 <= made < 2000
        assert started == made if server_name != "uvicorn" else started in (made, made + 1)
        assert (unit.attributes["zen.db.queries"], len(db_children(receiver, unit))) == (made, started)


@pytest.mark.usefixtures("postgres_db")
class TestThreadsOfARequest:
    @pytest.mark.parametrize("server_name", ["gunicorn-sync", "gunicorn-gthread"])
    def test_queries_fanned_out_to_threads_count_for_the_request(self, receiver: Receiver, server_name: str) -> None:
        """8 queries on a ThreadPoolExecutor and 5 on threading.Thread: 8 and 5, each DB span a
        child of its request; 8 such requests at once keep their figures apart."""
        server = SERVERS[server_name](receiver)
        assert server.get("/fanout/8/")[0] == 200
        assert server.get("/threads/5/")[0] == 200
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda n: server.get(f"/fanout/{n}/")[0], range(1, 9)))
        assert statuses == [200] * 8
        receiver.wait(lambda r: len(r.units()) == 10)
        stopped(server)
        for unit in receiver.units():
            n = int(path_of(unit).strip("/").split("/")[-1])
            assert (unit.attributes["zen.db.queries"], len(db_children(receiver, unit))) == (n, n), path_of(unit)
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 10)
        assert receiver.total("zen.unit.db.queries", db__system="all").sum == 8 + 5 + sum(range(1, 9))

    @pytest.mark.parametrize("pool", [["--pool", "prefork", "--concurrency", "1"], ["--pool", "threads"]])
    def test_queries_fanned_out_by_a_task_count_for_the_task(
        self, receiver: Receiver, task_queue: str, send, pool: list[str]
    ) -> None:
        """A task fanning 8 queries out to a ThreadPoolExecutor, and one fanning 3: 8 and 3."""
        worker = start_worker(receiver, task_queue, *pool)
        send("zentestapp.tasks.fanout", 8)
        send("zentestapp.tasks.fanout", 3)
        receiver.wait(lambda r: len(r.units()) == 2, timeout=60)
        stopped(worker)
        figures = sorted((u.attributes["zen.db.queries"], len(db_children(receiver, u))) for u in receiver.units())
        assert figures == [(3, 3), (8, 8)]

    def test_sync_to_async_threads_count_for_the_async_view(self, receiver: Receiver) -> None:
        """An async view gathering 6 ``sync_to_async(thread_sensitive=False)`` queries: 6; and the
        ORM's own async calls still count (``/async/3/``: 3)."""
        server = uvicorn(receiver)
        assert server.get("/async-fanout/6/")[0] == 200
        assert server.get("/async/3/")[0] == 200
        receiver.wait(lambda r: len(r.units()) == 2)
        stopped(server)
        by_name = {u.attributes["zen.unit.name"]: u for u in receiver.units()}
        assert by_name["async-fanout/<int:n>/"].attributes["zen.db.queries"] == 6
        assert len(db_children(receiver, by_name["async-fanout/<int:n>/"])) == 6
        assert by_name["async/<int:n>/"].attributes["zen.db.queries"] == 3


def overlapping(units: list[Span]) -> int:
    """The most units that were open at one moment."""
    edges = sorted([(u.start_ns, 1) for u in units] + [(u.end_ns, -1) for u in units])
    most = open_ = 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return most


@pytest.mark.usefixtures("postgres_db")
class TestCooperativePools:
    @pytest.mark.parametrize("pool", ["gevent", "eventlet"])
    def test_a_green_pool_runs_its_tasks_under_the_launcher_with_exact_units(
        self, receiver: Receiver, task_queue: str, send, pool: str
    ) -> None:
        """``opentelemetry-instrument celery worker -P <pool> -c 10``, no extra variable: 20 tasks
        of 1 to 20 queries (pausing between them), run 10 at a time, give 20 successful units,
        each with exactly its own queries as its own DB spans; their memory is shared."""
        worker = start_worker(receiver, task_queue, "-P", pool, "-c", "10")
        for n in range(1, 21):
            send(QUERIES, n, 0.02)
        receiver.wait(lambda r: len(r.units()) == 20, timeout=120)
        output = stopped(worker)
        units = units_named(receiver, QUERIES)
        assert "DatabaseWrapper objects created in a thread" not in output
        assert len(units) == 20
        figures = []
        for unit in units:
            assert unit.attributes["zen.db.queries"] == len(db_children(receiver, unit))
            figures.append(unit.attributes["zen.db.queries"])
        assert sorted(figures) == list(range(1, 21))
        # 10 at a time (eventlet too: psycopg 3 waits cooperatively under gevent only, but the
        # tasks' pauses are cooperative under both), so the memory of most is shared
        assert overlapping(units) >= 5
        assert sum(u.attributes["zen.memory.shared"] for u in units) >= 10
        assert "Traceback" not in output
        receiver.wait(lambda r: r.total("zen.unit.duration", celery__state="SUCCESS").count == 20)
        total = receiver.total("zen.unit.db.queries", zen__unit__name=QUERIES, db__system="all")
        assert (total.count, total.sum) == (20, sum(range(1, 21)))

    @pytest.mark.parametrize("worker_class", ["gevent"])
    def test_gunicorns_gevent_worker_keeps_concurrent_requests_apart(
        self, receiver: Receiver, worker_class: str
    ) -> None:
        """``gunicorn -k gevent`` under the launcher: 20 requests of 0 to 9 queries at once
        (with a streamed one of 1 + 6), each unit exact, the histogram totals too."""
        server = gunicorn(receiver, "--workers", "1", "--worker-class", worker_class, "--worker-connections", "20")
        counts = [i % 10 for i in range(20)]
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(lambda n: server.get(f"/queries/{n}/")[0], counts))
            streamed = pool.submit(server.get, "/stream/1/6/?sleep=0.05")
            assert streamed.result() == (200, b"x" * 18)
        assert statuses == [200] * 20
        receiver.wait(lambda r: len(r.units()) == 21)
        output = stopped(server)
        for unit in receiver.units():
            n = (
                7
                if unit.attributes["zen.unit.name"].startswith("stream")
                else int(path_of(unit).strip("/").split("/")[-1])
            )
            assert (unit.attributes["zen.db.queries"], len(db_children(receiver, unit))) == (n, n), path_of(unit)
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 21)
        assert receiver.total("zen.unit.db.queries", db__system="all").sum == sum(counts) + 7
        # At exit the SDK's exporter threads (greenlets here) end with a KeyError in
        # threading._delete: the same with the launcher's own gevent variable; nothing else.
        assert output.count("Traceback") == output.count("Thread._bootstrap of <Thread(Otel"), output
