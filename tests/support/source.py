"""Where things are in the test project's source: the exact lines call sites must name."""

from __future__ import annotations

from pathlib import Path

from support.processes import TESTS

VIEWS = TESTS / "zentestapp" / "views.py"
TASKS = TESTS / "zentestapp" / "tasks.py"
MODELS = TESTS / "zentestapp" / "models.py"
TEMPLATES = TESTS / "zentestapp" / "templates" / "zentestapp"


def line_of(path: Path, text: str, *, after: str | None = None) -> int:
    """The number of the one line of ``path`` that contains ``text`` (the first one after the
    line that contains ``after``, when given)."""
    lines = list(enumerate(path.read_text().splitlines(), 1))
    if after is not None:
        (start,) = [number for number, line in lines if after in line]
        return next(number for number, line in lines[start:] if text in line)
    (found,) = [number for number, line in lines if text in line]
    return found


def site(path: Path, text: str, function: str, *, cwd: Path = TESTS.parent) -> dict[str, str | int]:
    """The call-site attributes of the line holding ``text``, as seen from a process in ``cwd``."""
    return {
        "code.file.path": str(path.relative_to(cwd)),
        "code.line.number": line_of(path, text),
        "code.function.name": function,
    }
