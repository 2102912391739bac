"""Celery tasks as units: a real worker on the Redis broker, under ``opentelemetry-instrument``,
exporting OTLP/HTTP to the test receiver; eager tasks inside requests in this process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from django.test import Client

from support.celery_worker import FAILS, QUERIES, RETRIES, THREE, start_worker, units_named
from support.harness import Harness
from support.otlp import Receiver
from support.processes import TESTS, project_env


@pytest.mark.usefixtures("postgres_db")
class TestPrefork:
    def test_recycled_pool_processes_lose_nothing(self, receiver: Receiver, task_queue: str, send) -> None:
        """prefork, concurrency 2, one task per child: 20 tasks of 3 queries and 2 failing ones
        give 22 exact units and exact histograms, every child flushing before it exits."""
        worker = start_worker(
            receiver, task_queue, "--pool", "prefork", "--concurrency", "2", "--max-tasks-per-child", "1"
        )
        for i in range(20):
            send(THREE, i)
        send(FAILS)
        send(FAILS)
        receiver.wait(lambda r: len(r.units()) == 22, timeout=120)
        output = worker.stop()
        three, fails = units_named(receiver, THREE), units_named(receiver, FAILS)
        assert (len(three), len(fails)) == (20, 2)
        assert {
            (u.attributes["zen.unit.kind"], u.attributes["zen.db.queries"], u.attributes["zen.db.postgresql.queries"])
            for u in three
        } == {("task", 3, 3)}
        assert [u.attributes["zen.db.queries"] for u in fails] == [1, 1]
        assert [u.status_code for u in fails] == [2, 2]  # STATUS_CODE_ERROR
        # every pool process is its own service instance
        assert len({u.resource["service.instance.id"] for u in receiver.units()}) == 22
        receiver.wait(lambda r: r.total("zen.unit.db.queries", zen__unit__name=THREE, db__system="all").count == 20)
        total = receiver.total("zen.unit.db.queries", zen__unit__name=THREE, db__system="all")
        assert (total.count, total.sum) == (20, 60)
        assert receiver.total("zen.unit.duration", zen__unit__name=THREE, celery__state="SUCCESS").count == 20
        assert receiver.total("zen.unit.duration", zen__unit__name=FAILS, celery__state="FAILURE").count == 2
        assert output.count("Traceback") == 2  # the two failing tasks, logged by Celery; nothing else


@pytest.mark.usefixtures("postgres_db")
class TestOutcomes:
    def test_failed_and_retried_executions_are_each_a_unit(self, receiver: Receiver, task_queue: str, send) -> None:
        worker = start_worker(receiver, task_queue, "--pool", "solo")
        send(RETRIES)
        send(FAILS)
        receiver.wait(lambda r: len(r.units()) == 4, timeout=60)
        worker.stop()
        assert [u.attributes["zen.db.queries"] for u in units_named(receiver, RETRIES)] == [1, 1, 1]
        receiver.wait(lambda r: r.total("zen.unit.duration").count == 4)
        states = {
            (name, state): receiver.total("zen.unit.duration", zen__unit__name=name, celery__state=state).count
            for name, state in [(RETRIES, "RETRY"), (RETRIES, "SUCCESS"), (FAILS, "FAILURE")]
        }
        assert states == {(RETRIES, "RETRY"): 2, (RETRIES, "SUCCESS"): 1, (FAILS, "FAILURE"): 1}

    @pytest.mark.parametrize("pool", [["--pool", "threads", "--concurrency", "4"], ["--pool", "solo"]])
    def test_concurrent_tasks_keep_their_figures_apart(
        self, receiver: Receiver, task_queue: str, send, pool: list[str]
    ) -> None:
        """Tasks of 1 to 12 queries, overlapping on threads (or one after another on solo):
        each unit counts exactly the DB spans that are its own children."""
        worker = start_worker(receiver, task_queue, *pool)
        for n in range(1, 13):
            send(QUERIES, n, 0.005)
        receiver.wait(lambda r: len(r.units()) == 12, timeout=60)
        worker.stop()
        spans = receiver.spans()
        figures = []
        for unit in receiver.units():
            children = [s for s in spans if s.parent_span_id == unit.span_id and s.kind == "CLIENT"]
            assert unit.attributes["zen.db.queries"] == len(children)
            figures.append(unit.attributes["zen.db.queries"])
        assert sorted(figures) == list(range(1, 13))

    def test_console_lines_show_task_units(self, receiver: Receiver, task_queue: str, send) -> None:
        worker = start_worker(receiver, task_queue, "--pool", "solo", ZENMETRY_CONSOLE="1")
        send(THREE, 1)
        receiver.wait(lambda r: len(r.units()) == 1, timeout=60)
        output = worker.stop()
        (line,) = [line for line in output.splitlines() if line.startswith("zenmetry task")]
        assert line.startswith(f"zenmetry task {THREE} SUCCESS | queries 3 (postgresql 3) | db ")


@pytest.mark.usefixtures("postgres_db")
class TestWithoutLauncher:
    def test_configure_in_worker_process_init(self, receiver: Receiver, task_queue: str, send) -> None:
        """``zenmetry.configure()`` in ``worker_process_init``, no launcher: units are exact and flushed."""
        worker = start_worker(
            receiver,
            task_queue,
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--max-tasks-per-child",
            "1",
            launcher=False,
            app="zentestapp.celery_configured",
        )
        send(THREE, 2)
        send(THREE, 3)
        receiver.wait(lambda r: len(r.units()) == 2, timeout=60)
        worker.stop()
        assert [u.attributes["zen.db.queries"] for u in receiver.units()] == [3, 3]


class TestEager:
    @pytest.mark.usefixtures("eager")
    def test_an_eager_task_inside_a_request_counts_for_both(self, zen: Harness) -> None:
        """The task is a unit of its own, and its queries count for the enclosing request too."""
        assert Client().get("/eager/2/").status_code == 200
        units = {span.attributes["zen.unit.kind"]: span for span in zen.units()}
        assert units["task"].attributes["zen.unit.name"] == QUERIES
        assert units["task"].attributes["zen.db.queries"] == 2
        assert units["http"].attributes["zen.db.queries"] == 3
        assert units["task"].parent.span_id == units["http"].context.span_id
        assert Counter(u.attributes["zen.unit.kind"] for u in zen.units()) == {"http": 1, "task": 1}


class TestFlushBound:
    def test_a_collector_that_never_answers_delays_a_recycled_process_5_seconds_at_most(self) -> None:
        """The flush before a pool process exits waits for traces and metrics together, bounded:
        with a collector that accepts connections and never answers it returns after 5 s, where
        the exporters' own timeouts and retries would hold the process 15 to 20 s."""
        import socket

        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
            code = textwrap.dedent(f"""
                import time
                from opentelemetry import metrics, trace
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.metrics import MeterProvider
                from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
                from opentelemetry.sdk.trace import TracerProvider
                from opentelemetry.sdk.trace.export import BatchSpanProcessor
                from zenmetry.integrations import celery as celery_integration

                tracer_provider = TracerProvider()
                tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint="{endpoint}/v1/traces")))
                trace.set_tracer_provider(tracer_provider)
                reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint="{endpoint}/v1/metrics"), 600_000)
                metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
                metrics.get_meter("t").create_counter("c").add(1)
                trace.get_tracer("t").start_span("s").end()
                start = time.monotonic()
                celery_integration._flush()
                print(round(time.monotonic() - start), flush=True)
                import os
                os._exit(0)  # as billiard ends a pool process
            """)
            result = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
            )
        assert result.stdout.splitlines()[:1] == ["5"], result.stderr


