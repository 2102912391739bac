"""Django tasks as units: django-tasks-db's ``db_worker`` under ``opentelemetry-instrument`` on
real PostgreSQL, tasks enqueued by a process without zenmetry; and the immediate backend inside a
request of this process. On Django 6 the framework is ``django.tasks``; on Django 5.2, its backport
``django_tasks`` (the same signals, the same worker)."""

from __future__ import annotations

import importlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from support.harness import Harness
from support.otlp import Receiver, Span
from support.processes import PG_DB, instrumented_command, manage, pg_connect, project_env

THREE = "zentestapp.jobs.three_queries"
TASK_TABLE = "django_tasks_database_dbtaskresult"


@pytest.fixture
def no_tasks(postgres_db: str) -> Iterator[None]:
    """An empty task table before and after the test: the next test's worker runs only its own."""
    with pg_connect(PG_DB) as connection:
        connection.execute(f"DELETE FROM {TASK_TABLE}")
    yield
    with pg_connect(PG_DB) as connection:
        connection.execute(f"DELETE FROM {TASK_TABLE}")


def _enqueue(task: str, *args: str) -> None:
    """Enqueue from a process without zenmetry (a plain ``python -m django``)."""
    manage("enqueue_jobs", task, *args, env=project_env())


def _worker(receiver: Receiver, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """django-tasks-db's worker under the launcher, until the queue is empty (``--batch``)."""
    return instrumented_command(
        receiver, "db_worker", "--no-startup-delay", "--no-reload", *(args or ("--batch",)), **env
    )


def _statement(span: Span) -> str:
    return str(span.attributes.get("db.statement", ""))


@pytest.mark.usefixtures("no_tasks")
class TestDbWorker:
    def test_each_run_is_a_unit_of_its_own_queries(self, receiver: Receiver, tmp_path: Path) -> None:
        """10 tasks of 3 queries, enqueued 3 s before the worker starts: 10 units of 3 (the metric's
        count 10, sum 30), each waited >= 3 s and breached queue_wait_ms = 1000; the worker's own
        queries (claiming each task, saving its result) are in no unit."""
        budgets = tmp_path / "zenmetry.toml"
        budgets.write_text("[task]\nqueue_wait_ms = 1000\n")
        enqueued = time.time()
        _enqueue("three_queries", "--count", "10")
        time.sleep(3)
        result = _worker(receiver, ZENMETRY_BUDGETS=str(budgets))
        whole_run_ms = (time.time() - enqueued) * 1000
        assert result.returncode == 0, result.stderr
        assert result.stdout.count(f"path={THREE} state=SUCCESSFUL") == 10  # the worker's own log

        receiver.wait(lambda r: len(r.units()) == 10)
        units = receiver.units()
        assert {(u.name, u.kind, u.scope) for u in units} == {(THREE, "CONSUMER", "zenmetry.django_tasks")}
        assert [(u.attributes["zen.unit.kind"], u.attributes["zen.unit.name"]) for u in units] == [("task", THREE)] * 10
        assert [u.attributes["zen.db.queries"] for u in units] == [3] * 10
        assert [u.status_code for u in units] == [0] * 10
        assert [u.attributes["zen.budget.breached"] for u in units] == [["queue_wait_ms"]] * 10
        waits = [u.attributes["zen.task.queue_wait_ms"] for u in units]
        assert all(3000 <= wait < whole_run_ms for wait in waits), (waits, whole_run_ms)
        assert len({u.trace_id for u in units}) == 10  # nothing carried the producer's trace: new traces

        receiver.wait(lambda r: r.total("zen.unit.queue_wait", zen__unit__name=THREE).count == 10)
        total = receiver.total(
            "zen.unit.db.queries", zen__unit__name=THREE, db__system="all", django__task__status="SUCCESSFUL"
        )
        assert (total.count, total.sum) == (10, 30)

        unit_ids = {u.span_id for u in units}
        db_spans = [s for s in receiver.spans() if s.kind == "CLIENT"]
        in_units = [s for s in db_spans if s.parent_span_id in unit_ids]
        assert len(in_units) == 30
        assert all("zentestapp_customer" in _statement(s) for s in in_units)
        worker_updates = [s for s in db_spans if _statement(s).startswith(f'UPDATE "{TASK_TABLE}"')]
        assert (len(worker_updates), [s for s in worker_updates if s.parent_span_id]) == (20, [])

    def test_a_failing_task_and_a_budget_on_the_task(self, receiver: Receiver) -> None:
        """A task that raises is a unit with status ERROR, FAILED on its points and the exception
        recorded; ``@budget`` above ``@task`` is the task's budget."""
        _enqueue("fails")
        _enqueue("over_its_budget")
        result = _worker(receiver)
        assert result.returncode == 0, result.stderr

        receiver.wait(lambda r: len(r.units()) == 2)
        by_name = {u.attributes["zen.unit.name"]: u for u in receiver.units()}
        failed = by_name["zentestapp.jobs.fails"]
        assert (failed.attributes["zen.db.queries"], failed.status_code) == (1, 2)  # STATUS_CODE_ERROR
        assert [e["exception.type"] for e in failed.events_named("exception")] == ["RuntimeError"]
        receiver.wait(lambda r: r.total("zen.unit.duration", django__task__status="FAILED").count == 1)
        assert receiver.total("zen.unit.duration", django__task__status="SUCCESSFUL").count == 1

        over = by_name["zentestapp.jobs.over_its_budget"]
        assert (over.attributes["zen.budget"], over.attributes["zen.budget.breached"]) == ("@budget", ["queries"])
        assert over.events_named("zen.budget.breach") == [
            {"zen.limit": "queries", "zen.limit.value": 1, "zen.actual": 2, "zen.budget": "@budget"}
        ]

    def test_a_task_due_later_waits_from_when_it_was_due(self, receiver: Receiver) -> None:
        """Enqueued with run_after 2 s ahead, to a worker already polling: it starts 2 s after its
        enqueue but waited only from its due time."""
        enqueued = time.time()
        _enqueue("three_queries", "--run-after", "2")
        result = _worker(receiver, "--max-tasks", "1", "--interval", "0.1")
        assert result.returncode == 0, result.stderr
        receiver.wait(lambda r: len(r.units()) == 1)
        (unit,) = receiver.units()
        assert unit.start_ns / 1e9 - enqueued >= 2
        assert 0 <= unit.attributes["zen.task.queue_wait_ms"] < 1000


class TestImmediateBackend:
    def test_a_task_run_inside_a_request_is_a_unit_within_it(self, zen: Harness) -> None:
        """The view makes 1 query and runs a task of 3 through the immediate backend: the task is a
        unit of 3 whose span is the request's child, and the request counts all 4."""
        response = Client().get("/immediate/")
        assert response.json() == {"status": "SUCCESSFUL", "value": 3}
        by_kind = {span.attributes["zen.unit.kind"]: span for span in zen.units()}
        request, task = by_kind["http"], by_kind["task"]
        assert (task.name, task.attributes["zen.unit.name"], task.attributes["zen.db.queries"]) == (THREE, THREE, 3)
        assert request.attributes["zen.db.queries"] == 4
        assert task.parent is not None
        assert task.parent.span_id == request.context.span_id
        assert 0 <= task.attributes["zen.task.queue_wait_ms"] < 100
        points = zen.metric("zen.unit.db.queries")
        assert points[
            frozenset(
                {
                    ("zen.unit.kind", "task"),
                    ("zen.unit.name", THREE),
                    ("django.task.status", "SUCCESSFUL"),
                    ("db.system", "all"),
                }
            )
        ] == (1, 3)

    def test_a_run_whose_task_finished_never_came_is_finished_when_the_next_starts(self, zen: Harness) -> None:
        """A receiver connected after zenmetry's raises in task_started: the immediate backend
        sends it outside its try, so the request fails (as it would without zenmetry) and no
        task_finished comes. The run's unit is finished, status UNKNOWN, when the next task starts
        on the thread; the next task is measured as usual."""
        import django

        signals = importlib.import_module("django.tasks.signals" if django.VERSION >= (6,) else "django_tasks.signals")

        def fails(**_: object) -> None:
            raise RuntimeError("a receiver after zenmetry's fails")

        signals.task_started.connect(fails, dispatch_uid="zen-test-fails")
        try:
            assert Client(raise_request_exception=False).get("/immediate/").status_code == 500
        finally:
            signals.task_started.disconnect(dispatch_uid="zen-test-fails")
        assert Client().get("/immediate/").json() == {"status": "SUCCESSFUL", "value": 3}
        statuses = {
            dict(point)["django.task.status"]: count
            for point, (count, _) in zen.metric("zen.unit.duration").items()
            if ("zen.unit.kind", "task") in point
        }
        assert statuses == {"UNKNOWN": 1, "SUCCESSFUL": 1}
        tasks = [span for span in zen.units() if span.attributes["zen.unit.kind"] == "task"]
        assert [span.attributes["zen.db.queries"] for span in tasks] == [0, 3]
