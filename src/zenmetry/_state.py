"""zenmetry's global state, all of it: this process's settings, its unit processor, what its
exporters did not deliver, and what was done once per process.

The launcher calls the distro, then the configurator, then loads the instrumentors; the
hooks the integrations hand to instrumentors find the processor here. Nothing else in
zenmetry is global beyond what OpenTelemetry itself imposes, except two per-process handles
that say why where they are kept (the descriptor ``_memory`` reads the RSS from, and the
instrumentation's integration object ``integrations.psycopg`` caches per connection), and
``zenmetry.testing``'s recorder, the in-memory instrumentation a test suite shares.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zenmetry import _settings
from zenmetry._errors import ConfigError
from zenmetry._settings import Settings

if TYPE_CHECKING:  # the processor's hooks import this module
    from zenmetry._exit import Outbox
    from zenmetry._processor import UnitProcessor


@dataclass
class _State:
    settings: Settings | None = None
    processor: UnitProcessor | None = None
    outbox: Outbox | None = None
    """What the exporters were handed and did not deliver, for the bounded flush at exit."""
    patched: set[str] = field(default_factory=set)
    """What was wrapped or connected once per process (libraries, Celery's signals)."""
    reported: set[str] = field(default_factory=set)
    """Connections already reported without timeouts (``integrations.report``)."""


state = _State()


def settings(*, exit_on_error: bool) -> Settings:
    """The settings, loaded once. A bad setting raises ``ConfigError``, or with
    ``exit_on_error`` prints one line per problem and exits with status 2 (the launcher
    swallows exceptions raised while configuring, so stopping is zenmetry's job)."""
    if state.settings is None:
        try:
            state.settings = _settings.load()
        except ConfigError as error:
            if not exit_on_error:
                raise
            sys.stderr.write("".join(f"zenmetry: {problem}\n" for problem in error.problems))
            sys.stderr.write("zenmetry: fix the configuration above; the process was not started\n")
            sys.stderr.flush()
            # SystemExit inside sitecustomize becomes "Fatal Python error" with exit status 1.
            os._exit(2)
    return state.settings


def processor() -> UnitProcessor | None:
    """The unit processor of this process, once the configurator has run."""
    return state.processor


def once(what: str) -> bool:
    """True the first time ``what`` is asked in this process, False after."""
    if what in state.patched:
        return False
    state.patched.add(what)
    return True
