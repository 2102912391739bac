"""Django: the units of requests, counted as Django counts its queries.

One module per concern, as the integration grew:

- ``_requests``: a request's unit, named by its route, finished by the response hook;
- ``_streaming``: a streamed response's unit, finished when the response is closed;
- ``_transactions``: transaction control counted where Django logs it, connection set-up;
- ``_databases``: ``DATABASES`` entries without timeouts;
- ``_cache``: calls through Django's cache API;
- ``_commands``: a management command's unit;
- ``_tasks``: a Django task's unit (``django.tasks``).

This module is the integration itself: what it does before and after the instrumentor loads,
and when the instrumentor may load (``instrument_when_ready``). A test suite measures requests
with its own middleware instead (``zenmetry.testing._django``), through these same modules.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import wrapt

from zenmetry import _guard
from zenmetry.integrations import Integration, report
from zenmetry.integrations.django._cache import count_cache_calls
from zenmetry.integrations.django._commands import measure_commands
from zenmetry.integrations.django._databases import check_databases
from zenmetry.integrations.django._requests import response_hook, view_resolved
from zenmetry.integrations.django._streaming import responded, sent
from zenmetry.integrations.django._tasks import measure_tasks
from zenmetry.integrations.django._transactions import count_transactions, quiet_debug_quoting
from zenmetry.units._processor import UnitProcessor

__all__ = ["INTEGRATION", "DjangoIntegration", "check_databases", "instrument_when_ready", "ready"]

logger = logging.getLogger("zenmetry")

SETTINGS_VARIABLE: Final = "DJANGO_SETTINGS_MODULE"
_MIDDLEWARE: Final = "opentelemetry.instrumentation.django.middleware.otel_middleware"


class DjangoIntegration(Integration):
    library = "django"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        kwargs.setdefault("response_hook", partial(response_hook, processor))
        quiet_debug_quoting()
        count_transactions(processor)
        measure_commands(processor)
        measure_tasks(processor)

    def after(self, entry_point: str, processor: UnitProcessor) -> None:
        from django.conf import settings

        wrapt.wrap_function_wrapper(_MIDDLEWARE, "_DjangoMiddleware.process_view", partial(view_resolved, processor))
        wrapt.wrap_function_wrapper(_MIDDLEWARE, "_DjangoMiddleware.process_response", partial(responded, processor))
        ready(settings, processor)

    def load(self, instrument: Callable[[], None]) -> None:
        instrument_when_ready(instrument)


INTEGRATION: Final = DjangoIntegration()


def ready(settings: Any, processor: UnitProcessor) -> None:
    """Once Django's settings are loaded: ASGI responses whose client went away are finished,
    and the databases' timeouts checked."""
    wrapt.wrap_function_wrapper("django.core.handlers.asgi", "ASGIHandler.send_response", sent)
    for finding in check_databases(settings.DATABASES):
        report(finding, processor)
    count_cache_calls(getattr(settings, "CACHES", {}), processor)


def instrument_when_ready(instrument: Callable[[], None]) -> None:
    """Run the Django instrumentor now if Django's settings can be loaded, else at ``django.setup()``.

    The instrumentor reads ``settings.MIDDLEWARE``; when ``DJANGO_SETTINGS_MODULE`` is unset
    or not importable yet it silently configures *empty* settings, and the application
    then runs without its own. Celery projects commonly set the variable in ``celery.py``,
    after the launcher has run: waiting for ``django.setup()`` instruments them correctly.
    """
    from django.conf import settings

    module = os.environ.get(SETTINGS_VARIABLE, "").strip()
    if settings.configured or (module and _importable(module)):
        instrument()
        return
    if module:
        logger.warning(
            "zenmetry: %s=%r cannot be imported yet; Django will be instrumented when django.setup() runs",
            SETTINGS_VARIABLE,
            module,
        )
    else:
        logger.warning(
            "zenmetry: %s is not set; Django will be instrumented when django.setup() runs. Set it in the "
            "environment of opentelemetry-instrument (for example %s=mysite.settings) so that requests are "
            "measured from the first one",
            SETTINGS_VARIABLE,
            SETTINGS_VARIABLE,
        )
    pending = [instrument]

    def setup_then_instrument(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        while pending:
            try:
                pending.pop(0)()
            except Exception:  # noqa: BLE001
                _guard.swallow("the deferred Django instrumentation")
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper("django", "setup", setup_then_instrument)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
