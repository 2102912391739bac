"""Django's requests in a test suite: ``UnitMiddleware`` stands in for the instrumentation's
middleware, and reuses production's unit naming, response hook and streamed responses
(``zenmetry.integrations.django``)."""

from __future__ import annotations

import os
from typing import Any, Final

from django.utils.deprecation import MiddlewareMixin
from opentelemetry import context, trace
from opentelemetry.trace import INVALID_SPAN, SpanKind

from zenmetry import _names
from zenmetry.integrations.django import instrument_when_ready, ready
from zenmetry.integrations.django._requests import ATTACHED_KEY, METHODS, SPAN_KEY, name_unit, response_hook
from zenmetry.integrations.django._streaming import keep_open, stream_for
from zenmetry.integrations.django._transactions import count_transactions, quiet_debug_quoting
from zenmetry.units._processor import UnitProcessor

_SCOPE: Final = "opentelemetry.instrumentation.django"


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
    processor: UnitProcessor  # given by measure_requests
    excluded: Any = None  # the instrumentation's excluded URLs, when the environment names some

    def process_request(self, request: Any) -> None:
        # As the instrumentation, which reads the URL first: a disallowed Host makes no unit.
        url = request.build_absolute_uri("?") if self.excluded is not None else request.get_host()
        if self.excluded is not None and self.excluded.url_disabled(url):
            return
        kind = SpanKind.SERVER if trace.get_current_span() is INVALID_SPAN else SpanKind.INTERNAL
        method = request.method if request.method in METHODS else "_OTHER"
        span = self.tracer.start_span(
            "HTTP" if method == "_OTHER" else method, kind=kind, attributes={_names.HTTP_REQUEST_METHOD: method}
        )
        request.META[SPAN_KEY] = span
        request.META[ATTACHED_KEY] = context.attach(trace.set_span_in_context(span))

    def process_view(self, request: Any, view: Any, args: Any, kwargs: Any) -> None:
        span = request.META.get(SPAN_KEY)
        if span is None or not span.is_recording():
            return
        route = getattr(getattr(request, "resolver_match", None), "route", None)
        if route:
            span.update_name(f"{span.name} {route}")
            span.set_attribute(_names.HTTP_ROUTE, route)
        name_unit(self.processor, span, request)

    def process_response(self, request: Any, response: Any) -> Any:
        stream = stream_for(self.processor, request, response)
        span = request.META.pop(SPAN_KEY, None)
        token = request.META.pop(ATTACHED_KEY, None)
        if span is None:
            return response
        if stream is None:
            response_hook(self.processor, span, request, response)
        context.detach(token)
        if stream is None:
            span.end()
        else:
            keep_open(stream, response)
        return response


def measure_requests(tracer_provider: trace.TracerProvider, processor: UnitProcessor) -> None:
    """Measure Django's requests with ``UnitMiddleware``, put where the instrumentation puts
    its own (``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION``, first by default), once the settings
    can be loaded; ``OTEL_PYTHON_DJANGO_INSTRUMENT=False`` leaves Django alone, as it does the
    instrumentation."""
    if os.environ.get(_names.ENV_DJANGO_INSTRUMENT) == "False":
        return
    quiet_debug_quoting()
    count_transactions(processor)

    def instrument() -> None:
        from django.conf import settings

        UnitMiddleware.tracer = tracer_provider.get_tracer(_SCOPE)
        UnitMiddleware.processor = processor
        if os.environ.get(_names.ENV_DJANGO_EXCLUDED_URLS) or os.environ.get(_names.ENV_EXCLUDED_URLS):
            from opentelemetry.util.http import get_excluded_urls

            UnitMiddleware.excluded = get_excluded_urls("DJANGO")
        middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
        try:
            position = int(os.environ.get(_names.ENV_DJANGO_MIDDLEWARE_POSITION, "0"))
        except ValueError:
            position = 0
        middleware.insert(position if 0 <= position <= len(middleware) else 0, f"{__name__}.UnitMiddleware")
        settings.MIDDLEWARE = middleware
        ready(settings, processor)

    instrument_when_ready(instrument)
