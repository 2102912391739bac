"""Budgets: the budget file, the ``@budget`` decorator, and which limits apply to a unit.

Parsed and validated once, at start, into frozen objects; looked up per unit through a
cache keyed by ``(kind, name)``, so the hot path does no parsing and no glob matching
after a name's first unit.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Final, TypeVar

from zenmetry import _names
from zenmetry._errors import ConfigError
from zenmetry.config import _limits
from zenmetry.config._limits import Limits

KINDS: Final = (_names.KIND_HTTP, _names.KIND_TASK, _names.KIND_COMMAND)
_TABLES: Final = (
    'allowed: [http], [task], [command], [http."<route>"], [task."<task name>"] and [command."<command name>"]'
)

BUDGET_ATTRIBUTE: Final = "__zenmetry_budget__"
"""Where ``@budget`` leaves its limits on a view function, view class or task."""

_CACHE_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class Budget:
    """The limits that apply to one unit, and where they came from (``zen.budget``)."""

    source: str
    limits: Limits
    checks: tuple[tuple[str, int | float], ...] = field(init=False)
    """The limits to check, each in its own unit (int for counts, float for ms and MiB),
    defaults included; computed once, as budgets are cached."""
    _values: dict[str, int | float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checks = _limits.checks(self.limits)
        object.__setattr__(self, "checks", checks)
        # limit() runs several times per unit: a dict look-up, not a walk through the checks.
        object.__setattr__(self, "_values", dict(checks))

    def limit(self, name: str) -> int | float:
        """The value ``name`` is checked with; 0 when it is not checked."""
        return self._values.get(name, 0)


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    limits: Limits


class Budgets:
    """The budget file as parsed once at start, looked up per unit.

    ``Budgets()`` is the file-less default: no limit but the defaulted ones
    (``repeated_queries = 5``, ``slow_query_ms = 500``), and ``zen.budget`` is ``"default"``.
    """

    def __init__(self, path: Path | None = None, tables: Mapping[str, Any] | None = None) -> None:
        self.path = path
        self._kind_limits: dict[str, Limits] = {}
        self._exact: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
        self._globs: dict[str, list[_Entry]] = {kind: [] for kind in KINDS}
        self._cache: dict[tuple[str, str], Budget] = {}
        if tables is not None:
            self._load(tables)

    @classmethod
    def from_file(cls, path: Path) -> Budgets:
        """Read and validate a budget file; raises ``ConfigError`` naming every problem."""
        where = f"budget file {str(path)!r}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{where}: cannot be read ({error.strerror or error})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{where}: not valid TOML: {error}") from None
        except RecursionError:
            raise ConfigError(f"{where}: not valid TOML: arrays or tables nested too deeply") from None
        except ValueError:  # an integer of more digits than Python converts (4,300)
            raise ConfigError(f"{where}: not valid TOML: a number has too many digits") from None
        return cls(path, tables)

    def _load(self, tables: Mapping[str, Any]) -> None:
        where = f"budget file {str(self.path)!r}"
        problems: list[str] = []
        for kind, table in tables.items():
            if not isinstance(table, dict):
                problems.append(f"{where}, top-level key {kind!r}: limits go in a table; {_TABLES}")
                continue
            if kind not in KINDS:
                problems.append(f"{where}, table [{kind}]: unknown table; {_TABLES}")
                continue
            own = {key: value for key, value in table.items() if not isinstance(value, dict)}
            try:
                self._kind_limits[kind] = _limits.parse(own, f"{where}, entry [{kind}]")
            except ConfigError as error:
                problems.extend(error.problems)
            for key, value in table.items():
                if not isinstance(value, dict):
                    continue
                try:
                    entry = _Entry(key, _limits.parse(value, f'{where}, entry [{kind}."{key}"]'))
                except ConfigError as error:
                    problems.extend(error.problems)
                    continue
                if "*" in key:
                    self._globs[kind].append(entry)
                else:
                    self._exact[kind][key] = entry
        if problems:
            raise ConfigError(problems)
        for globs in self._globs.values():
            # Longest pattern first; sorted() is stable, so equal lengths keep file order.
            globs.sort(key=lambda entry: -len(entry.key))

    def lookup(self, kind: str, name: str) -> Budget:
        """The budget for a unit: exact entry, else longest matching glob, else the kind's table."""
        found = self._cache.get((kind, name))
        if found is None:
            found = self._resolve(kind, name)
            if len(self._cache) < _CACHE_MAX:
                self._cache[(kind, name)] = found
        return found

    def _resolve(self, kind: str, name: str) -> Budget:
        base = self._kind_limits.get(kind, Limits())
        if self.path is None:
            return Budget(_names.BUDGET_DEFAULT, base)
        entry = self._exact.get(kind, {}).get(name)
        if entry is None:
            entry = next((glob for glob in self._globs.get(kind, ()) if fnmatchcase(name, glob.key)), None)
        if entry is None:
            return Budget(kind, base)
        return Budget(entry.key, entry.limits.over(base))

    def resolve(self, kind: str, name: str, override: Limits | None) -> Budget:
        """``lookup``, with a ``@budget`` override on top when the view or task has one."""
        found = self.lookup(kind, name)
        if override is None:
            return found
        return Budget(_names.BUDGET_DECORATOR, override.over(found.limits))

    def entries(self) -> list[tuple[str, Budget]]:
        """Every table and entry of the file with its effective limits (``zenmetry check``)."""
        rows = []
        for kind in KINDS:
            base = self._kind_limits.get(kind, Limits())
            rows.append((f"[{kind}]", Budget(kind, base)))
            for entry in sorted([*self._exact[kind].values(), *self._globs[kind]], key=lambda e: e.key):
                rows.append((f'[{kind}."{entry.key}"]', Budget(entry.key, entry.limits.over(base))))
        return rows


