"""Django's cache: every call through its API counted for the unit it is made in, and the reads
that found nothing (a ``get_many`` that found none of its keys; one that found some is a hit).

Each backend class in ``CACHES`` has its methods wrapped (``get``, ``get_many``, ``get_or_set``,
``has_key`` are reads; ``set``, ``add``, ``delete``, ``incr`` and the rest are calls). Only the
outermost call of a thread counts: ``get_or_set`` or ``incr`` call ``get`` inside, and a
backend's ``get_many`` may call ``get`` per key; the inner ``get`` tells its outer read whether
it found the key. The async methods of Django's backends run these sync ones in a thread, with
the unit's context: each of its parts counts. What a call sends to its server (a Redis command,
a SQL statement of the database cache) is a DB call of its own, of that server's system.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import wrapt
from opentelemetry import trace

from zenmetry import _guard, _state
from zenmetry.units._processor import UnitProcessor

_READS: Final = ("get", "get_many", "get_or_set", "has_key")
_CALLS: Final = ("set", "add", "delete", "set_many", "delete_many", "incr", "decr", "touch", "clear")


class _Calls(threading.local):
    """This thread's cache calls in progress: how deep, and the misses inner reads found."""

    depth = 0
    missed = 0


_calls = _Calls()


def count_cache_calls(caches: dict[str, Any], processor: UnitProcessor) -> None:
    """Wrap the backend class of every cache in Django's ``CACHES`` setting (once per class)."""
    from django.utils.module_loading import import_string

    for options in caches.values():
        try:
            backend = import_string(options["BACKEND"])
        except Exception:  # noqa: BLE001, S112 - Django itself reports a bad backend when it is used
            continue
        if not _state.once(f"django cache {backend.__module__}.{backend.__qualname__}"):
            continue
        for name in (*_READS, *_CALLS):
            if callable(getattr(backend, name, None)):
                wrapt.wrap_function_wrapper(backend, name, partial(_call, processor, name))


def _call(
    processor: UnitProcessor, name: str, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
) -> Any:
    calls = _calls
    if calls.depth:  # part of an outer call of this thread
        if name != "get":
            return wrapped(*args, **kwargs)
        result = wrapped(*args, **kwargs)
        if result is getattr(instance, "_missing_key", _NOTHING):
            calls.missed += 1
        return result
    calls.depth, calls.missed = 1, 0
    started = time.perf_counter_ns()
    try:
        if name == "get":
            return _get(wrapped, instance, args, kwargs)
        if name == "get_many":
            keys = list(args[0] if args else kwargs.pop("keys"))
            found = wrapped(keys, *args[1:], **kwargs)
            calls.missed = 1 if keys and not found else 0  # a read that found nothing of what it asked
            return found
        result = wrapped(*args, **kwargs)
        if name == "has_key" and not result:
            calls.missed += 1
        return result
    finally:
        duration, missed = time.perf_counter_ns() - started, calls.missed
        calls.depth, calls.missed = 0, 0
        try:
            processor.note_cache(trace.get_current_span(), duration, 1 if missed else 0)
        except Exception:  # noqa: BLE001
            _guard.swallow("the Django cache hook")


_NOTHING: Final = object()


def _get(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """``get(key, default=None, version=None)``, asked with Django's own "missing" sentinel in
    place of the default: a stored value equal to the default (None) is still a hit."""
    missing = getattr(instance, "_missing_key", None)
    if missing is None:
        return wrapped(*args, **kwargs)
    if len(args) > 1:
        default, args = args[1], (args[0], missing, *args[2:])
    else:
        default = kwargs.get("default")
        kwargs = {**kwargs, "default": missing}
    result = wrapped(*args, **kwargs)
    if result is missing:
        _calls.missed += 1
        return default
    return result
