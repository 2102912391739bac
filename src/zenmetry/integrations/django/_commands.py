"""Management commands: one run of ``manage.py <command>`` (or ``django-admin``) is a unit of kind
``command``, named by the command, with every figure, budget (``[command]``,
``[command."name"]``), event, metric and console line a request has.

zenmetry opens the command's span itself (no instrumentation does), around
``BaseCommand.run_from_argv``, which both entry points call; a command called from code
(``call_command``) runs inside whatever unit called it. Commands that serve or consume forever
(servers, task workers, shells) are not units (``ZENMETRY_COMMANDS``). A command that raises,
or exits with a non-zero status, is a unit whose span has status ERROR; the unit finishes and
its span ends before the exception or the exit leaves ``run_from_argv``, and the process's exit
exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import wrapt
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from zenmetry import _guard, _names
from zenmetry.config._budgets import budget_of
from zenmetry.config._settings import is_unit_command
from zenmetry.units._processor import UnitProcessor


def measure_commands(processor: UnitProcessor) -> None:
    """Make each run of a management command a unit, once Django's management base is imported."""

    @wrapt.when_imported("django.core.management.base")
    def _patch(module: Any) -> None:
        wrapt.wrap_function_wrapper(module, "BaseCommand.run_from_argv", partial(_run, processor))


def _run(processor: UnitProcessor, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        argv = args[0] if args else kwargs["argv"]
        name = str(argv[1]) if len(argv) > 1 else type(instance).__module__.rsplit(".", 1)[-1]
        if not is_unit_command(processor.settings, name):
            return wrapped(*args, **kwargs)
        span = trace.get_tracer(_names.COMMAND_SCOPE).start_span(f"command {name}", kind=SpanKind.INTERNAL)
        processor.note_unit(span, name, budget_of(instance))
    except Exception:  # noqa: BLE001
        _guard.swallow("the management command hook")
        return wrapped(*args, **kwargs)
    failed: BaseException | None = None
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            return wrapped(*args, **kwargs)
    except SystemExit as exiting:
        if exiting.code not in (None, 0):
            failed = exiting
        raise
    except BaseException as error:
        failed = error
        raise
    finally:
        _finish(processor, span, name, failed)


def _finish(processor: UnitProcessor, span: Any, name: str, failed: BaseException | None) -> None:
    try:
        if failed is not None:
            if not isinstance(failed, SystemExit):
                span.record_exception(failed)
            span.set_status(Status(StatusCode.ERROR, type(failed).__name__))
        status = "ERROR" if failed is not None else "OK"
        processor.finish(span, name, {_names.COMMAND_STATUS: status})
    except Exception:  # noqa: BLE001
        _guard.swallow("the management command hook")
    finally:
        span.end()
