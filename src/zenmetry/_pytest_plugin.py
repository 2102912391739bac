"""The pytest plugin: the same budgets in the test suite as in production.

Registered through ``pytest11`` and idle unless asked: ``--zenmetry`` (or ``zenmetry = true``
in the ini file) checks every unit of every test (Django test-client requests, live-server
requests, Celery tasks run eagerly or by a test worker) against the project's budget file
and fails the test on a breach; ``--zenmetry-report`` prints a table of all units at the
end. ``@pytest.mark.zenmetry_allow("queries")`` lets a known offender through. The
``zen_units`` fixture lists the units a test produced, with or without the global mode.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Generator, Iterator
from typing import Any

import pytest

MARKER = "zenmetry_allow"
_RESULTS = pytest.StashKey["_Session"]()


class _Session:
    def __init__(self, check: bool, report: bool) -> None:
        self.check = check
        self.report = report
        self.units: list[Any] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zenmetry", "zenmetry budgets")
    group.addoption(
        "--zenmetry",
        action="store_true",
        default=None,
        help="check every request and task of every test against the budget file; fail on a breach",
    )
    group.addoption(
        "--zenmetry-report",
        action="store_true",
        default=False,
        help="print a table of every request and task at the end, slowest and heaviest first",
    )
    parser.addini("zenmetry", "check every unit against the budget file (like --zenmetry)", type="bool", default=False)
    parser.addini(
        "zenmetry_budgets", "the budget file (default: ZENMETRY_BUDGETS, else zenmetry.toml in the rootdir)", default=""
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*limits): let this test exceed the named budget limits (all of them when none is named)",
    )
    option = config.getoption("--zenmetry")
    check = bool(config.getini("zenmetry")) if option is None else bool(option)
    report = bool(config.getoption("--zenmetry-report"))
    if check or report:
        _start(config)
        config.stash[_RESULTS] = _Session(check, report)


def _start(config: pytest.Config) -> None:
    """Instrument this process in memory, with the project's budget file."""
    from zenmetry import _names, _settings, testing
    from zenmetry._errors import ConfigError

    environ = dict(os.environ)
    if config.getini("zenmetry_budgets"):
        environ[_names.ENV_BUDGETS] = str(config.rootpath / config.getini("zenmetry_budgets"))
    try:
        settings = _settings.load(environ, cwd=config.rootpath)
    except ConfigError as error:
        raise pytest.UsageError("\n".join(f"zenmetry: {problem}" for problem in error.problems)) from None
    testing.start(settings)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Without the global mode, instrument before the first test when the tests use zenmetry's
    fixtures or helpers: connections opened before instrumentation would not be measured."""
    if _RESULTS in session.config.stash:
        return
    if "zenmetry.testing" in sys.modules or any(
        "zen_units" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        _start(session.config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from zenmetry._limits import ALLOWED, BY_NAME

    for item in items:
        for marker in item.iter_markers(MARKER):
            for limit in marker.args:
                if limit not in BY_NAME:
                    where = f"@pytest.mark.{MARKER}({limit!r}) on {item.nodeid}"
                    raise pytest.UsageError(f"zenmetry: {where}: unknown limit; allowed: {ALLOWED}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    session = item.config.stash.get(_RESULTS, None)
    if session is None:
        return (yield)
    from zenmetry import testing

    with testing.recorded() as units:
        result = yield
    session.units.extend(units)
    if session.check:
        allowed = _allowed(item)
        failed = [
            dataclasses.replace(u, breaches=kept)
            for u in units
            if (kept := tuple(b for b in u.breaches if allowed is not None and b.limit not in allowed))
        ]
        if failed:
            pytest.fail(testing.report(failed), pytrace=False)
    return result


def _allowed(item: pytest.Item) -> set[str] | None:
    """Limits a test may exceed: None when a bare marker allows them all."""
    allowed: set[str] = set()
    for marker in item.iter_markers(MARKER):
        if not marker.args:
            return None
        allowed.update(marker.args)
    return allowed


@pytest.fixture
def zen_units() -> Iterator[list[Any]]:
    """The units (``zenmetry.testing.ZenUnit``) this test produced, in the order they finished."""
    from zenmetry import testing

    with testing.recorded() as units:
        yield units


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    session = config.stash.get(_RESULTS, None)
    if session is None or not session.report:
        return
    rows = defaultdict(list)
    for unit in session.units:
        rows[(unit.kind, unit.name)].append(unit)
    terminalreporter.section("zenmetry: units by route and task, heaviest (most queries) first, then slowest")
    header = (
        "kind",
        "name",
        "units",
        "queries p50",
        "max",
        "db ms max",
        "mem MiB max",
        "ext max",
        "ms max",
        "breaches",
    )
    table = [header]
    ordered = sorted(
        rows.items(),
        key=lambda item: (
            -max(u.figures.queries for u in item[1]),
            -max(u.figures.duration_ms for u in item[1]),
            item[0],
        ),
    )
    for (kind, name), units in ordered:
        breached = sorted({b.limit for u in units for b in u.breaches})
        table.append(
            (
                kind,
                name,
                str(len(units)),
                f"{statistics.median(u.figures.queries for u in units):g}",
                str(max(u.figures.queries for u in units)),
                f"{max(u.figures.db_duration_ms for u in units):.1f}",
                f"{max(u.figures.rss_delta_bytes for u in units) / 2**20:+.1f}",
                str(max(u.figures.external_calls for u in units)),
                f"{max(u.figures.duration_ms for u in units):.1f}",
                ", ".join(breached) or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        terminalreporter.write_line(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
