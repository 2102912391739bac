"""The pytest plugin: the same budgets in the test suite as in production.

Registered through ``pytest11`` and idle unless asked: ``--zenmetry`` (or ``zenmetry = true``
in the ini file) checks every unit of every test (Django test-client requests, live-server
requests, Celery tasks run eagerly or by a test worker) against the project's budget file
and fails the test on a breach; ``--zenmetry-report`` prints a table of all units at the
end. ``@pytest.mark.zenmetry_allow("queries")`` lets a known offender through. The
``zen_units`` fixture lists the units a test produced, with or without the global mode.

``--zenmetry-snapshot`` (or ``zenmetry_snapshot = true``) compares each test's units and
statement shapes with its snapshot file (``_snapshots``), records the missing ones
(``--zenmetry-snapshot-strict`` fails them instead) and rewrites the changed ones with
``--zenmetry-snapshot-update``. Tests compare where they run (a pytest-xdist worker included);
files are written once, at the end, by the controlling process only, so no two processes
ever write one file.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from zenmetry.testing import _open_connections

MARKER = "zenmetry_allow"
_RESULTS = pytest.StashKey["_Session"]()
_OUTCOME = pytest.StashKey[dict[str, Any]]()
_REPORT_ATTRIBUTE = "zenmetry_snapshot"
"""The attribute of a test's call report that carries its snapshot outcome (to the controller)."""


class _Session:
    def __init__(self, check: bool, report: bool, snapshots: _Snapshots | None) -> None:
        self.check = check
        self.report = report
        self.snapshots = snapshots
        self.units: list[Any] = []


