"""A request's unit: named by its route as the view is resolved, finished by the instrumentation's
response hook while the request span is still open (its figures can still be written on it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace

from zenmetry import _guard, _names
from zenmetry.config._budgets import budget_of
from zenmetry.units._figures import FinishedUnit
from zenmetry.units._processor import UnitProcessor

SPAN_KEY: Final = "opentelemetry-instrumentor-django.span_key"
"""Where the instrumentation's middleware keeps the request span (``request.META``)."""
ATTACHED_KEY: Final = "opentelemetry-instrumentor-django.token"
STREAM: Final = "_zenmetry_stream"
"""The attribute of a streamed response whose unit finishes when it is closed."""
SERVER_TIMING: Final = "Server-Timing"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def response_hook(processor: UnitProcessor, span: Any, request: Any, response: Any) -> None:
    """``DjangoInstrumentor(response_hook=partial(response_hook, processor))``: finish the
    request's unit (a streamed response's when it is closed)."""
    if hasattr(response, STREAM):
        return
    try:
        finished = processor.finish(span, *unit_of(request, response))
        if finished is not None and processor.settings.server_timing and not response.streaming:
            timing = server_timing(finished)
            given = response.get(SERVER_TIMING)
            response[SERVER_TIMING] = f"{given}, {timing}" if given else timing
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django response hook")


def server_timing(unit: FinishedUnit) -> str:
    """The ``Server-Timing`` header of a unit (W3C Server Timing): its DB, external calls, cache
    when it was called, and total time, with counts in each entry's description."""
    figures = unit.figures
    entries = [
        f'db;dur={figures.db_duration_ms:.1f};desc="{figures.queries} queries"',
        f'ext;dur={figures.external_duration_ms:.1f};desc="{figures.external_calls} calls"',
    ]
    if figures.cache_calls:
        misses = f"{figures.cache_misses} miss{'' if figures.cache_misses == 1 else 'es'}"
        entries.append(f'cache;dur={figures.cache_duration_ms:.1f};desc="{figures.cache_calls} calls, {misses}"')
    entries.append(f"total;dur={figures.duration_ms:.1f}")
    return ", ".join(entries)


def unit_of(request: Any, response: Any) -> tuple[str, dict[str, str | int], Any]:
    """The name, metric point and ``@budget`` of a request's unit."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    method = request.method if request.method in METHODS else "_OTHER"
    return (
        route or _names.UNMATCHED,
        {_names.HTTP_REQUEST_METHOD: method, _names.HTTP_RESPONSE_STATUS_CODE: response.status_code},
        budget_of(match.func) if match is not None else None,
    )


def view_resolved(processor: UnitProcessor, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """After the instrumentation's ``process_view`` (where it learns the route): name the unit,
    with the view's ``@budget``, while the request span is the current span."""
    result = wrapped(*args, **kwargs)
    name_unit(processor, trace.get_current_span(), args[0] if args else kwargs.get("request"))
    return result


def name_unit(processor: UnitProcessor, span: Any, request: Any) -> None:
    """Name the request's unit by its route, with the view's ``@budget``."""
    try:
        match = getattr(request, "resolver_match", None)
        route = getattr(match, "route", None)
        if match is not None and route:
            processor.note_unit(span, route, budget_of(match.func))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django view hook")
