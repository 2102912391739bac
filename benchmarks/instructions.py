"""What zenmetry costs per request, in CPU instructions: steady whatever else the machine does.

``overhead.py`` measures CPU time, which on two cores shared with other work moves by 20 % from
round to round. Instructions do not (valgrind's callgrind counts them): here the example shop's
two pages are served by Django's WSGI handler inside one process, started the way
``overhead.py`` starts its servers (none, plain OpenTelemetry, zenmetry, zenmetry with
``ZENMETRY_DB_SPANS=all``; OTLP/HTTP to a local sink), each run with a small and a large number
of requests under callgrind; the difference divided by the extra requests is the instructions
per request, export thread included (the process ends by flushing every span it made).

Under callgrind a request takes fifty times as long, so whatever the SDK does by the clock would
land in the two runs a different number of times: the periodic metric export (a fixed cost per
minute, nothing per request at any real load) is pushed past the run, and spans are exported
by the batch processor's count (every 512) and at the end, not every 200 ms. And the budget
keeps only the shop's count limits (``BUDGET``): at fifty times its time, every request would
breach ``duration_ms`` and ``db_time_ms`` and export its DB spans as a breaching unit does.

    python benchmarks/instructions.py [--small 50] [--large 250] [--page PATH] [--mode MODE]   # needs valgrind

Uses the database ``overhead.py`` prepares (run it once first, or ``--prepare``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # the same modes, sink and database as the CPU-time benchmark

MODES = ("none", "plain", "zenmetry", "zenmetry-all")
BUDGET = Path(__file__).resolve().parent / "instructions.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--large", type=int, default=250)
    parser.add_argument("--prepare", action="store_true", help="create and seed the database first")
    parser.add_argument("--page", action="append", choices=list(overhead.PAGES), help="only this page (repeatable)")
    parser.add_argument("--mode", action="append", choices=MODES, help="only this mode (repeatable; plain always runs)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.requests)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    if args.prepare:
        overhead.prepare_database()
    overhead.install_plain_distro()
    sink = overhead.Sink()
    per_request: dict[tuple[str, str], int] = {}
    try:
        modes = [mode for mode in MODES if not args.mode or mode in args.mode or mode == "plain"]
        for path in args.page or overhead.PAGES:
            print(f"\n{path} ({overhead.PAGES[path]}): instructions per request (callgrind)")
            for mode in modes:
                counts = [_instructions(mode, path, n, sink) for n in (args.small, args.large)]
                per_request[(mode, path)] = (counts[1] - counts[0]) // (args.large - args.small)
                print(f"  {mode:<14}{per_request[(mode, path)]:>14,}")
            plain = per_request[("plain", path)]
            for mode in modes:
                if mode != "plain":
                    print(f"  {mode} / plain: {per_request[(mode, path)] / plain:.3f}")
    finally:
        sink.close()


def _instructions(mode: str, path: str, requests: int, sink: overhead.Sink) -> int:
    extra, launcher = overhead.MODES[mode]
    command = [sys.executable, __file__, "--serve", path, "--requests", str(requests)]
    if launcher:
        command = [str(overhead.BIN / "opentelemetry-instrument"), *command]
    # This script is the server here: the shop (and the plain distro, for that mode) on its path.
    paths = [str(overhead.SHOP), extra.get("PYTHONPATH", "")]
    env = overhead.exporting_environment(mode, sink, {**extra, "PYTHONPATH": os.pathsep.join(filter(None, paths))})
    # See the docstring: nothing by the clock, no limit on time.
    env.update(OTEL_METRIC_EXPORT_INTERVAL="3600000", OTEL_BSP_SCHEDULE_DELAY="3600000", ZENMETRY_BUDGETS=str(BUDGET))
    result = subprocess.run(
        # The launcher execs the command: follow it (valgrind counts the process it becomes).
        ["valgrind", "--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=/dev/null", *command],
        cwd=overhead.SHOP,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if "could not be sent" in result.stderr:  # zenmetry's exit warning: the count would miss an export
        raise SystemExit(f"{mode}: spans or points left unsent at exit:\n{result.stderr[-2000:]}")
    return sum(int(line.split(":")[-1]) for line in result.stderr.splitlines() if "Collected :" in line)


def _serve(path: str, requests: int) -> None:
    """Inside the measured process: Django's WSGI handler answers ``requests`` GETs of ``path``."""
    from django.test import RequestFactory
    from shop.wsgi import application  # sets Django up (the launcher has instrumented it)

    environ = RequestFactory().get(path).environ

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        if not status.startswith("200"):
            raise SystemExit(f"{path} answered {status}")

    for _ in range(requests):
        response = application(dict(environ), start_response)
        b"".join(response)
        response.close()  # type: ignore[attr-defined]
    # Every span and point exported here, in full, rather than by the exit's bounded flush,
    # which under callgrind can run out of time (and then counts less than was done).
    from opentelemetry import metrics, trace

    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        getattr(provider, "force_flush", lambda: None)()


if __name__ == "__main__":
    main()
