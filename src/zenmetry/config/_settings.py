"""zenmetry's settings: every ``ZENMETRY_*`` variable and the budget file, read in one place.

``load()`` returns a frozen ``Settings``; nothing else reads these variables or re-parses
the budget file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from zenmetry import _names
from zenmetry._errors import ConfigError
from zenmetry.config._budgets import Budgets


@dataclass(frozen=True)
class Settings:
    """What the ``ZENMETRY_*`` variables say, validated."""

    budgets: Budgets = field(default_factory=Budgets)
    console: bool = False
    http_timeout: float | None = None
    db_spans: str = "detail"
    """``detail``: a unit's DB spans are exported one by one only when it needs them; ``all``."""
    db_spans_ratio: float = 0.01
    memory_trace: str | float = "breach"
    """``breach``: trace the next unit of a name after it breached ``memory_mb``; ``off``; or the
    share (0 to 1) of all units to trace."""
    server_timing: bool = False
    """Every non-streamed response carries a ``Server-Timing`` header with its unit's figures."""
    commands: frozenset[str] | None = None
    """The management commands that are units: None for every one but those that serve or
    consume forever (``FOREVER``), the empty set for none (``off``), or the ones named."""


def load(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Settings:
    """Read the environment and the budget file; raises ``ConfigError`` listing every problem."""
    problems: list[str] = []
    console = environ.get(_names.ENV_CONSOLE, "").strip()
    if console not in ("", "0", "1"):
        problems.append(f"{_names.ENV_CONSOLE}={console!r}: expected 1 (print a line per unit) or 0")
    server_timing = environ.get(_names.ENV_SERVER_TIMING, "").strip()
    if server_timing not in ("", "0", "1"):
        problems.append(
            f"{_names.ENV_SERVER_TIMING}={server_timing!r}: expected 1 (a Server-Timing header on every response) or 0"
        )
    commands = _commands(environ.get(_names.ENV_COMMANDS, "").strip(), problems)
    http_timeout = _http_timeout(environ.get(_names.ENV_HTTP_TIMEOUT, "").strip(), problems)
    memory_trace = _memory_trace(environ.get(_names.ENV_MEMORY_TRACE, "").strip(), problems)
    db_spans = environ.get(_names.ENV_DB_SPANS, "").strip() or "detail"
    if db_spans not in ("detail", "all"):
        problems.append(
            f"{_names.ENV_DB_SPANS}={db_spans!r}: expected detail (the default: DB spans of units that breached, "
            "failed or fall in the ratio) or all"
        )
    ratio = _share(_names.ENV_DB_SPANS_RATIO, environ.get(_names.ENV_DB_SPANS_RATIO, "").strip(), 0.01, problems)
    budgets = Budgets()
    try:
        path = budget_path(environ, cwd)
        if path is not None:
            budgets = Budgets.from_file(path)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        raise ConfigError(problems)
    return Settings(
        budgets=budgets,
        console=console == "1",
        http_timeout=http_timeout,
        db_spans=db_spans,
        db_spans_ratio=ratio,
        memory_trace=memory_trace,
        server_timing=server_timing == "1",
        commands=commands,
    )


FOREVER: Final = frozenset(
    {
        *("runserver", "runserver_plus", "testserver", "runworker", "shell", "shell_plus", "dbshell", "test"),
        *("db_worker", "rqworker", "rqscheduler", "qcluster", "process_tasks", "celery", "runapscheduler"),
    }
)
"""Commands that serve or consume forever (servers, task workers, shells): never units by default."""


def _commands(value: str, problems: list[str]) -> frozenset[str] | None:
    if value in ("", "default"):
        return None
    if value == "off":
        return frozenset()
    names = [name.strip() for name in value.split(",")]
    if not all(name and name.replace("_", "").replace("-", "").isalnum() for name in names):
        problems.append(
            f"{_names.ENV_COMMANDS}={value!r}: expected off, default (every command but servers, workers and "
            "shells), or a comma-separated list of command names"
        )
        return None
    return frozenset(names)


def is_unit_command(settings: Settings, name: str) -> bool:
    """Whether one run of management command ``name`` is a unit (``ZENMETRY_COMMANDS``)."""
    return name not in FOREVER if settings.commands is None else name in settings.commands


def budget_path(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> Path | None:
    """The budget file in use: ``ZENMETRY_BUDGETS`` (which must exist), else ``./zenmetry.toml`` if present."""
    named = environ.get(_names.ENV_BUDGETS, "").strip()
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{_names.ENV_BUDGETS}={named!r}: no such budget file")
        return path
    default = (cwd or Path.cwd()) / _names.DEFAULT_BUDGET_FILE
    return default if default.is_file() else None


def _http_timeout(value: str, problems: list[str]) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        problems.append(f"{_names.ENV_HTTP_TIMEOUT}={value!r}: expected a positive number of seconds, such as 5")
        return None
    return seconds


def _memory_trace(value: str, problems: list[str]) -> str | float:
    if value in ("", "breach"):
        return "breach"
    if value == "off":
        return "off"
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0 <= share <= 1:  # also refuses nan
        problems.append(
            f"{_names.ENV_MEMORY_TRACE}={value!r}: expected breach (the default), off, or a share of units "
            "between 0 and 1, such as 0.001"
        )
        return "off"
    return share


def _share(variable: str, value: str, default: float, problems: list[str]) -> float:
    if not value:
        return default
    try:
        share = float(value)
    except ValueError:
        share = math.nan
    if not 0 <= share <= 1:  # also refuses nan
        problems.append(f"{variable}={value!r}: expected a share between 0 and 1, such as {default}")
        return default
    return share
