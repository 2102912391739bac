"""Redis: redis-py's commands are DB calls of system ``redis`` (the instrumentation records each
command with its arguments replaced by ``?``: no key leaves the process), except the commands of
Celery's Redis *broker* (kombu's transport), which carry messages, not data.

A task sent from a request is already the request's Celery producer span; kombu's ``LPUSH``,
``SADD`` and pipelines around it are how the message travels, and counting them as the
request's queries would make every enqueue look like database work (and differ with the broker:
RabbitMQ's are no DB calls at all). Celery's Redis *result backend* is data: its commands count.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Final

import wrapt
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from zenmetry import _guard
from zenmetry.integrations import Integration
from zenmetry.units._processor import UnitProcessor

_BROKER: Final = "kombu.transport.redis"


class RedisIntegration(Integration):
    library = "redis"

    def before(self, entry_point: str, kwargs: dict[str, Any], processor: UnitProcessor) -> None:
        wrapt.when_imported(_BROKER)(_quiet_broker)


INTEGRATION: Final = RedisIntegration()


def _quiet_broker(module: Any) -> None:
    """Every client kombu's Redis channel makes runs its commands and pipelines unmeasured."""
    wrapt.wrap_function_wrapper(module, "Channel._create_client", _client_made)


def _client_made(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    client = wrapped(*args, **kwargs)
    try:
        # Instance attributes in front of the (instrumented) class's methods: the instrumentation
        # sees instrumentation suppressed, and makes no span.
        client.execute_command = partial(_unmeasured, client.execute_command)
        make_pipeline = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            made = make_pipeline(*args, **kwargs)
            made.execute = partial(_unmeasured, made.execute)
            return made

        client.pipeline = pipeline
    except Exception:  # noqa: BLE001
        _guard.swallow("the kombu Redis client")
    return client


def _unmeasured(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        return call(*args, **kwargs)
    finally:
        detach(token)
