"""A soak: many mixed requests against gunicorn under the launcher, with the collector up, then
down, then back.

The test project (``tests/zentestapp``) is served by one gunicorn worker (gthread, 8 threads)
under ``opentelemetry-instrument`` with zenmetry, exporting OTLP/HTTP to the test suite's
receiver (``tests/support/otlp.py``). 8 client threads send a mix, in equal shares of ten:

- within budget: ``queries/2/`` (2 queries)
- N+1: ``nplusone/`` (12 lookups of one shape; ``repeated_queries`` breached)
- over budget: ``queries/8/`` (8 queries; ``queries = 5`` for that route)
- raising: ``boom/`` (1 query, then an exception: status 500)
- an external call: ``external/requests/ok/`` (with a timeout)
- raw SQL with inlined literals, half of all requests: ``raw-literal/<i>/``, 10,000 distinct
  statement texts (``i`` cycles), more than the statement caches hold (4,096)

The requests run in four quarters, the collector up, down (the receiver refuses connections),
up, down; then it comes back. Printed: every unit exact (the receiver's
metric totals per route against what was sent), the worker's RSS after the first half (warm-up: the statement caches filled, the span queue
full while the collector was down) and at the end,
the statement caches (read inside the worker), and p50/p99 latency with the collector up and
down.

    python benchmarks/soak.py [--requests 100000] [--threads 8]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres); creates and drops ``zenmetry_soak``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import processes  # noqa: E402
from support.external_server import external_server  # noqa: E402
from support.otlp import ANSWER, REFUSE, Receiver  # noqa: E402

DATABASE = "zenmetry_soak"
DISTINCT = 10_000
BUDGETS = """
[http."queries/<int:n>/"]
queries = 5
"""
# (path, route, queries, external calls, status) for each slot of ten; None marks raw SQL.
MIX: list[tuple[str, str, int, int, int] | None] = [
    ("/queries/2/", "queries/<int:n>/", 2, 0, 200),
    None,
    ("/nplusone/", "nplusone/", 12, 0, 200),
    None,
    ("/queries/8/", "queries/<int:n>/", 8, 0, 200),
    None,
    ("/boom/", "boom/", 1, 0, 500),
    None,
    ("/external/requests/ok/?timeout=5", "external/<str:library>/<str:path>/", 0, 1, 200),
    None,
]
RAW = "raw-literal/<int:i>/"


def request_of(k: int) -> tuple[str, str, int, int, int]:
    slot = MIX[k % len(MIX)]
    if slot is None:
        i = (k // 2) % DISTINCT
        return f"/raw-literal/{i}/", RAW, 1, 0, 200
    return slot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    processes.PG_DB = DATABASE
    _prepare_database()
    budget_file = Path(tempfile.mkdtemp(prefix="zen-soak-")) / "zenmetry.toml"
    budget_file.write_text(BUDGETS)
    with Receiver(keep_spans=False) as receiver, external_server() as external:
        server = processes.gunicorn(
            receiver,
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            ZEN_TEST_PG_DB=DATABASE,
            ZEN_TEST_EXTERNAL_URL=external,
            ZENMETRY_BUDGETS=str(budget_file),
        )
        try:
            _soak(server, receiver, args)
        finally:
            server.stop(timeout=60)
    _drop_database()


def _soak(server: processes.Server, receiver: Receiver, args: argparse.Namespace) -> None:
    quarter = args.requests // 4
    latencies: dict[str, list[float]] = {"up": [], "down": []}
    statuses: Counter[int] = Counter()
    rss: list[int] = []
    started = time.monotonic()
    # Up, down, up, down: the first half warms up every bounded structure (the statement caches
    # by the raw statements, the span queue while the collector is down); the second half
    # repeats it, and the worker's RSS is compared at the end of each half.
    for number, (phase, mode) in enumerate([("up", ANSWER), ("down", REFUSE)] * 2):
        receiver.switch(mode)
        _load(server, range(number * quarter, (number + 1) * quarter), args.threads, latencies[phase], statuses)
        if phase == "down":
            rss.append(_worker_rss(server))
    receiver.switch(ANSWER)
    elapsed = time.monotonic() - started
    rss_warm, rss_end = rss
    warm_up = 2 * quarter
    caches = json.loads(_get(server, "/debug/shape-caches/"))
    expected = _expected(4 * quarter)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _totals(receiver, expected) != expected:
        time.sleep(0.5)
    totals = _totals(receiver, expected)

    print(f"\nsoak: {4 * quarter} requests on {args.threads} threads in {elapsed:.0f} s")
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    print(f"  {'route':<38}{'units sent':>12}{'queries sent':>14}{'received':>24}")
    for route, (units, queries, calls) in expected.items():
        got = totals.get(route, (0, 0, 0))
        mark = "exact" if got == (units, queries, calls) else f"MISSING {got}"
        print(f"  {route:<38}{units:>12}{queries:>14}{mark:>24}")
    print(f"  every unit exact: {totals == expected}")
    print(f"  worker RSS: {rss_warm / 2**20:.1f} MiB after {warm_up} requests, {rss_end / 2**20:.1f} MiB at the end")
    print(f"    ({(rss_end - rss_warm) / 2**20:+.1f} MiB; target within 5 MB)")
    for name, info in caches.items():
        print(f"  cache {name}: {info['currsize']} of {info['maxsize']} ({info['hits']} hits, {info['misses']} misses)")
    for phase, values in latencies.items():
        values.sort()
        p50 = statistics.median(values) * 1000
        p99 = values[int(len(values) * 0.99) - 1] * 1000
        print(f"  latency, collector {phase:<4}: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(values)} requests)")


def _load(server: processes.Server, ks: range, threads: int, latencies: list[float], statuses: Counter[int]) -> None:
    lock = threading.Lock()
    port = int(server.url.rsplit(":", 1)[1])
    chunks = [ks[offset::threads] for offset in range(threads)]

    def run(chunk: range) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        seen: Counter[int] = Counter()
        for k in chunk:
            path = request_of(k)[0]
            start = time.monotonic()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                status = -1
            mine.append(time.monotonic() - start)
            seen[status] += 1
        connection.close()
        with lock:
            latencies.extend(mine)
            statuses.update(seen)

    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _expected(requests: int) -> dict[str, tuple[int, int, int]]:
    """Per route: units, queries and external calls sent."""
    found: dict[str, list[int]] = {}
    for k in range(requests):
        _path, route, queries, calls, _status = request_of(k)
        entry = found.setdefault(route, [0, 0, 0])
        entry[0] += 1
        entry[1] += queries
        entry[2] += calls
    return {route: (units, queries, calls) for route, (units, queries, calls) in sorted(found.items())}


def _totals(receiver: Receiver, expected: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
    found = {}
    for route in expected:
        queries = receiver.total("zen.unit.db.queries", zen__unit__name=route, db__system="all")
        calls = receiver.total("zen.unit.external.calls", zen__unit__name=route)
        found[route] = (queries.count, int(queries.sum), int(calls.sum))
    return found


def _get(server: processes.Server, path: str) -> bytes:
    status, body = server.get(path)
    assert status == 200, (status, body)
    return body


def _worker_rss(server: processes.Server) -> int:
    (worker,) = psutil.Process(server.process.pid).children()
    return int(worker.memory_info().rss)


def _prepare_database() -> None:
    with processes.pg_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    processes.manage("migrate", "--verbosity", "0", env=processes.project_env(ZEN_TEST_PG_DB=DATABASE))
    with processes.pg_connect(DATABASE) as connection:
        connection.execute("INSERT INTO zentestapp_customer (name) SELECT 'c' || i FROM generate_series(1, 50) i")


def _drop_database() -> None:
    with processes.pg_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


if __name__ == "__main__":
    main()
