"""Celery glue: the ``task_postrun`` receiver that finishes a ``task`` unit, and the flush
every pool process needs before it exits.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from zenmetry import _config, _guard, _names
from zenmetry._budgets import budget_of

_connected = False


def connect() -> None:
    """Connect zenmetry's receivers; call before the Celery instrumentor connects its own.

    Receivers run in connection order, and the instrumentation's ``task_postrun`` ends the
    task span: zenmetry's must run first to write the figures on it.
    """
    global _connected  # noqa: PLW0603 - connect once per process
    if _connected:
        return
    from celery import signals

    signals.task_postrun.connect(_on_task_postrun, weak=False, dispatch_uid="zenmetry.task_postrun")
    _connected = True


def _on_task_postrun(*, task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    processor = _config.processor()
    if processor is None or task is None:
        return
    try:
        span = _task_span(task, task_id)
        processor.finish(span, task.name, {_names.CELERY_STATE: state or "UNKNOWN"}, budget_of(task))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Celery task_postrun receiver")


def _task_span(task: Any, task_id: str | None) -> Any:
    from opentelemetry.instrumentation.celery import utils

    context = utils.retrieve_context(task, task_id) if task_id else None
    return context[0] if context else trace.get_current_span()
