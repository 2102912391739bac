"""Query snapshots: each test's units and their statement shapes, in a file reviewed like code.

One text file per test module holds, for every test that produced a unit, the units in the
order they finished and, for each, its statement shapes in order of first execution with their
counts, then its external calls by host. Nothing that varies between runs is written: no
durations, memory, ids, ports or literals (shapes have none; the names Django gives savepoints
and server-side cursors carry a thread id and are replaced by ``?``). A test without units has
no entry. Sections are sorted by test name, numbers in it compared as numbers::

    # zenmetry snapshots of tests/test_views.py: ...
    test_order_page
      http orders/<int:pk>/
        1x postgresql SELECT "shop_order"."id", ... WHERE "shop_order"."id" = ? LIMIT ?
        5x postgresql SELECT "shop_line"."id", ... WHERE "shop_line"."order_id" = ?
        1x external api.example.com

This module is the format (``render``, ``parse``) and the comparison (``diff``); the pytest
plugin decides when to read, compare and write.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from zenmetry._errors import ConfigError

SUFFIX: Final = ".zenmetry"
"""``test_views.py`` -> ``test_views.zenmetry``."""

EXTERNAL: Final = "external"
"""The word that marks an external-call line, in place of a DB system."""

NO_STATEMENT: Final = "(no statement)"

_UNIT_INDENT: Final = "  "
_LINE_INDENT: Final = "    "
_COUNTED = re.compile(r"(?P<count>[1-9]\d*)x (?P<what>\S+)(?: (?P<text>.*))?")
# Names Django makes up per thread or per call: savepoints ("s140213_x1") and server-side
# cursors ("_django_curs_140213_sync_1").
_RUN_NAMES = re.compile(r'"(?:s\d+_x\d+|_django_curs_\w+)"')
_NUMBERS = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit as a snapshot keeps it."""

    kind: str
    name: str
    statements: tuple[tuple[int, str, str], ...] = ()
    """``(count, system, shape text)``, in order of first execution."""
    calls: tuple[tuple[int, str], ...] = ()
    """``(count, host)`` of the external calls, in order of first call."""

    @property
    def queries(self) -> int:
        return sum(count for count, _, _ in self.statements)

    def title(self) -> str:
        return f"{self.kind} {self.name}"


Snapshot = tuple[Unit, ...]
"""One test's units, in the order they finished."""


def stable_text(text: str) -> str:
    """A shape's text as a snapshot writes it: one line, without names that change per run."""
    return _RUN_NAMES.sub("?", " ".join(text.split())) or NO_STATEMENT


def unit(kind: str, name: str, statements: Iterable[tuple[str, str]], hosts: Iterable[str]) -> Unit:
    """A snapshot unit from a unit's statements ``(system, text)`` in execution order and the
    hosts of its external calls."""
    counted: dict[tuple[str, str], int] = {}
    for system, text in statements:
        key = (system, stable_text(text))
        counted[key] = counted.get(key, 0) + 1
    calls: dict[str, int] = {}
    for host in hosts:
        calls[host] = calls.get(host, 0) + 1
    return Unit(
        kind,
        " ".join(name.split()),
        tuple((count, system, text) for (system, text), count in counted.items()),
        tuple((count, host) for host, count in calls.items()),
    )


def sort_key(test: str) -> list[str | int]:
    """Tests sorted by name, with the numbers in them (parameters) compared as numbers."""
    return [int(part) if part.isdigit() else part for part in _NUMBERS.split(test)]


def render(module: str, entries: Mapping[str, Snapshot]) -> str:
    """The file's text for the tests of ``module`` (its path relative to the rootdir)."""
    lines = [
        f"# zenmetry snapshots of {module}: each test's units, with their statement shapes in order",
        "# of first execution and their counts. Compared by pytest --zenmetry-snapshot, rewritten by",
        "# --zenmetry-snapshot-update; review its changes like code.",
    ]
    for test in sorted(entries, key=sort_key):
        lines.append("")
        lines.append(test)
        for found in entries[test]:
            lines.append(f"{_UNIT_INDENT}{found.title()}")
            lines.extend(f"{_LINE_INDENT}{line}" for line in _lines(found))
    return "\n".join(lines) + "\n"


def _lines(found: Unit) -> list[str]:
    return [f"{count}x {system} {text}" for count, system, text in found.statements] + [
        f"{count}x {EXTERNAL} {host}" for count, host in found.calls
    ]


@dataclass(frozen=True, slots=True)
class Entry:
    """One test's snapshot as read from a file, with the line its section starts on."""

    snapshot: Snapshot
    line: int


