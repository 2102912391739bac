"""Django: the response hook that finishes an ``http`` unit, streamed responses finished when
they are closed, a safe start, and the databases' timeouts checked.

The hook runs inside the Django instrumentation's ``process_response``, while the request
span is still open, so the unit's figures can still be written on it. A streamed response
(``StreamingHttpResponse``, ``FileResponse``) is produced after ``process_response``, where the
instrumentation ends the request span (opentelemetry-python-contrib #4681): zenmetry keeps the
span open, makes it the current span while each part of the body is produced, and finishes the
unit and ends the span when the response is closed (or, under ASGI, when the client went away).

In a test suite (``zenmetry.testing``), ``UnitMiddleware`` stands in for the instrumentation's
middleware: the same request units, without what nothing in a test reads.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import wrapt
from django.utils.deprecation import MiddlewareMixin
from opentelemetry import context, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace import INVALID_SPAN, SpanKind

from zenmetry import _guard, _names, _state
from zenmetry._budgets import budget_of
from zenmetry._findings import Finding
from zenmetry.integrations import Integration, report

logger = logging.getLogger("zenmetry")

SETTINGS_VARIABLE: Final = "DJANGO_SETTINGS_MODULE"
_MIDDLEWARE: Final = "opentelemetry.instrumentation.django.middleware.otel_middleware"
_SPAN_KEY: Final = "opentelemetry-instrumentor-django.span_key"
_ATTACHED_KEY: Final = "opentelemetry-instrumentor-django.token"
_SCOPE: Final = "opentelemetry.instrumentation.django"
_STREAM: Final = "_zenmetry_stream"
"""The attribute of a streamed response whose unit finishes when it is closed."""
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def response_hook(span: Any, request: Any, response: Any) -> None:
    """``DjangoInstrumentor(response_hook=...)``: finish the request's unit (a streamed
    response's when it is closed)."""
    processor = _state.processor()
    if processor is None or hasattr(response, _STREAM):
        return
    try:
        processor.finish(span, *_unit_of(request, response))
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django response hook")


def _unit_of(request: Any, response: Any) -> tuple[str, dict[str, str | int], Any]:
    """The name, metric point and ``@budget`` of a request's unit."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    method = request.method if request.method in _METHODS else "_OTHER"
    return (
        route or _names.UNMATCHED,
        {_names.HTTP_REQUEST_METHOD: method, _names.HTTP_RESPONSE_STATUS_CODE: response.status_code},
        budget_of(match.func) if match is not None else None,
    )


class DjangoIntegration(Integration):
    library = "django"

    def before(self, entry_point: str, kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("response_hook", response_hook)
        _quiet_debug_quoting()
        _count_transactions()

    def after(self, entry_point: str) -> None:
        from django.conf import settings

        wrapt.wrap_function_wrapper(_MIDDLEWARE, "_DjangoMiddleware.process_view", _view_resolved)
        wrapt.wrap_function_wrapper(_MIDDLEWARE, "_DjangoMiddleware.process_response", _responded)
        _ready(settings)

    def load(self, instrument: Callable[[], None]) -> None:
        instrument_when_ready(instrument)


INTEGRATION: Final = DjangoIntegration()


def _ready(settings: Any) -> None:
    """Once Django's settings are loaded: ASGI responses whose client went away are finished,
    and the databases' timeouts checked."""
    wrapt.wrap_function_wrapper("django.core.handlers.asgi", "ASGIHandler.send_response", _sent)
    for finding in check_databases(settings.DATABASES):
        report(finding)


