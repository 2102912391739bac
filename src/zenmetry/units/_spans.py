"""Reading the SDK's finished spans cheaply, for the processor and the export guard alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


def plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The span's attributes as the plain dict behind them.

    ``ReadableSpan.attributes`` is a read-only proxy over the SDK's ``BoundedAttributes``,
    whose ``get()`` raises and catches ``KeyError`` on every miss (about 1 us each); the dict
    behind it answers in nanoseconds. Falls back to the public view if that ever changes.
    """
    attributes = getattr(span, "_attributes", None)
    if attributes.__class__ is dict:
        # A dict already: a held span's (_held), or the attributes the unit processor gave an
        # exported DB span (_scrub.scrub_statement).
        return attributes
    inner = getattr(attributes, "_dict", None)
    return inner if inner.__class__ is dict else dict(span.attributes or {})
