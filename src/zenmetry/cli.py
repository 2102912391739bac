"""The ``zenmetry`` command: ``zenmetry check [FILE]`` validates a budget file without starting anything."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from zenmetry._errors import ConfigError
from zenmetry.config import _settings
from zenmetry.config._budgets import Budget, Budgets

EXIT_BAD_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zenmetry", description="zenmetry's command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="validate a budget file and print the effective budget of every entry",
        description="Validate a budget file as start-up would, and print the effective budget of every entry.",
    )
    check.add_argument("file", nargs="?", type=Path, help="the budget file (default: the one start-up would use)")
    args = parser.parse_args(argv)
    return _check(args.file)


def _check(path: Path | None) -> int:
    try:
        if path is None:
            path = _settings.budget_path()
            if path is None:
                print(
                    "zenmetry: no budget file: ZENMETRY_BUDGETS is not set and there is no ./zenmetry.toml",
                    file=sys.stderr,
                )
                return EXIT_BAD_CONFIG
        budgets = Budgets.from_file(path)
    except ConfigError as error:
        for problem in error.problems:
            print(f"zenmetry: {problem}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    rows = budgets.entries()
    width = max(len(entry) for entry, _ in rows)
    print(f"{path}: valid; effective budgets (a limit left out is not checked):")
    for entry, budget in rows:
        print(f"  {entry.ljust(width)}  {_limits(budget)}")
    return 0


def _limits(budget: Budget) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in budget.checks) or "(nothing checked)"


if __name__ == "__main__":
    sys.exit(main())
