"""Django: the response hook that finishes an ``http`` unit, a safe start, and the databases'
timeouts checked.

The hook runs inside the Django instrumentation's ``process_response``, while the request
span is still open, so the unit's figures can still be written on it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation

from zenmetry import _guard, _names, _state
from zenmetry._budgets import budget_of
from zenmetry._findings import Finding
from zenmetry.integrations import Integration, report

logger = logging.getLogger("zenmetry")

SETTINGS_VARIABLE: Final = "DJANGO_SETTINGS_MODULE"
_MIDDLEWARE: Final = "opentelemetry.instrumentation.django.middleware.otel_middleware"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def response_hook(span: Any, request: Any, response: Any) -> None:
    """``DjangoInstrumentor(response_hook=...)``: finish the request's unit."""
    processor = _state.processor()
    if processor is None:
        return
    try:
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        method = request.method if request.method in _METHODS else "_OTHER"
        processor.finish(
            span,
            route or _names.UNMATCHED,
            {_names.HTTP_REQUEST_METHOD: method, _names.HTTP_RESPONSE_STATUS_CODE: response.status_code},
            budget_of(match.func) if match is not None else None,
        )
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django response hook")


class DjangoIntegration(Integration):
    library = "django"

    def before(self, entry_point: str, kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("response_hook", response_hook)
        _quiet_debug_quoting()

    def after(self, entry_point: str) -> None:
        from django.conf import settings

        wrapt.wrap_function_wrapper(_MIDDLEWARE, "_DjangoMiddleware.process_view", _view_resolved)
        for finding in check_databases(settings.DATABASES):
            report(finding)

    def load(self, instrument: Callable[[], None]) -> None:
        instrument_when_ready(instrument)


INTEGRATION: Final = DjangoIntegration()


def _view_resolved(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """After the instrumentation's ``process_view`` (where it learns the route): name the unit,
    with the view's ``@budget``, while the request span is the current span."""
    result = wrapped(*args, **kwargs)
    processor = _state.processor()
    if processor is not None:
        try:
            match = getattr(args[0] if args else kwargs.get("request"), "resolver_match", None)
            route = getattr(match, "route", None)
            if match is not None and route:
                processor.note_unit(trace.get_current_span(), route, budget_of(match.func))
        except Exception:  # noqa: BLE001
            _guard.swallow("the Django view hook")
    return result


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


def _quiet_debug_quoting() -> None:
    """Keep Django's own query log out of the figures.

    With ``DEBUG=True`` (or in ``assertNumQueries``), Django's SQLite backend logs each
    statement with its parameters quoted by SQLite itself: one extra ``SELECT QUOTE(?)`` per
    parameterised query, through the same connection. Those are Django's bookkeeping, not the
    application's queries, and would double every count and fake an N+1 on any page.
    """

    # Patched when Django loads its SQLite backend (importing it here, before the settings,
    # would trip Django's own import cycle between the backend's modules).
    @wrapt.when_imported("django.db.backends.sqlite3.base")
    def _patch(module: Any) -> None:
        wrapt.wrap_function_wrapper(module.DatabaseOperations, "_quote_params_for_last_executed_query", _unmeasured)


def _unmeasured(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    with suppress_instrumentation():
        return wrapped(*args, **kwargs)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_databases(
    databases: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] = os.environ
) -> list[Finding]:
    """Findings for Django's ``DATABASES``."""
    found = []
    for alias, database in databases.items():
        engine = str(database.get("ENGINE", ""))
        options = database.get("OPTIONS") or {}
        missing: list[str] = []
        if engine.endswith("postgresql") or "postgis" in engine:
            system = "postgresql"
            if not options.get("connect_timeout") and not environ.get("PGCONNECT_TIMEOUT"):
                missing.append("connect timeout (OPTIONS['connect_timeout'])")
            if "statement_timeout" not in f"{options.get('options', '')} {environ.get('PGOPTIONS', '')}":
                missing.append("statement timeout (OPTIONS['options'] = '-c statement_timeout=5000')")
        elif engine.endswith("mysql"):
            system = "mysql"
            if not options.get("connect_timeout"):
                missing.append("connect timeout (OPTIONS['connect_timeout'])")
            if not options.get("read_timeout"):
                missing.append("read timeout (OPTIONS['read_timeout'])")
        else:
            continue  # SQLite lives in the process; other engines are not known here
        if missing:
            found.append(Finding(system, f"Django database {alias!r}", tuple(missing)))
    return found
