"""What tracing every round trip costs per statement, on psycopg 3, against its baselines.

Three child processes run the same loop on a real PostgreSQL connection (autocommit off: a
transaction of 5 statements, then COMMIT), in alternating rounds:

- ``none``: no instrumentation;
- ``upstream``: opentelemetry-instrumentation-psycopg alone (its traced cursor factory);
- ``zenmetry``: the instrumentation loaded through zenmetry's distro (class-level tracing,
  BEGIN and COMMIT spans of their own).

All three have the real SDK with a tracer provider and no exporter, so the figure is the
instrumentation's own cost. Printed: CPU microseconds per transaction (median over rounds,
min-max), and the ratios to ``none``. ``upstream`` makes 5 spans per transaction, ``zenmetry``
7 (BEGIN and COMMIT too).

    python benchmarks/round_trips.py [--rounds 7] [--transactions 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, os, sys, time
import psycopg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
mode, n = sys.argv[1], int(sys.argv[2])
provider = TracerProvider()
trace.set_tracer_provider(provider)
if mode == "upstream":
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    PsycopgInstrumentor().instrument(tracer_provider=provider)
elif mode == "zenmetry":
    from opentelemetry.util._importlib_metadata import entry_points
    from zenmetry._distro import ZenmetryDistro
    (entry_point,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "psycopg"]
    ZenmetryDistro().load_instrumentor(entry_point, tracer_provider=provider)
with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres") as connection:
    def run(count):
        for _ in range(count):
            with connection.cursor() as cursor:
                for i in range(5):
                    cursor.execute("SELECT %s", [i])
            connection.commit()
    run(200)  # warm up
    start = time.process_time()
    run(n)
    print(json.dumps((time.process_time() - start) / n * 1e6))
"""
MODES = ("none", "upstream", "zenmetry")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--transactions", type=int, default=2000)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            output = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(args.transactions)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[mode].append(json.loads(output.strip().splitlines()[-1]))
    base = statistics.median(results["none"])
    print(f"CPU us per transaction of 5 statements + COMMIT, {args.rounds} rounds of {args.transactions}:")
    for mode in MODES:
        values = results[mode]
        ratios = [value / base for value in values]
        print(
            f"  {mode:9} {statistics.median(values):8.1f} (min {min(values):.1f}, max {max(values):.1f})"
            f"  ratio {statistics.median(values) / base:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    upstream, zen = statistics.median(results["upstream"]), statistics.median(results["zenmetry"])
    print(
        f"  zenmetry / upstream: {zen / upstream:.2f}; per span: upstream {(upstream - base) / 5:.1f} us,"
        f" zenmetry {(zen - base) / 7:.1f} us"
    )


if __name__ == "__main__":
    main()
