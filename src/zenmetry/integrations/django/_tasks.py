"""Django tasks (``django.tasks``, Django 6; the ``django_tasks`` backport on Django 5.2): one
execution of a task is a unit of kind ``task``, named by the task's ``module_path``.

No instrumentation exists upstream, so zenmetry opens the task's CONSUMER span itself, from the
signals a backend's worker sends around each run: ``task_started`` opens the unit, and
``task_finished`` finishes it with Django's final status (``django.task.status`` on its points).
A backend needs nothing of zenmetry's. The unit's calls are those made while the task's function
runs: the span is current only inside ``Task.call``, so what the worker does around it (claiming
the task before, saving its result after) belongs to no unit. A run whose ``task_finished`` never
came (a receiver or the worker failed in between) is finished, status ``UNKNOWN``, when the next
task starts on its thread.

The span continues the trace that is current when the task starts: the request's, for a task run
by the immediate backend inside it (its queries count for the request too, as an eager Celery
task's do), a new trace in a worker. Django's task API carries nothing but the task's arguments
from enqueue to run, and django-tasks-db stores nothing else, so a worker's task cannot continue
the trace of the request that enqueued it; the span carries the result's id
(``messaging.message.id``), the id ``enqueue()`` returned, to find one from the other.

Queue wait runs from ``TaskResult.enqueued_at``, or from the task's ``run_after`` when it became
due later, to the unit's start.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any, Final

import wrapt
from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from zenmetry import _guard, _names
from zenmetry.config._budgets import budget_of
from zenmetry.units._processor import UnitProcessor

# Django 6's framework, and the backport Django 5.2 projects run it from.
PACKAGES: Final = ("django.tasks", "django_tasks")


class _Running(threading.local):
    """The tasks running on this thread, innermost last (an immediate task inside another)."""

    def __init__(self) -> None:
        self.tasks: list[_Run] = []


class _Run:
    __slots__ = ("called", "id", "path", "span")

    def __init__(self, id: str, path: str, span: Any) -> None:
        self.id, self.path, self.span = id, path, span
        self.called: bool | None = False
        """False before ``Task.call``, True inside it, None once it returned."""


_running: Final = _Running()


def measure_tasks(processor: UnitProcessor) -> None:
    """Make each run of a Django task a unit, once a task framework is imported."""
    for package in PACKAGES:
        wrapt.register_post_import_hook(partial(_connect, processor), f"{package}.signals")
        wrapt.register_post_import_hook(_wrap_call, f"{package}.base")


def _connect(processor: UnitProcessor, signals: Any) -> None:
    uid = f"zenmetry.{signals.__name__}"
    signals.task_started.connect(partial(_started, processor), weak=False, dispatch_uid=f"{uid}.started")
    signals.task_finished.connect(partial(_finished, processor), weak=False, dispatch_uid=f"{uid}.finished")


def _wrap_call(base: Any) -> None:
    wrapt.wrap_function_wrapper(base, "Task.call", _call)


def _started(processor: UnitProcessor, sender: Any = None, task_result: Any = None, **_: Any) -> None:
    try:
        _end_stale(processor)
        task = task_result.task
        path = task.module_path
        span = trace.get_tracer(_names.DJANGO_TASKS_SCOPE).start_span(
            path,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.message.id": str(task_result.id),
                "messaging.destination.name": str(task.queue_name),
                _names.DJANGO_TASK_BACKEND: str(task_result.backend),
            },
        )
        processor.note_unit(span, path, budget_of(task.func), _due(task_result, task))
        _running.tasks.append(_Run(str(task_result.id), path, span))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django task_started receiver")


def _end_stale(processor: UnitProcessor) -> None:
    """Finish the runs of this thread that are not running their function (a task starting now
    is inside none of them): their ``task_finished`` never came."""
    for run in [run for run in _running.tasks if run.called is not True]:
        _running.tasks.remove(run)
        try:
            processor.finish(run.span, run.path, {_names.DJANGO_TASK_STATUS: "UNKNOWN"})
        finally:
            run.span.end()


def _call(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """``Task.call``: the task's function, with its unit's span current while it runs."""
    token = None
    try:
        run = _running.tasks[-1] if _running.tasks else None
        if run is not None and run.called is False and run.path == _module_path(instance):
            run.called = True
            token = context.attach(trace.set_span_in_context(run.span))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django Task.call wrapper")
        run = None
    try:
        return wrapped(*args, **kwargs)
    finally:
        if token is not None and run is not None:
            run.called = None
            context.detach(token)


def _finished(processor: UnitProcessor, sender: Any = None, task_result: Any = None, **_: Any) -> None:
    try:
        found = [run for run in _running.tasks if run.id == str(task_result.id)]
        if not found:
            return
        run = found[-1]
        _running.tasks.remove(run)
        status = str(getattr(task_result.status, "value", task_result.status))
        span = run.span
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django task_finished receiver")
        return
    try:
        if status == "FAILED":
            errors = getattr(task_result, "errors", None)
            failure = errors[-1].exception_class_path if errors else status
            span.set_status(Status(StatusCode.ERROR, failure))
            raised = sys.exc_info()[1]  # the signal is sent from the worker's exception handler
            if raised is not None:
                span.record_exception(raised)
        processor.finish(span, run.path, {_names.DJANGO_TASK_STATUS: status}, budget_of(task_result.task.func))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django task_finished receiver")
    finally:
        span.end()


def _due(task_result: Any, task: Any) -> float | None:
    """When the task became due: its ``run_after`` if later than its enqueue, else its enqueue;
    None when the backend did not say when it was enqueued."""
    enqueued = getattr(task_result, "enqueued_at", None)
    if not isinstance(enqueued, datetime):
        return None
    due = enqueued.timestamp()
    run_after = getattr(task, "run_after", None)
    if isinstance(run_after, datetime):
        due = max(due, run_after.timestamp())
    return due


def _module_path(task: Any) -> str | None:
    try:
        return str(task.module_path)
    except Exception:  # noqa: BLE001
        return None
