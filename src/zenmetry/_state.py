"""Global state department: zenmetry's process-wide state, in one place. Don't reload this module.

What is here is set once per process by the start-up (``_distro``, ``_configurator``) or by
``zenmetry.testing``, and read by them alone: every other part of zenmetry is handed what it
needs when it is built (the processor to the integrations' hooks and to the tracers that hold
spans, the gate and the listeners to the processor) and never looks it up. Nothing here exits
the process: a bad setting raises ``ConfigError``, and the start-up decides what to do with it.

Kept elsewhere, each where it is read on a hot path or belongs to one library, and each set
once per process: the descriptor the RSS is read from (``units._memory``, re-opened after a
fork), the connection tracer of the psycopg integration (``integrations.psycopg.tracer_for``,
read for every statement), and ``zenmetry.testing``'s recorder (the in-memory instrumentation a
test suite shares). Caches (statement shapes, call-site classification, operation names) are
bounded and hold nothing a fresh one would not compute again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zenmetry.config import _settings
from zenmetry.config._settings import Settings

if TYPE_CHECKING:
    from zenmetry.export._outbox import Outbox
    from zenmetry.units._processor import UnitProcessor


@dataclass
class _State:
    settings: Settings | None = None
    processor: UnitProcessor | None = None
    """The unit processor of this process, once the configurator (or ``zenmetry.testing``) made it."""
    outbox: Outbox | None = None
    """What the exporters were handed and did not deliver, for the bounded flush at exit."""
    patched: set[str] = field(default_factory=set)
    """What was wrapped or connected once per process (libraries, Celery's signals)."""
    reported: set[str] = field(default_factory=set)
    """Connections already reported without timeouts (``integrations.report``)."""


state = _State()


def settings() -> Settings:
    """The settings, loaded once; a bad setting raises ``ConfigError`` (every problem in it)."""
    if state.settings is None:
        state.settings = _settings.load()
    return state.settings


def once(what: str) -> bool:
    """True the first time ``what`` is asked in this process, False after."""
    if what in state.patched:
        return False
    state.patched.add(what)
    return True
