"""Call sites: the line of the application's own code that made a call, taken only when the call
crossed a limit (it is still on the stack then).

The innermost frame that is not the standard library, site-packages, zenmetry or OpenTelemetry is
the application's; when the call came from a Django template, the template's name and line are
taken too, from the innermost template node being rendered, whether the template made the call
itself (a lookup in Django's own code) or called the application's code that made it (a model
method, a template tag). Nothing but file, line, function and
template name and line is read, and the walk stops after ``MAX_FRAMES`` frames whatever the stack.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Final

from zenmetry import _names

MAX_FRAMES: Final = 200
"""The walk's bound: a hostile or very deep stack costs at most this many frames."""

_NOT_APPLICATION: Final = tuple(
    sorted(
        {
            str(Path(path).resolve()) + os.sep
            for path in (
                *(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")),
                *(entry for entry in sys.path if entry.endswith(("site-packages", "dist-packages"))),
                os.path.dirname(os.path.dirname(__file__)),  # zenmetry itself (this file is in units/)
            )
        }
    )
)
_TEMPLATE_RENDER: Final = ("render_annotated", os.path.join("django", "template", "base.py"))

_COMPREHENSIONS: Final = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
_CACHE_MAX: Final = 10_000
_is_application: dict[CodeType, bool] = {}
"""Per code object: whether it is the application's (a cache, bounded; not state)."""


@dataclass(frozen=True, slots=True)
class CallSite:
    """Where the application made a call: OpenTelemetry's code attributes, and the template."""

    path: str
    line: int
    function: str
    template: str | None = None
    template_line: int | None = None

    def attributes(self) -> dict[str, str | int]:
        found: dict[str, str | int] = {
            _names.CODE_FILE_PATH: self.path,
            _names.CODE_LINE_NUMBER: self.line,
            _names.CODE_FUNCTION_NAME: self.function,
        }
        if self.template is not None:
            found[_names.TEMPLATE_NAME] = self.template
            if self.template_line is not None:
                found[_names.TEMPLATE_LINE] = self.template_line
        return found

    def __str__(self) -> str:
        """``shop/views.py:41 orders`` (``(template orders.html:7)`` after it when one ran the call)."""
        text = f"{self.path}:{self.line} {self.function}"
        if self.template is not None:
            text += f" (template {self.template}:{self.template_line})"
        return text


def take(frame: FrameType | None = None) -> CallSite | None:
    """The call site of the running call (from ``frame`` outward, the caller's by default)."""
    frame = frame or sys._getframe(1)  # noqa: SLF001 - the only way to walk the stack this cheaply
    template: tuple[str, int | None] | None = None
    for walked in range(MAX_FRAMES):
        if frame is None:
            return None
        code = frame.f_code
        application = _is_application.get(code)
        if application is None:
            application = _classify(code)
        if application:
            if template is None:
                # Application code a template called (a model method, a template tag): the
                # template being rendered further out is where it was called from.
                template = _rendering(frame.f_back, MAX_FRAMES - walked - 1)
            name, line = template or (None, None)
            return CallSite(relative(code.co_filename), frame.f_lineno, _function(code), name, line)
        if template is None and _renders(code):
            template = _template(frame)
        frame = frame.f_back
    return None


def _renders(code: CodeType) -> bool:
    """Whether ``code`` is Django's ``Node.render_annotated``, which renders one template node."""
    return code.co_name == _TEMPLATE_RENDER[0] and code.co_filename.endswith(_TEMPLATE_RENDER[1])


def _rendering(frame: FrameType | None, frames: int) -> tuple[str, int | None] | None:
    """The innermost template node being rendered from ``frame`` outward, within ``frames`` frames."""
    for _ in range(frames):
        if frame is None:
            return None
        if _renders(frame.f_code):
            return _template(frame)
        frame = frame.f_back
    return None


def _function(code: CodeType) -> str:
    """The function's qualified name; a comprehension's is its function's (as from Python 3.12 on,
    where comprehensions are inlined)."""
    if code.co_name in _COMPREHENSIONS:
        return code.co_qualname.rsplit(".<locals>.", 1)[0]
    return code.co_qualname


def _classify(code: CodeType) -> bool:
    filename = code.co_filename
    application = not filename.startswith("<") and not str(Path(filename).resolve()).startswith(_NOT_APPLICATION)
    if len(_is_application) >= _CACHE_MAX:
        _is_application.clear()
    _is_application[code] = application
    return application


def _template(frame: FrameType) -> tuple[str, int | None] | None:
    """Name and line of the template node ``Node.render_annotated`` is rendering."""
    node = frame.f_locals.get("self")
    origin = getattr(node, "origin", None)
    name = getattr(origin, "template_name", None) or getattr(origin, "name", None)
    if not isinstance(name, str):
        return None
    line = getattr(getattr(node, "token", None), "lineno", None)
    return name, line if isinstance(line, int) else None


def relative(path: str) -> str:
    """``path`` relative to the working directory when under it."""
    cwd = os.getcwd()
    return path[len(cwd) + 1 :] if path.startswith(cwd + os.sep) else path
