"""Cooperative workers: a Celery or gunicorn process that is going to run on gevent or eventlet
is monkey-patched before OpenTelemetry, the instrumentations and the application create anything.

Celery's gevent pool (``celery worker -P gevent``) and gunicorn's gevent worker patch the
standard library themselves, but under ``opentelemetry-instrument`` they do so after the
launcher has imported the SDK, the instrumentations and Django: thread-locals are then real
threads' and every Django task of the pool fails (``DatabaseWrapper objects created in a
thread can only be used in that same thread``), with plain OpenTelemetry too. The launcher
patches first only when ``OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH=patch_all``
is set; zenmetry's distro reads the command line instead, as Celery itself does
(``celery.maybe_patch_concurrency``), and patches as soon as the launcher loads it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Final

_OPTIONS: Final = {
    # program -> (short option, long option) naming its pool or worker class
    "celery": ("-P", "--pool"),
    "gunicorn": ("-k", "--worker-class"),
}
GUNICORN_CMD_ARGS: Final = "GUNICORN_CMD_ARGS"


def green_library(
    argv: Sequence[str], orig_argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ
) -> str | None:
    """``"gevent"`` or ``"eventlet"`` when the command runs a Celery pool or gunicorn worker class
    of that library, else None. ``argv`` is ``sys.argv`` as the launcher's ``sitecustomize``
    sees it (``["-m", ...]`` for ``python -m celery``: the module is read from ``orig_argv``)."""
    if not argv:
        return None
    if argv[0] == "-m":
        after = list(orig_argv).index("-m") + 1 if "-m" in orig_argv else len(orig_argv)
        program = orig_argv[after] if after < len(orig_argv) else ""
    else:
        program = os.path.basename(argv[0])
    options = _OPTIONS.get(program.split(".")[0])
    if options is None:
        return None
    args = list(argv[1:])
    if program.startswith("gunicorn"):
        # gunicorn reads options from its environment too; its config file cannot be read here
        args = shlex.split(environ.get(GUNICORN_CMD_ARGS, "")) + args
    value = _option(args, *options)
    if value is None:
        return None
    # eventlet first: gunicorn's eventlet worker lives in ``gunicorn.workers.geventlet``.
    if "eventlet" in value:
        return "eventlet"
    if "gevent" in value:
        return "gevent"
    return None


def _option(args: Sequence[str], short: str, long: str) -> str | None:
    """The last value given to ``short`` or ``long`` (``-P x``, ``-Px``, ``--pool x``, ``--pool=x``)."""
    found = None
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else None
        if arg in (short, long):
            found = following
        elif arg.startswith(long + "="):
            found = arg[len(long) + 1 :]
        elif arg.startswith(short) and not arg.startswith("--") and len(arg) > len(short):
            found = arg[len(short) :]
    return found


def patch() -> str | None:
    """Monkey-patch the process for its cooperative pool, if it runs one; returns the library."""
    library = green_library(sys.argv, getattr(sys, "orig_argv", ()))
    try:
        if library == "gevent":
            from gevent import monkey

            monkey.patch_all()
        elif library == "eventlet":
            import eventlet

            # Celery keeps the real os.write when it is imported (its shutdown message is
            # written from the hub, where eventlet's green write raises): import it first.
            with contextlib.suppress(ImportError):
                import celery  # noqa: F401

            eventlet.monkey_patch()
    except ImportError:
        return None  # the pool itself then says the library is missing
    return library