def _view_resolved(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """After the instrumentation's ``process_view`` (where it learns the route): name the unit,
    with the view's ``@budget``, while the request span is the current span."""
    result = wrapped(*args, **kwargs)
    _name_unit(trace.get_current_span(), args[0] if args else kwargs.get("request"))
    return result


def _name_unit(span: Any, request: Any) -> None:
    """Name the request's unit by its route, with the view's ``@budget``."""
    processor = _state.processor()
    if processor is not None:
        try:
            match = getattr(request, "resolver_match", None)
            route = getattr(match, "route", None)
            if match is not None and route:
                processor.note_unit(span, route, budget_of(match.func))
        except Exception:  # noqa: BLE001
            _guard.swallow("the Django view hook")


class _Stream:
    """The unit of a streamed response: open until the response is closed."""

    __slots__ = ("done", "end", "name", "override", "point", "span")

    def __init__(self, span: Any, end: Callable[..., None], request: Any, response: Any) -> None:
        self.span, self.end, self.done = span, end, False
        self.name, self.point, self.override = _unit_of(request, response)

    def finish(self) -> None:
        """Finish the unit and end its span; the first call does, later ones do nothing."""
        if self.done:
            return
        self.done = True
        processor = _state.processor()
        try:
            if processor is not None:
                processor.finish(self.span, self.name, self.point, self.override)
        finally:
            self.end()

    def iterate(self, parts: Any) -> Any:
        """The body's parts, each produced with the request span as the current span."""
        current = trace.set_span_in_context(self.span)
        while True:
            token = context.attach(current)
            try:
                part = next(parts)
            except StopIteration:
                return
            finally:
                context.detach(token)
            yield part

    async def aiterate(self, parts: Any) -> Any:
        """The same for an asynchronous body."""
        current = trace.set_span_in_context(self.span)
        while True:
            token = context.attach(current)
            try:
                part = await anext(parts)
            except StopAsyncIteration:
                return
            finally:
                context.detach(token)
            yield part


def _responded(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around the instrumentation's ``process_response``: a streamed response's request span
    stays open (the instrumentation would end it here, before the body is produced) until the
    response is closed."""
    request, response = args if len(args) == 2 else (kwargs.get("request"), kwargs.get("response"))
    stream = _stream_for(request, response)
    if stream is None:
        return wrapped(*args, **kwargs)
    span = stream.span
    span.end = _not_yet  # the instrumentation's activation ends the span on exit: not yet
    try:
        result = wrapped(*args, **kwargs)
    except BaseException:
        del span.end
        delattr(response, _STREAM)
        span.end()
        raise
    del span.end
    _keep_open(stream, response)
    return result


def _keep_open(stream: _Stream, response: Any) -> None:
    """Finish a streamed response's unit when the response is closed."""
    try:
        if getattr(response, "file_to_stream", None) is None:
            # A file is sent as it is (the server may use sendfile); any other body is produced
            # part by part with the request span current, so its calls belong to the request.
            body = response.streaming_content
            response.streaming_content = stream.aiterate(body) if response.is_async else stream.iterate(body)
        close = response.close

        def closed() -> None:
            try:
                close()
            finally:
                stream.finish()

        response.close = closed
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django streamed response")
        stream.finish()


def _stream_for(request: Any, response: Any) -> _Stream | None:
    """A ``_Stream`` for a streamed response whose request is a unit of its own, else None."""
    if not getattr(response, "streaming", False):
        return None
    processor = _state.processor()
    try:
        span = request.META.get(_SPAN_KEY)
        if processor is None or span is None or processor.unit(span) is None:
            return None
        stream = _Stream(span, span.end, request, response)
        setattr(response, _STREAM, stream)
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django streamed response")
        return None
    return stream


def _not_yet(*args: Any, **kwargs: Any) -> None:
    """Stands in for a streamed response's ``span.end`` while the instrumentation would end it."""


async def _sent(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ASGI's ``send_response``: a client that went away cancels it and Django then never
    closes the response; the unit finishes here all the same."""
    try:
        return await wrapped(*args, **kwargs)
    finally:
        stream = getattr(args[0] if args else kwargs.get("response"), _STREAM, None)
        if stream is not None:
            stream.finish()


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


# Django's vendor -> the system its DB spans name (``db.system``).
_SYSTEMS: Final = {"postgresql": "postgresql", "sqlite": "sqlite", "mysql": "mysql", "oracle": "oracle"}


def _count_transactions() -> None:
    """Count transaction control where Django logs it, as Django counts it (CONTRACT.md).

    Django logs ``BEGIN`` when ``atomic()`` opens a transaction, and ``COMMIT`` and
    ``ROLLBACK``, through ``debug_transaction`` (``django.db.backends.utils``, since 4.2): a query
    of the unit open at that moment. The driver sends the ``BEGIN`` later, with the
    transaction's first statement (in a test, with the first statement of the test's own
    transaction, inside whichever unit makes it): that round trip is no query, so a test's
    transaction adds nothing to the units inside it. Savepoints are statements Django executes.
    """

    def patch(module: Any) -> None:
        if hasattr(module, "debug_transaction"):
            wrapt.wrap_function_wrapper(module, "debug_transaction", _transaction_logged)

    @wrapt.when_imported("django.db.backends.base.base")
    def _patch_base(module: Any) -> None:
        patch(module)
        wrapt.wrap_function_wrapper(module, "BaseDatabaseWrapper.connect", _connecting)

    wrapt.when_imported("django.db.backends.oracle.base")(patch)  # its COMMIT has its own


def _connecting(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ``connect()``: what Django sends to set a new connection up (its time zone, its
    role) goes through the raw driver, unlogged: round trips, not queries."""
    processor = _state.processor()
    if processor is None:
        return wrapped(*args, **kwargs)
    return processor.setting_up(lambda: wrapped(*args, **kwargs))


def _transaction_logged(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ``debug_transaction(connection, sql)``: a query for the current units."""
    processor = _state.processor()
    if processor is not None:
        try:
            connection, sql = args if len(args) == 2 else (kwargs.get("connection"), kwargs.get("sql"))
            if not context.get_value(_SUPPRESS_INSTRUMENTATION_KEY):
                vendor = str(connection.vendor)
                processor.note_bare(trace.get_current_span(), _SYSTEMS.get(vendor, vendor), str(sql), query=True)
        except Exception:  # noqa: BLE001
            _guard.swallow("the Django transaction hook")
    return wrapped(*args, **kwargs)


def _unmeasured(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    from opentelemetry.instrumentation.utils import suppress_instrumentation  # not at import: see UnitMiddleware

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


# -- in a test suite -------------------------------------------------------------------------


class UnitMiddleware(MiddlewareMixin):  # type: ignore[misc]  # Django has no types here
    """A request's unit in a test suite (``zenmetry.testing``): the span the instrumentation's
    middleware would start (SERVER, or INTERNAL inside another span, as in an ``assert_budget``
    block), named by its route as the view is resolved, and finished by ``response_hook``.

    Not the instrumentation's middleware, whose request attributes, header capture,
    propagation and metrics nothing in a test reads: measured on a light test suite, that
    middleware and its imports were a fifth of what the plugin added to each test.
    """

    # Sync only, as the instrumentation's middleware: under ASGI Django runs the whole of it in one
    # thread and context (MiddlewareMixin's async path runs process_request and process_response
    # in two copies of the context, where the span attached in one cannot be detached in the other).
    sync_capable, async_capable = True, False
    tracer: trace.Tracer = trace.NoOpTracer()
    excluded: Any = None  # the instrumentation's excluded URLs, when the environment names some

    def process_request(self, request: Any) -> None:
        # As the instrumentation, which reads the URL first: a disallowed Host makes no unit.
        url = request.build_absolute_uri("?") if self.excluded is not None else request.get_host()
        if self.excluded is not None and self.excluded.url_disabled(url):
            return
        kind = SpanKind.SERVER if trace.get_current_span() is INVALID_SPAN else SpanKind.INTERNAL
        method = request.method if request.method in _METHODS else "_OTHER"
        span = self.tracer.start_span(
            "HTTP" if method == "_OTHER" else method, kind=kind, attributes={_names.HTTP_REQUEST_METHOD: method}
        )
        request.META[_SPAN_KEY] = span
        request.META[_ATTACHED_KEY] = context.attach(trace.set_span_in_context(span))

    def process_view(self, request: Any, view: Any, args: Any, kwargs: Any) -> None:
        span = request.META.get(_SPAN_KEY)
        if span is None or not span.is_recording():
            return
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        if route:
            span.update_name(f"{span.name} {route}")
            span.set_attribute(_names.HTTP_ROUTE, route)
        _name_unit(span, request)

    def process_response(self, request: Any, response: Any) -> Any:
        stream = _stream_for(request, response)
        span = request.META.pop(_SPAN_KEY, None)
        token = request.META.pop(_ATTACHED_KEY, None)
        if span is None:
            return response
        if stream is None:
            response_hook(span, request, response)
        context.detach(token)
        if stream is None:
            span.end()
        else:
            _keep_open(stream, response)
        return response


def measure_requests(tracer_provider: trace.TracerProvider) -> None:
    """Measure Django's requests with ``UnitMiddleware``, put where the instrumentation puts
    its own (``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION``, first by default), once the settings
    can be loaded; ``OTEL_PYTHON_DJANGO_INSTRUMENT=False`` leaves Django alone, as it does the
    instrumentation."""
    if os.environ.get("OTEL_PYTHON_DJANGO_INSTRUMENT") == "False":
        return
    _quiet_debug_quoting()
    _count_transactions()

    def instrument() -> None:
        from django.conf import settings

        UnitMiddleware.tracer = tracer_provider.get_tracer(_SCOPE)
        if os.environ.get("OTEL_PYTHON_DJANGO_EXCLUDED_URLS") or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS"):
            from opentelemetry.util.http import get_excluded_urls

            UnitMiddleware.excluded = get_excluded_urls("DJANGO")
        middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
        try:
            position = int(os.environ.get("OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION", "0"))
        except ValueError:
            position = 0
        middleware.insert(position if 0 <= position <= len(middleware) else 0, f"{__name__}.UnitMiddleware")
        settings.MIDDLEWARE = middleware
        _ready(settings)

    instrument_when_ready(instrument)