class _Snapshots:
    """Snapshot mode: where the files are, the ones read so far, and the outcomes of the tests."""

    def __init__(self, rootpath: Path, folder: str, update: bool, strict: bool) -> None:
        self.rootpath = rootpath
        self.folder = folder
        self.update = update
        self.strict = strict
        self.read: dict[Path, Any] = {}  # file -> its entries, or the ConfigError it raised
        self.outcomes: list[dict[str, Any]] = []
        self.written: list[str] = []

    def path(self, module: Path) -> Path:
        from zenmetry.testing._snapshots import SUFFIX

        if not self.folder:
            return module.with_suffix(SUFFIX)
        return (self.rootpath / self.folder / self.relative(module)).with_suffix(SUFFIX)

    def relative(self, module: Path) -> str:
        try:
            return module.relative_to(self.rootpath).as_posix()
        except ValueError:
            return module.name

    def entries(self, path: Path) -> Any:
        from zenmetry._errors import ConfigError
        from zenmetry.testing import _snapshots

        if path not in self.read:
            try:
                text = path.read_text(encoding="utf-8") if path.exists() else ""
                self.read[path] = _snapshots.parse(text, self.relative(path))
            except ConfigError as error:
                self.read[path] = error
            except (OSError, UnicodeDecodeError) as error:
                self.read[path] = ConfigError([f"snapshot file '{self.relative(path)}': cannot be read ({error})"])
        return self.read[path]

    # -- hooks: the outcomes reach here in the controlling process (or the only one) -----------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = getattr(report, _REPORT_ATTRIBUTE, None)
        if outcome is not None:
            self.outcomes.append(outcome)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput"):
            return  # a pytest-xdist worker: its outcomes went to the controller, which writes
        self.write()

    def write(self) -> None:
        """Write the recorded and updated snapshots, each file once."""
        from zenmetry.testing import _snapshots

        by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for outcome in self.outcomes:
            if outcome["state"] in ("recorded", "updated"):
                by_file[outcome["file"]].append(outcome)
        for file, outcomes in sorted(by_file.items()):
            path = Path(file)
            self.read.pop(path, None)  # read again: another process may not have seen it as this one did
            entries = self.entries(path)
            if not isinstance(entries, dict):
                continue  # a corrupt file is never overwritten: its tests failed saying so
            kept = {test: entry.snapshot for test, entry in entries.items()}
            for outcome in outcomes:
                after = _snapshots.from_data(outcome["after"])
                if after:
                    kept[outcome["test"]] = after
                else:
                    kept.pop(outcome["test"], None)
            text = _snapshots.render(outcomes[0]["module"], kept)
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                self.written.append(self.relative(path))

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if hasattr(config, "workerinput") or not self.outcomes:
            return
        from zenmetry.testing import _snapshots

        outcomes = sorted(self.outcomes, key=lambda o: (o["module"], _snapshots.sort_key(o["test"])))
        terminalreporter.section("zenmetry: query snapshots")
        labels = {
            "recorded": "recorded",
            "missing": "missing (strict)",
            "changed": "changed (failed)",
            "updated": "updated",
        }
        for outcome in outcomes:
            label = labels.get(outcome["state"])
            if label is None:
                continue
            before = _snapshots.totals([_snapshots.from_data(outcome["before"] or [])])
            after = _snapshots.totals([_snapshots.from_data(outcome["after"])])
            figures = (
                f"units {before[0]} -> {after[0]}, queries {before[1]} -> {after[1]}"
                if outcome["before"] is not None
                else f"units {after[0]}, queries {after[1]}"
            )
            terminalreporter.write_line(f"{label:<17} {outcome['nodeid']}  ({figures})")
        compared = [o for o in outcomes if o["before"] is not None]
        counts: dict[str, int] = defaultdict(int)
        for outcome in outcomes:
            counts[outcome["state"]] += 1
        before = _snapshots.totals(_snapshots.from_data(o["before"]) for o in compared)
        after = _snapshots.totals(_snapshots.from_data(o["after"]) for o in compared)
        terminalreporter.write_line(
            ", ".join(f"{counts[state]} {state}" for state in ("same", *labels) if counts[state])
            + f"; tests with a snapshot: units {before[0]} -> {after[0]}, queries {before[1]} -> {after[1]}"
        )
        for written in self.written:
            terminalreporter.write_line(f"written: {written}")


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
    group.addoption(
        "--zenmetry-snapshot",
        action="store_true",
        default=None,
        help="compare each test's units and statement shapes with its snapshot file; record the missing ones",
    )
    group.addoption(
        "--zenmetry-snapshot-update",
        action="store_true",
        default=False,
        help="rewrite the snapshots of the tests whose units or statements changed (implies --zenmetry-snapshot)",
    )
    group.addoption(
        "--zenmetry-snapshot-strict",
        action="store_true",
        default=False,
        help="fail a test that has no snapshot yet instead of recording one, for CI (implies --zenmetry-snapshot)",
    )
    parser.addini("zenmetry", "check every unit against the budget file (like --zenmetry)", type="bool", default=False)
    parser.addini(
        "zenmetry_snapshot", "compare tests with their snapshots (like --zenmetry-snapshot)", type="bool", default=False
    )
    parser.addini(
        "zenmetry_snapshot_dir",
        "folder of the snapshot files, relative to the rootdir (default: next to each test module)",
        default="",
    )
    parser.addini(
        "zenmetry_budgets", "the budget file (default: ZENMETRY_BUDGETS, else zenmetry.toml in the rootdir)", default=""
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*limits): let this test exceed the named budget limits (all of them when none is named)",
    )
    # Remember the database connections opened from now on, in case zenmetry.testing is imported
    # later (inside a test): it then traces the ones already open (``_late``).
    _open_connections.watch()
    option = config.getoption("--zenmetry")
    check = bool(config.getini("zenmetry")) if option is None else bool(option)
    report = bool(config.getoption("--zenmetry-report"))
    update = bool(config.getoption("--zenmetry-snapshot-update"))
    strict = bool(config.getoption("--zenmetry-snapshot-strict"))
    option = config.getoption("--zenmetry-snapshot")
    snapshot = update or strict or (bool(config.getini("zenmetry_snapshot")) if option is None else bool(option))
    if check or report or snapshot:
        _start(config)
        snapshots = None
        if snapshot:
            from zenmetry import testing

            testing.keep_hosts()
            snapshots = _Snapshots(config.rootpath, str(config.getini("zenmetry_snapshot_dir")), update, strict)
            config.pluginmanager.register(snapshots, "zenmetry-snapshots")
        config.stash[_RESULTS] = _Session(check, report, snapshots)


