"""Where zenmetry's cost per request goes, in CPU instructions (valgrind's callgrind).

Instruction counts do not depend on what else the machine is doing, so small differences
are measurable on two shared cores. Each piece is run ``--small`` and ``--large`` times under
callgrind and the difference is divided by the number of extra runs:

- ``request``: a unit span with five DB spans on the real SDK, no processor (the baseline);
- ``request+zenmetry``: the same with zenmetry's unit processor, finished as a hook does;
- ``metrics``: recording one unit's metric points (7 for a unit on one DB system);
- ``encode``, ``encode+zen``: OTLP-encoding a Django server span without and with zenmetry's
  13 attributes (the exporter's work, in the exporting thread);
- ``scrub``: removing literals from the statements of five DB spans before export.

    python benchmarks/breakdown.py        # needs valgrind (Debian package)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

PIECES = ["request", "request+zenmetry", "metrics", "encode", "encode+zen", "scrub"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    parser.add_argument("--run", choices=PIECES, help=argparse.SUPPRESS)
    parser.add_argument("--times", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        _run(args.run, args.times)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    print("instructions per run (callgrind):")
    results = {}
    for piece in PIECES:
        small, large = (_instructions(piece, times) for times in (args.small, args.large))
        results[piece] = (large - small) // (args.large - args.small)
        print(f"  {piece:<18}{results[piece]:>12,}")
    print(f"  zenmetry per unit (processor, finish, metrics): {results['request+zenmetry'] - results['request']:,}")
    print(f"  of which metrics: {results['metrics']:,}")
    print(f"  exporting its attributes adds {results['encode+zen'] - results['encode']:,}")
    print(f"  scrubbing five DB spans before export: {results['scrub']:,}")


def _instructions(piece: str, times: int) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--run",
            piece,
            "--times",
            str(times),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [line for line in result.stderr.splitlines() if "Collected :" in line]
    return int(line.split(":")[-1])


def _run(piece: str, times: int) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from zenmetry import outputs
    from zenmetry.config._budgets import Budget
    from zenmetry.config._limits import Limits
    from zenmetry.config._settings import Settings
    from zenmetry.export._scrub import scrub
    from zenmetry.outputs._metrics import Instruments
    from zenmetry.units._figures import Figures, FinishedUnit
    from zenmetry.units._processor import UnitProcessor

    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    point = {"http.request.method": "GET", "http.response.status_code": 200}
    statement = {"db.system": "postgresql", "db.statement": 'SELECT "t"."id" FROM "t" WHERE "t"."id" = %s'}
    django = {
        "http.method": "GET",
        "http.server_name": "shop",
        "http.scheme": "http",
        "net.host.port": 8000,
        "http.host": "shop:8000",
        "http.target": "/orders/3/invoice/",
        "net.peer.ip": "127.0.0.1",
        "http.user_agent": "curl/8",
        "http.flavor": "1.1",
        "http.route": "orders/<int:pk>/invoice/",
        "http.status_code": 200,
    }
    zen = {
        "zen.unit.kind": "http",
        "zen.unit.name": "orders/<int:pk>/invoice/",
        "zen.db.queries": 5,
        "zen.db.duration_ms": 3.2,
        "zen.db.repeated_max": 1,
        "zen.external.calls": 0,
        "zen.external.duration_ms": 0.0,
        "zen.external.no_timeout": 0,
        "zen.memory.rss_delta_bytes": 0,
        "zen.duration_ms": 5.1,
        "zen.budget": "http",
        "zen.db.postgresql.queries": 5,
        "zen.db.postgresql.duration_ms": 3.2,
    }
    figures = Figures(
        kind="http",
        name="orders/<int:pk>/invoice/",
        queries=5,
        db_duration_ms=3.0,
        systems={"postgresql": (5, 3.0)},
        repeated_max=1,
        repetitions=(),
        external_calls=0,
        external_duration_ms=0.0,
        no_timeout=0,
        rss_delta_bytes=0,
        duration_ms=5.0,
    )
    unit = FinishedUnit(figures, point, Budget("http", Limits()), (), 0)
    provider = TracerProvider()
    processor = UnitProcessor(listeners=outputs.listeners(Settings(), meter_provider))
    if piece == "request+zenmetry":
        provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    instruments = Instruments(meter_provider)
    plain_span = tracer.start_span("GET", kind=SpanKind.SERVER, attributes=django)
    plain_span.end()
    zen_span = tracer.start_span("GET", kind=SpanKind.SERVER, attributes={**django, **zen})
    zen_span.end()
    db_spans = []
    for i in range(5):
        attributes = {**statement, "db.statement": f"{statement['db.statement']} AND b = {i}"}
        db_span = tracer.start_span("SELECT", kind=SpanKind.CLIENT, attributes=attributes)
        db_span.end()
        db_spans.append(db_span)
    for _ in range(times):
        if piece == "scrub":
            for db_span in db_spans:
                scrub(db_span)
            continue
        if piece.startswith("request"):
            with tracer.start_as_current_span("GET", kind=SpanKind.SERVER) as span:
                for _ in range(5):
                    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=statement):
                        pass
                processor.finish(span, "orders/<int:pk>/invoice/", point)
        elif piece == "metrics":
            instruments.record(unit)
        else:
            encode_spans([zen_span if piece == "encode+zen" else plain_span]).SerializeToString()


if __name__ == "__main__":
    main()
