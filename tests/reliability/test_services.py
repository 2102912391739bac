"""The services a unit depends on fail under it: PostgreSQL backends terminated in the middle of
a request (``pg_terminate_backend`` on the app's own backends; the shared server stays up), a
private Redis broker restarted under a busy Celery worker, and a collector that never answers
while Celery pool processes are recycled and the worker gets SIGTERM."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.celery_worker import QUERIES, THREE, send_via, start_worker
from support.faults import (
    EXIT_SECONDS,
    backends_running,
    console_units,
    private_redis,
    terminate,
    timed,
    unsent,
    wait_for,
)
from support.otlp import BLACK_HOLE, Receiver
from support.processes import BIN, Server, free_port, gunicorn, project_env, start_server

THREE_UNIT = ("task zentestapp.tasks.three_queries SUCCESS", 3)


def _plain_gunicorn(*args: str) -> Server:
    """The same server without zenmetry or OpenTelemetry: what the app does on its own."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "zentestapp.wsgi", "--bind", f"127.0.0.1:{port}", *args]
    return start_server(command, project_env(), port)


def _killed_mid_request(server: Server, dbname: str) -> list[int]:
    """A request before, one whose backend is terminated while it sleeps in PostgreSQL, one after."""
    statuses = [server.get("/queries/3/")[0]]
    pending: list[int] = []
    request = threading.Thread(target=lambda: pending.append(server.get("/pause-in-database/")[0]))
    request.start()
    wait_for(lambda: backends_running(dbname, "SELECT pg_sleep") != [], "the request's query to sleep")
    assert terminate(backends_running(dbname, "SELECT pg_sleep")) == [True]
    request.join(timeout=30)
    statuses += [*pending, server.get("/queries/3/")[0]]
    return statuses


@pytest.mark.usefixtures("postgres_db")
class TestPostgresBackendsTerminated:
    def test_a_request_whose_backend_dies_fails_as_without_zenmetry_and_its_unit_has_its_figures(
        self, receiver: Receiver, postgres_db: str
    ) -> None:
        """The same three requests with and without zenmetry answer 200, 500, 200; under
        zenmetry the failed one is a unit with status 500, its 2 queries (the second failed)
        and an error on the failed DB span, and zenmetry logs nothing of its own."""
        plain = _plain_gunicorn("--workers", "1", "--worker-class", "gthread", "--threads", "2")
        without = _killed_mid_request(plain, postgres_db)
        plain.stop()
        server = gunicorn(
            receiver, "--workers", "1", "--worker-class", "gthread", "--threads", "2", ZENMETRY_CONSOLE="1"
        )
        statuses = _killed_mid_request(server, postgres_db)
        output = server.stop()
        assert without == statuses == [200, 500, 200]
        assert console_units(output) == [
            ("http GET queries/<int:n>/ 200", 3),
            ("http GET pause-in-database/ 500", 2),
            ("http GET queries/<int:n>/ 200", 3),
        ]
        assert [line for line in output.splitlines() if line.startswith("zenmetry:")] == []
        receiver.wait(lambda r: len(r.units()) == 3)
        (failed,) = [unit for unit in receiver.units() if unit.attributes["zen.unit.name"] == "pause-in-database/"]
        assert (failed.attributes["zen.db.queries"], failed.attributes["http.status_code"]) == (2, 500)
        calls = [span for span in receiver.spans() if span.parent_span_id == failed.span_id and span.kind == "CLIENT"]
        assert [span.status_code for span in calls] == [0, 2]  # unset, then error

    def test_every_backend_terminated_under_concurrent_traffic_each_unit_reports_what_its_client_saw(
        self, receiver: Receiver, postgres_db: str
    ) -> None:
        """60 requests of 5 queries on 4 threads while every backend of the app is terminated
        again and again: each request answers 200 or 500, and the console lines are exactly
        those statuses, one unit per request."""
        server = gunicorn(
            receiver, "--workers", "1", "--worker-class", "gthread", "--threads", "4", ZENMETRY_CONSOLE="1"
        )
        done = threading.Event()

        def kill_backends() -> None:
            while not done.is_set():
                terminate(backends_running(postgres_db, "SELECT"))

        killer = threading.Thread(target=kill_backends)
        killer.start()
        try:
            with ThreadPoolExecutor(4) as pool:
                statuses = list(pool.map(lambda _: server.get("/queries/5/")[0], range(60)))
        finally:
            done.set()
            killer.join()
        output = server.stop()
        assert set(statuses) <= {200, 500}
        seen = Counter((f"http GET queries/<int:n>/ {status}") for status in statuses)
        assert Counter(unit for unit, _ in console_units(output)) == seen
        assert [queries for unit, queries in console_units(output) if unit.endswith(" 200")] == [5] * seen[
            "http GET queries/<int:n>/ 200"
        ]
        assert [line for line in output.splitlines() if line.startswith("zenmetry:")] == []


