"""Reading the SDK's finished spans cheaply, for the processor and the export guard alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Span


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


def write_attributes(span: Span, attributes: Mapping[str, Any]) -> None:
    """``span.set_attributes(attributes)`` for values that are valid attribute values already
    (str, bool, int, float, tuples of str: zenmetry's own figures).

    The SDK cleans every value it is given (type checks, sequences copied, strings cut to the
    value length limit) and inserts each under its lock: 25 us for a unit's 16 figures, more than
    the rest of its finish. With no limit to apply (none is set by default) they go straight
    into the SDK's dict, under the span's lock as ``set_attributes`` takes it; with a count or
    length limit set, or another kind of span, through ``set_attributes``.
    """
    bounded = getattr(span, "_attributes", None)
    inner = getattr(bounded, "_dict", None)
    lock = getattr(span, "_lock", None)
    if (
        isinstance(inner, dict)
        and lock is not None
        and bounded.max_value_len is None  # type: ignore[union-attr]
        and (bounded.maxlen is None or len(inner) + len(attributes) <= bounded.maxlen)  # type: ignore[union-attr]
    ):
        with lock:
            if span._end_time is None and not bounded._immutable:  # type: ignore[attr-defined,union-attr]  # noqa: SLF001
                inner.update(attributes)
                return
    span.set_attributes(attributes)
