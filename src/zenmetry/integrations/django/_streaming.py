"""Streamed responses: the unit of a ``StreamingHttpResponse`` or ``FileResponse`` covers its body.

The Django instrumentation ends the request span in ``process_response``, before a streamed
body is produced (opentelemetry-python-contrib #4681): zenmetry keeps the span open, makes it the
current span while each part of the body is produced, and finishes the unit and ends the span
when the response is closed (or, under ASGI, when the client went away).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace

from zenmetry import _guard
from zenmetry.integrations.django._requests import SPAN_KEY, STREAM, unit_of
from zenmetry.units._processor import UnitProcessor


class Stream:
    """The unit of a streamed response: open until the response is closed."""

    __slots__ = ("done", "end", "name", "override", "point", "processor", "span")

    def __init__(
        self, processor: UnitProcessor, span: Any, end: Callable[..., None], request: Any, response: Any
    ) -> None:
        self.processor, self.span, self.end, self.done = processor, span, end, False
        self.name, self.point, self.override = unit_of(request, response)

    def finish(self) -> None:
        """Finish the unit and end its span; the first call does, later ones do nothing."""
        if self.done:
            return
        self.done = True
        try:
            self.processor.finish(self.span, self.name, self.point, self.override)
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


def responded(processor: UnitProcessor, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around the instrumentation's ``process_response``: a streamed response's request span
    stays open (the instrumentation would end it here, before the body is produced) until the
    response is closed."""
    request, response = args if len(args) == 2 else (kwargs.get("request"), kwargs.get("response"))
    stream = stream_for(processor, request, response)
    if stream is None:
        return wrapped(*args, **kwargs)
    span = stream.span
    span.end = _not_yet  # the instrumentation's activation ends the span on exit: not yet
    try:
        result = wrapped(*args, **kwargs)
    except BaseException:
        del span.end
        delattr(response, STREAM)
        span.end()
        raise
    del span.end
    keep_open(stream, response)
    return result


def keep_open(stream: Stream, response: Any) -> None:
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


def stream_for(processor: UnitProcessor, request: Any, response: Any) -> Stream | None:
    """A ``Stream`` for a streamed response whose request is a unit of its own, else None."""
    if not getattr(response, "streaming", False):
        return None
    try:
        span = request.META.get(SPAN_KEY)
        if span is None or processor.unit(span) is None:
            return None
        stream = Stream(processor, span, span.end, request, response)
        setattr(response, STREAM, stream)
    except Exception:  # noqa: BLE001
        _guard.swallow("the Django streamed response")
        return None
    return stream


def _not_yet(*args: Any, **kwargs: Any) -> None:
    """Stands in for a streamed response's ``span.end`` while the instrumentation would end it."""


async def sent(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Around ASGI's ``send_response``: a client that went away cancels it and Django then never
    closes the response; the unit finishes here all the same."""
    try:
        return await wrapped(*args, **kwargs)
    finally:
        stream = getattr(args[0] if args else kwargs.get("response"), STREAM, None)
        if stream is not None:
            stream.finish()