@pytest.mark.usefixtures("postgres_db")
class TestRedisBrokerRestarted:
    def test_tasks_resume_after_the_broker_restarts_under_a_busy_worker_and_every_unit_is_exact(
        self, receiver: Receiver, task_queue: str
    ) -> None:
        """A private Redis is restarted while a task runs: that task finishes, the worker
        reconnects, the tasks sent after run, and every unit counts its 3 queries."""
        with private_redis() as redis:
            worker = start_worker(
                receiver,
                task_queue,
                "--pool",
                "threads",
                "--concurrency",
                "2",
                ZEN_TEST_BROKER=redis.url,
                ZENMETRY_CONSOLE="1",
            )
            for i in range(4):
                send_via(redis.url, task_queue, THREE, i)
            receiver.wait(lambda r: len(r.units()) == 4, timeout=60)
            send_via(redis.url, task_queue, QUERIES, 3, 1.0)  # busy for 3 s
            wait_for(lambda: f"Task {QUERIES}[" in "".join(worker.output), "the slow task to start")
            redis.restart()
            for i in range(4):
                send_via(redis.url, task_queue, THREE, i)
            receiver.wait(lambda r: len(r.units()) == 9, timeout=90)
            output = worker.stop()
        assert sorted(console_units(output)) == sorted([THREE_UNIT] * 8 + [(f"task {QUERIES} SUCCESS", 3)])
        assert [unit.attributes["zen.db.queries"] for unit in receiver.units()] == [3] * 9
        assert "Connection to broker lost" in output


# The harness instruments this process: the tasks it sends carry their enqueue time, so each
# child records a queue wait (one metric series more), whichever tests ran before.
@pytest.mark.usefixtures("postgres_db", "harness")
class TestCeleryUnderAHungCollector:
    def test_recycled_pool_processes_and_the_worker_exit_within_the_flush_bound(self, task_queue: str, send) -> None:
        """prefork, concurrency 2, one task per child, a collector that never answers: each
        recycled child waits 5 s at most (its 4 spans and 10 metric points counted in a
        warning), two generations of children take under 25 s (about 11 s here; the SDK's own
        timeouts would hold each child 15 to 20 s), and SIGTERM ends the worker within the bound."""
        with Receiver(BLACK_HOLE) as receiver:
            worker = start_worker(
                receiver,
                task_queue,
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--max-tasks-per-child",
                "1",
                ZENMETRY_CONSOLE="1",
            )

            def recycled() -> None:
                for i in range(4):
                    send(THREE, i)
                wait_for(lambda: len(unsent("".join(worker.output))) == 4, "4 recycled children", timeout=60)

            _, generations = timed(recycled)
            output, seconds = timed(worker.stop)
        assert console_units(output) == [THREE_UNIT] * 4
        # 9 series of zenmetry's (the queue wait too), 1 of the Celery instrumentation's
        assert unsent(output) == [(4, 10)] * 4
        assert generations < 25, output
        assert seconds < EXIT_SECONDS