@pytest.mark.usefixtures("postgres_db", "harness")
class TestQueueWait:
    """The producer (this process, under zenmetry) records when it enqueued each task; the worker
    measures the task's wait in its queue from then, or from its due time."""

    def test_tasks_enqueued_while_the_worker_is_down_waited_until_it_came(
        self, receiver: Receiver, task_queue: str, send, tmp_path: Path
    ) -> None:
        """6 tasks sent, the worker started 3 s later: each waited at least 3 s and less than the
        whole run, breached queue_wait_ms = 1000, and the histogram counted 6."""
        budgets = tmp_path / "zenmetry.toml"
        budgets.write_text("[task]\nqueue_wait_ms = 1000\n")
        sent = time.time()
        for i in range(6):
            send(THREE, i)
        time.sleep(3)
        worker = start_worker(receiver, task_queue, "--pool", "solo", ZENMETRY_BUDGETS=str(budgets))
        receiver.wait(lambda r: len(r.units()) == 6, timeout=60)
        whole_run_ms = (time.time() - sent) * 1000
        worker.stop()
        units = units_named(receiver, THREE)
        waits = [unit.attributes["zen.task.queue_wait_ms"] for unit in units]
        assert len(waits) == 6
        assert all(3000 <= wait < whole_run_ms for wait in waits), (waits, whole_run_ms)
        assert [unit.attributes["zen.budget.breached"] for unit in units] == [["queue_wait_ms"]] * 6
        receiver.wait(lambda r: r.total("zen.unit.queue_wait", zen__unit__name=THREE).count == 6)
        total = receiver.total("zen.unit.queue_wait", zen__unit__name=THREE)
        assert total.sum == pytest.approx(sum(waits) / 1000)

    def test_a_countdown_task_waits_from_when_it_was_due(self, receiver: Receiver, task_queue: str) -> None:
        """A task sent with a 2 s countdown to a running worker starts 2 s after it was sent, but
        waited only from its due time."""
        from zentestapp.celery_app import app

        worker = start_worker(receiver, task_queue, "--pool", "solo")
        sent = time.time()
        app.send_task(THREE, args=[1], queue=task_queue, countdown=2)
        receiver.wait(lambda r: len(r.units()) == 1, timeout=60)
        worker.stop()
        (unit,) = receiver.units()
        assert unit.start_ns / 1e9 - sent >= 2
        assert 0 <= unit.attributes["zen.task.queue_wait_ms"] < 1000

    def test_a_task_from_a_producer_without_zenmetry_has_no_wait(self, receiver: Receiver, task_queue: str) -> None:
        """Sent by a process zenmetry does not instrument: the message says nothing of its enqueue
        time, so the figure is left out, not guessed."""
        code = textwrap.dedent(
            f"""
            from zentestapp.celery_app import app
            app.send_task({THREE!r}, args=[1], queue={task_queue!r})
            """
        )
        subprocess.run([sys.executable, "-c", code], cwd=TESTS, env=project_env(), check=True, timeout=60)
        worker = start_worker(receiver, task_queue, "--pool", "solo")
        receiver.wait(lambda r: len(r.units()) == 1, timeout=60)
        worker.stop()
        (unit,) = receiver.units()
        assert "zen.task.queue_wait_ms" not in unit.attributes
        assert unit.attributes["zen.db.queries"] == 3
