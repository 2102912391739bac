"""The limits a budget can set, one row each: everything about a limit derives from this table.

``Limits`` (what a budget file entry, ``@budget`` or ``assert_budget`` sets), their validation
and error messages, ``Figures.actual`` (the figure a limit is checked against) and the pytest
plugin's marker all read ``LIMITS``; adding a limit is one row here (and its figure on
``Figures``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from zenmetry._errors import ConfigError

MIB: Final = 1024 * 1024

COUNT: Final = "count"
MS: Final = "ms"
MEBIBYTES: Final = "MiB"


@dataclass(frozen=True, slots=True)
class Limit:
    """One row of the table: a budget file key and what it is checked against."""

    name: str
    """The key in the budget file, the ``@budget`` keyword and ``zen.limit``."""
    unit: str
    """``count`` (an integer), ``ms`` or ``MiB`` (any finite number)."""
    figure: str
    """The ``Figures`` field it is checked against."""
    scale: int = 1
    """The figure divided by this is in the limit's unit (bytes to MiB)."""
    default: int | None = None
    """Checked with this value when left out; then ``0`` turns the check off."""

    @property
    def count(self) -> bool:
        return self.unit == COUNT


LIMITS: Final = (
    Limit("queries", COUNT, "queries"),
    Limit("db_time_ms", MS, "db_duration_ms"),
    Limit("memory_mb", MEBIBYTES, "rss_delta_bytes", scale=MIB),
    Limit("duration_ms", MS, "duration_ms"),
    Limit("external_calls", COUNT, "external_calls"),
    Limit("repeated_queries", COUNT, "repeated_max", default=5),
    Limit("slow_query_ms", MS, "slowest_ms", default=500),
    Limit("queue_wait_ms", MS, "queue_wait_ms"),
)
BY_NAME: Final = {limit.name: limit for limit in LIMITS}
ALLOWED: Final = ", ".join(BY_NAME)

Number = int | float


class Limits:
    """Maximums for one unit, by limit name; a limit left out is not checked (or is checked
    with its default). Immutable and hashable.

    >>> Limits(queries=8).over(Limits(queries=30, duration_ms=800)).items()
    [('queries', 8), ('duration_ms', 800)]
    """

    __slots__ = ("_values",)
    _values: dict[str, Number]

    def __init__(self, **values: Number | None) -> None:
        unknown = [name for name in values if name not in BY_NAME]
        if unknown:
            raise TypeError(f"unknown limit {unknown[0]!r}; allowed: {ALLOWED}")
        # Kept in the table's order, so that every listing of limits reads the same.
        object.__setattr__(self, "_values", {name: values[name] for name in BY_NAME if values.get(name) is not None})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Limits are immutable")

    def get(self, name: str) -> Number | None:
        """The maximum set for ``name``, or ``None``."""
        return self._values.get(name)

    def over(self, base: Limits) -> Limits:
        """These limits, with the ones left out taken from ``base``."""
        return Limits(**{**base._values, **self._values})

    def items(self) -> list[tuple[str, Number]]:
        """The limits that are set, in the table's order."""
        return list(self._values.items())

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limits) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"Limits({', '.join(f'{name}={value!r}' for name, value in self._values.items())})"


def checks(limits: Limits) -> tuple[tuple[str, Number], ...]:
    """What to check for ``limits``: each set limit in its own unit (int for counts, float for
    ms and MiB), and each defaulted limit left out at its default; a defaulted limit at 0 is off."""
    found: list[tuple[str, Number]] = []
    for limit in LIMITS:
        value = limits.get(limit.name)
        if limit.default is not None:
            value = limit.default if value is None else value
            if not value:
                continue
        if value is not None:
            found.append((limit.name, value if limit.count else float(value)))
    return tuple(found)


def parse(values: Mapping[str, Any], where: str) -> Limits:
    """Validate a mapping of limit names to maximums; ``where`` prefixes every problem."""
    problems = []
    parsed: dict[str, Number] = {}
    for key, value in values.items():
        problem = _problem(key, value)
        if problem:
            problems.append(f"{where}, key {key!r}: {problem}")
        else:
            parsed[key] = value
    if problems:
        raise ConfigError(problems)
    return Limits(**parsed)


def _problem(key: str, value: Any) -> str | None:
    limit = BY_NAME.get(key)
    if limit is None:
        return f"unknown limit; allowed: {ALLOWED}"
    expected = "a non-negative integer" if limit.count else "a non-negative number"
    if isinstance(value, bool) or not isinstance(value, int | float) or (limit.count and isinstance(value, float)):
        return f"expected {expected}, got {value!r} ({type(value).__name__})"
    if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
        return f"expected {expected}, got {value!r}"
    if value > _LARGEST:
        return f"expected {expected} up to 1e300, got a larger one"
    return None


_LARGEST: Final = 10**300
"""Larger limits are refused: every limit must convert to a float (``checks``)."""


def formatted(name: str, value: Number) -> str:
    """A value in its limit's unit, for people: ``12``, ``812.3 ms``, ``40.1 MiB``."""
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f} {BY_NAME[name].unit}"