def _start(config: pytest.Config) -> None:
    """Instrument this process in memory, with the project's budget file."""
    from zenmetry import _names, testing
    from zenmetry._errors import ConfigError
    from zenmetry.config import _settings

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
    if "zenmetry.testing._api" in sys.modules or any(
        "zen_units" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        _start(session.config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from zenmetry.config._limits import ALLOWED, BY_NAME

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
    problems = []
    if session.check:
        allowed = _allowed(item)
        failed = [
            dataclasses.replace(u, breaches=kept)
            for u in units
            if (kept := tuple(b for b in u.breaches if allowed is not None and b.limit not in allowed))
        ]
        if failed:
            problems.append(testing.report(failed))
    if session.snapshots is not None:
        problem = _compare(item, session.snapshots, units)
        testing.forget_hosts()
        if problem:
            problems.append(problem)
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)
    return result


def _compare(item: pytest.Item, snapshots: _Snapshots, units: list[Any]) -> str | None:
    """Compare the test's units with its snapshot; stash the outcome for the controller; return
    why the test fails, if it does."""
    from zenmetry import testing
    from zenmetry._errors import ConfigError
    from zenmetry.testing import _snapshots

    path = snapshots.path(item.path)
    entries = snapshots.entries(path)
    if isinstance(entries, ConfigError):
        return "\n".join(f"zenmetry: {problem}" for problem in entries.problems) + (
            "\nfix the line, or delete the file and run pytest --zenmetry-snapshot-update to record it anew"
        )
    test = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name
    after = tuple(
        _snapshots.unit(
            u.kind,
            u.name,
            ((s.system, s.text) for s in (u.figures.statements or ()) if s.query),
            testing.hosts_of(u),
        )
        for u in units
    )
    entry = entries.get(test)
    before = entry.snapshot if entry is not None else None
    where = f"{snapshots.relative(path)}" + (f", line {entry.line}" if entry is not None else "")
    problem = None
    if before is None:
        if not after:
            return None
        if snapshots.strict:
            state, problem = (
                "missing",
                (
                    f"zenmetry: no snapshot of this test in {where} (--zenmetry-snapshot-strict); record it with "
                    "pytest --zenmetry-snapshot-update and commit the file"
                ),
            )
        else:
            state = "recorded"
    elif before == after:
        state = "same"
    elif snapshots.update:
        state = "updated"
    else:
        state = "changed"
        problem = "\n".join(
            [
                f"zenmetry: the units of this test changed from its snapshot ({where}):",
                *(f"  {line}" for line in _snapshots.diff(before, after)),
                "if it is intended, accept it with pytest --zenmetry-snapshot-update and review the file's diff",
            ]
        )
    item.stash[_OUTCOME] = {
        "file": str(path),
        "module": snapshots.relative(item.path),
        "nodeid": item.nodeid,
        "test": test,
        "state": state,
        "before": _snapshots.to_data(before) if before is not None else None,
        "after": _snapshots.to_data(after),
    }
    return problem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if call.when == "call" and _OUTCOME in item.stash:
        # On the report, it reaches the controlling process under pytest-xdist (reports are
        # serialized with their attributes).
        setattr(report, _REPORT_ATTRIBUTE, item.stash[_OUTCOME])
    return report


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
        "round trips max",
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
                str(max(u.figures.round_trips for u in units)),
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