Decorated = TypeVar("Decorated", bound=Callable[..., Any] | type)


def budget(**limits: float) -> Callable[[Decorated], Decorated]:
    """Override the budget file for one view (function or class) or one Celery task.

    ``@budget(queries=5, duration_ms=200)``, with any limit of the budget file (the keys
    of ``zenmetry.config._limits.LIMITS``); limits left out come from the entry that would
    otherwise apply, and ``zen.budget`` reads ``@budget``. Put it below ``@app.task`` (or
    on the function a task wraps); a Django task takes it above or below ``@task``. An
    unknown or wrong limit raises ``ConfigError`` when the decorated module is imported.
    """

    def decorate(target: Decorated) -> Decorated:
        where = _describe(target)
        parsed = _limits.parse(limits, where)
        try:
            setattr(target, BUDGET_ATTRIBUTE, parsed)
        except (AttributeError, TypeError):  # a Django Task is a frozen dataclass: the budget goes on its function
            setattr(target.func, BUDGET_ATTRIBUTE, parsed)  # type: ignore[union-attr]
        return target

    return decorate


def _describe(target: Any) -> str:
    if not hasattr(target, "__code__") and hasattr(getattr(target, "func", None), "__code__"):
        target = target.func  # a Django Task
    module = getattr(target, "__module__", None) or "?"
    code = getattr(target, "__code__", None)
    file = code.co_filename if code is not None else getattr(sys.modules.get(module), "__file__", None)
    name = getattr(target, "__qualname__", None) or getattr(target, "name", None) or repr(target)
    return f"{str(file or module)!r}, @budget on {module}.{name}"


def budget_of(target: Any) -> Limits | None:
    """The ``@budget`` limits a view, view class or task carries, if any."""
    found = getattr(target, BUDGET_ATTRIBUTE, None)
    if found is None:
        view_class = getattr(target, "view_class", None) or getattr(target, "run", None)
        found = getattr(view_class, BUDGET_ATTRIBUTE, None)
    return found if isinstance(found, Limits) else None
