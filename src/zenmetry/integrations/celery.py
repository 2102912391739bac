"""Celery: the ``task_postrun`` receiver that finishes a ``task`` unit, the enqueue time a
producer records for the task's queue wait, and the flush every pool process needs before it exits.

Queue wait: Celery's message carries no enqueue time, so the producer (any process running
under zenmetry that sends tasks: a web process, another worker, a retry) records it in the
message's headers (``zenmetry_enqueued_at``, seconds since the epoch); the worker measures the
wait from it, or from the task's ETA when it has one (a countdown or ETA task waits from when
it became due). A task sent by a producer without zenmetry has no wait: the figure is left out
rather than guessed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from opentelemetry import trace

from zenmetry import _guard, _names, _state
from zenmetry.config._budgets import budget_of
from zenmetry.export import _outbox
from zenmetry.integrations import Integration
from zenmetry.units._processor import UnitProcessor


class CeleryIntegration(Integration):
    library = "celery"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        # Connected before the instrumentation's own receivers, which end the span.
        connect(processor)

    def after(self, entry_point: str, processor: UnitProcessor) -> None:
        # Connected after the instrumentation's task_prerun, which starts the span.
        if _state.once("celery task_prerun"):
            from celery import signals

            receiver = partial(_on_task_prerun, processor)
            signals.task_prerun.connect(receiver, weak=False, dispatch_uid="zenmetry.task_prerun")


INTEGRATION: Final = CeleryIntegration()


def connect(processor: UnitProcessor) -> None:
    """Connect zenmetry's receivers (once per process); call before the Celery instrumentor
    connects its own.

    Receivers run in connection order, and the instrumentation's ``task_postrun`` ends the
    task span: zenmetry's must run first to write the figures on it.
    """
    if not _state.once("celery signals"):
        return
    from celery import signals

    signals.task_postrun.connect(partial(_on_task_postrun, processor), weak=False, dispatch_uid="zenmetry.task_postrun")
    signals.worker_process_shutdown.connect(_flush, weak=False, dispatch_uid="zenmetry.worker_process_shutdown")
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="zenmetry.before_task_publish")


def _on_task_prerun(
    processor: UnitProcessor, *args: Any, task_id: str | None = None, task: Any = None, **_: Any
) -> None:
    if task is None:
        return
    try:
        processor.note_unit(_task_span(task, task_id), task.name, budget_of(task), _due(task.request))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Celery task_prerun receiver")


def _on_publish(*, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """``before_task_publish``: the enqueue time, in the message's headers (a retry is a new
    message: its wait runs from the retry's enqueue)."""
    try:
        if headers is not None:
            headers[_names.CELERY_ENQUEUED_HEADER] = time.time()
    except Exception:  # noqa: BLE001
        _guard.swallow("the Celery before_task_publish receiver")


def _due(request: Any) -> float | None:
    """When a task became due: its ETA if it has one, else when it was enqueued; None unknown."""
    enqueued = getattr(request, _names.CELERY_ENQUEUED_HEADER, None)
    if enqueued is None:
        enqueued = (getattr(request, "headers", None) or {}).get(_names.CELERY_ENQUEUED_HEADER)
    if not isinstance(enqueued, int | float) or isinstance(enqueued, bool):
        return None
    eta = getattr(request, "eta", None)
    if eta:
        due = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
        if isinstance(due, datetime):
            if due.tzinfo is None:
                due = due.replace(tzinfo=UTC)  # Celery's naive ETAs are UTC
            return max(float(enqueued), due.timestamp())
    return float(enqueued)


def _on_task_postrun(
    processor: UnitProcessor,
    *args: Any,
    task_id: str | None = None,
    task: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    if task is None:
        return
    try:
        span = _task_span(task, task_id)
        processor.finish(span, task.name, {_names.CELERY_STATE: state or "UNKNOWN"}, budget_of(task))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Celery task_postrun receiver")


def _flush(**_: Any) -> None:
    """Export what a pool process still holds before it exits.

    billiard ends pool processes with ``os._exit()``, so the SDK's exit handlers never run:
    without this, every span and metric point of a process recycled by
    ``--max-tasks-per-child`` is lost (opentelemetry-python-contrib #4916). Traces and metrics
    flush side by side, and the process waits for them at most ``_outbox.FLUSH_TIMEOUT_MILLIS``
    in all: a collector that is down must delay a recycled process by seconds, not minutes.
    """
    _outbox.flush(_state.state.outbox)


def _task_span(task: Any, task_id: str | None) -> Any:
    from opentelemetry.instrumentation.celery import utils

    context = utils.retrieve_context(task, task_id) if task_id else None
    return context[0] if context else trace.get_current_span()
