"""Celery tasks as units: a real worker on the Redis broker, under ``opentelemetry-instrument``,
exporting OTLP/HTTP to the test receiver; eager tasks inside requests in this process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from django.test import Client

from support.celery_worker import FAILS, QUERIES, RETRIES, THREE, start_worker, units_named
from support.harness import Harness
from support.otlp import Receiver


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