def parse(text: str, path: Path | str) -> dict[str, Entry]:
    """The entries of a snapshot file; a line that does not fit raises ``ConfigError`` naming
    the file, the line and the test it belongs to."""
    entries: dict[str, Entry] = {}
    test: str | None = None
    units: list[Unit] = []
    start = 0

    def close() -> None:
        if test is not None:
            entries[test] = Entry(tuple(units), start)

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"snapshot file '{path}', line {number}" + (f" (test {test})" if test is not None else "")
        if not line[0].isspace():
            close()
            test, units, start = line.rstrip(), [], number
            if test in entries:
                raise ConfigError([f"{where}: test {test!r} has a second section; each test has one"])
            continue
        if test is None:
            raise ConfigError([f"{where}: {line.strip()!r} comes before the first test's name"])
        if line.startswith(_LINE_INDENT) and not line.startswith(_LINE_INDENT + " "):
            if not units:
                raise ConfigError([f"{where}: {line.strip()!r} comes before the first unit of the test"])
            units[-1] = _counted(units[-1], line[len(_LINE_INDENT) :], where)
            continue
        if line.startswith(_UNIT_INDENT) and not line.startswith(_UNIT_INDENT + " "):
            kind, _, name = line[len(_UNIT_INDENT) :].partition(" ")
            if not name.strip():
                raise ConfigError([f"{where}: expected a unit as 'KIND NAME' (http orders/), got {line.strip()!r}"])
            units.append(Unit(kind, name.rstrip()))
            continue
        raise ConfigError(
            [f"{where}: {line!r} is indented by neither 2 spaces (a unit) nor 4 (a statement or external call)"]
        )
    close()
    return entries


def _counted(found: Unit, line: str, where: str) -> Unit:
    match = _COUNTED.fullmatch(line.rstrip())
    if match is None:
        raise ConfigError(
            [f"{where}: expected 'COUNTx SYSTEM STATEMENT' or 'COUNTx {EXTERNAL} HOST', got {line.strip()!r}"]
        )
    count, what, text = int(match["count"]), match["what"], match["text"] or ""
    if what == EXTERNAL:
        if not text:
            raise ConfigError([f"{where}: an external call needs its host, got {line.strip()!r}"])
        return Unit(found.kind, found.name, found.statements, (*found.calls, (count, text)))
    if found.calls:
        raise ConfigError([f"{where}: statement {line.strip()!r} after the unit's external calls; they come last"])
    return Unit(found.kind, found.name, (*found.statements, (count, what, text or NO_STATEMENT)), found.calls)


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed from ``before`` to ``after``, as lines that read at a glance (empty: none)::

    http nplusone/
      + 1x postgresql SELECT ... WHERE "shop_customer"."id" = ?
      12x -> 13x postgresql SELECT ...
    - task shop.tasks.invoice
    """
    if before == after:
        return []
    lines: list[str] = []
    titles = difflib.SequenceMatcher(None, [u.title() for u in before], [u.title() for u in after], autojunk=False)
    for op, b0, b1, a0, a1 in titles.get_opcodes():
        if op == "equal":
            for old, new in zip(before[b0:b1], after[a0:a1], strict=True):
                changed = _changed_lines(old, new)
                if changed:
                    lines.append(new.title())
                    lines.extend(f"  {line}" for line in changed)
            continue
        for old in before[b0:b1]:
            lines.append(f"- {old.title()}")
            lines.extend(f"-   {line}" for line in _lines(old))
        for new in after[a0:a1]:
            lines.append(f"+ {new.title()}")
            lines.extend(f"+   {line}" for line in _lines(new))
    if not lines:  # the same units and shapes: only the order of the units moved
        lines.append("the units finished in another order:")
        lines.extend(f"  {u.title()}" for u in after)
    return lines


def _changed_lines(old: Unit, new: Unit) -> list[str]:
    lines = _counts_changed(
        [((system, text), count) for count, system, text in old.statements],
        [((system, text), count) for count, system, text in new.statements],
        lambda key: f"{key[0]} {key[1]}",
    )
    lines += _counts_changed(
        [(host, count) for count, host in old.calls],
        [(host, count) for count, host in new.calls],
        lambda host: f"{EXTERNAL} {host}",
    )
    if not lines and old != new:
        lines.append("the same shapes, first executed in another order:")
        lines.extend(f"  {line}" for line in _lines(new))
    return lines


def _counts_changed(
    old: Sequence[tuple[Any, int]], new: Sequence[tuple[Any, int]], name: Callable[[Any], str]
) -> list[str]:
    before, after = dict(old), dict(new)
    lines = []
    for key, count in new:
        if key not in before:
            lines.append(f"+ {count}x {name(key)}")
        elif before[key] != count:
            lines.append(f"{before[key]}x -> {count}x {name(key)}")
    lines.extend(f"- {count}x {name(key)}" for key, count in old if key not in after)
    return lines


def totals(snapshots: Iterable[Snapshot]) -> tuple[int, int]:
    """Units and queries of some tests' snapshots."""
    units = queries = 0
    for snapshot in snapshots:
        units += len(snapshot)
        queries += sum(u.queries for u in snapshot)
    return units, queries


def to_data(snapshot: Snapshot) -> list[list[object]]:
    """A snapshot as plain lists (sent from pytest-xdist workers to the controller)."""
    return [[u.kind, u.name, [list(s) for s in u.statements], [list(c) for c in u.calls]] for u in snapshot]


def from_data(data: Sequence[Sequence[object]]) -> Snapshot:
    return tuple(
        Unit(
            str(kind),
            str(name),
            tuple((int(c), str(s), str(t)) for c, s, t in statements),  # type: ignore[attr-defined]
            tuple((int(c), str(h)) for c, h in calls),  # type: ignore[attr-defined]
        )
        for kind, name, statements, calls in data
    )
