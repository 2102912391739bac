"""HTTP clients (requests, urllib3, httpx, urllib): outgoing calls made without a timeout are
reported, and given ``ZENMETRY_HTTP_TIMEOUT`` when it is set.

Each library is checked where its own effective timeout is known, inside the call's span:

- urllib3 (and requests, which sends through it): ``HTTPConnectionPool._make_request``, whose
  ``Timeout`` has no read timeout (nor a total one) when none was given;
- httpx: the transports' ``handle_request``, where ``Timeout(None)`` leaves ``read`` empty
  (httpx's own default is 5 s, so only an explicit ``None`` is missing);
- urllib.request: ``AbstractHTTPHandler.do_open``, where ``urlopen()`` without ``timeout``
  falls back to the socket default, which is none unless the process set one.

A timeout supplied by zenmetry is the library's own: a hung server raises the exception the
caller would have got had it passed the timeout itself. Calls with their own timeout are never
changed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import wrapt
from opentelemetry import trace

from zenmetry import _guard, _state
from zenmetry.integrations import Integration
from zenmetry.units._processor import UnitProcessor


class HttpIntegration(Integration):
    """One for the four libraries; ``library`` is the one every HTTP instrumentation can use."""

    library = "urllib.request"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        # Before the instrumentation: for httpx both wrap one method, and the timeout check
        # must run inside the call's span.
        install(entry_point, processor)


INTEGRATION: Final = HttpIntegration()


def install(library: str, processor: UnitProcessor) -> None:
    """Wrap ``library`` (an instrumentation's entry-point name) once per process.

    Called before the OpenTelemetry instrumentation of that library is loaded, so that for
    httpx, where both wrap the same method, zenmetry's check runs inside the call's span.
    """
    target = "urllib3" if library == "requests" else library
    if target in _WRAPPERS and _state.once(f"http timeouts of {target}"):
        _WRAPPERS[target](processor)


def _report(processor: UnitProcessor, method: str, address: str | None) -> float | None:
    """Count a call without a timeout; return the timeout to give it, if any."""
    processor.note_no_timeout(trace.get_current_span(), method, address or "")
    return processor.settings.http_timeout


# -- urllib3 and requests -----------------------------------------------------------------


def _wrap_urllib3(processor: UnitProcessor) -> None:
    wrapt.wrap_function_wrapper(
        "urllib3.connectionpool", "HTTPConnectionPool._make_request", partial(_urllib3_make_request, processor)
    )


def _urllib3_make_request(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        from urllib3.util.timeout import Timeout

        positional = len(args) > _URLLIB3_TIMEOUT_INDEX
        given = args[_URLLIB3_TIMEOUT_INDEX] if positional else kwargs.get("timeout", Timeout.DEFAULT_TIMEOUT)
        timeout = instance._get_timeout(given)  # noqa: SLF001 - how urllib3 itself resolves it
        # A total timeout bounds the read too (and its read_timeout cannot be asked before the
        # connect timer starts); otherwise the read timeout, resolved as urllib3 resolves it.
        if timeout.total is None and Timeout.resolve_default_timeout(timeout.read_timeout) is None:
            method = args[1] if len(args) > 1 else kwargs.get("method", "")
            seconds = _report(processor, str(method), instance.host)
            if seconds is not None:
                connect = Timeout.resolve_default_timeout(timeout.connect_timeout)
                filled = Timeout(connect=seconds if connect is None else connect, read=seconds)
                if positional:
                    args = (*args[:_URLLIB3_TIMEOUT_INDEX], filled, *args[_URLLIB3_TIMEOUT_INDEX + 1 :])
                else:
                    kwargs["timeout"] = filled
    except Exception:  # noqa: BLE001
        _guard.swallow("the urllib3 timeout check")
    return wrapped(*args, **kwargs)


_URLLIB3_TIMEOUT_INDEX = 6  # _make_request(conn, method, url, body, headers, retries, timeout, ...)


# -- httpx -----------------------------------------------------------------------------------


def _wrap_httpx(processor: UnitProcessor) -> None:
    check = partial(_httpx_handle_request, processor)
    wrapt.wrap_function_wrapper("httpx", "HTTPTransport.handle_request", check)
    wrapt.wrap_function_wrapper("httpx", "AsyncHTTPTransport.handle_async_request", check)


def _httpx_handle_request(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        request = args[0] if args else kwargs["request"]
        timeout = request.extensions.get("timeout") or {}
        if timeout.get("read") is None:
            seconds = _report(processor, request.method, request.url.host)
            if seconds is not None:
                request.extensions["timeout"] = {
                    phase: seconds if timeout.get(phase) is None else timeout[phase]
                    for phase in ("connect", "read", "write", "pool")
                }
    except Exception:  # noqa: BLE001
        _guard.swallow("the httpx timeout check")
    return wrapped(*args, **kwargs)


# -- urllib.request ----------------------------------------------------------------------------


def _wrap_urllib(processor: UnitProcessor) -> None:
    wrapt.wrap_function_wrapper("urllib.request", "AbstractHTTPHandler.do_open", partial(_urllib_do_open, processor))


def _urllib_do_open(processor: UnitProcessor, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        request = args[1] if len(args) > 1 else kwargs["req"]
        timeout = getattr(request, "timeout", None)
        if timeout is socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]  # noqa: SLF001
            timeout = socket.getdefaulttimeout()
        if timeout is None:
            seconds = _report(processor, request.get_method(), request.host.split(":")[0] if request.host else None)
            if seconds is not None:
                request.timeout = seconds
    except Exception:  # noqa: BLE001
        _guard.swallow("the urllib timeout check")
    return wrapped(*args, **kwargs)


_WRAPPERS: Final[dict[str, Callable[[UnitProcessor], None]]] = {
    "urllib3": _wrap_urllib3,
    "httpx": _wrap_httpx,
    "urllib": _wrap_urllib,
}
