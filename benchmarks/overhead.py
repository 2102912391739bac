"""What zenmetry costs, measured in one run against its baselines.

Two pages of the example shop, the invoice page (5 PostgreSQL queries) and the invoices page
(30 queries, within its budget), are served by gunicorn (one sync worker) several ways, started
side by side and measured in alternating rounds:

- ``none``: no instrumentation at all;
- ``plain``: ``opentelemetry-instrument`` with OpenTelemetry's own distro and the same
  instrumentations, exporting OTLP/HTTP (what zenmetry is compared against);
- ``zenmetry``: ``opentelemetry-instrument`` with zenmetry, exporting OTLP/HTTP (healthy
  units' DB spans summarized, the default);
- ``zenmetry-all``: the same with ``ZENMETRY_DB_SPANS=all`` (every DB span exported).

Each instrumented server exports to a local sink of its own, which counts the spans and bytes
it receives, at the SDK's own export schedule (``OTEL_BSP_SCHEDULE_DELAY`` 5 s, what users run).
The servers are pinned to the first core; a client in a separate process, pinned to the second
with the sinks, makes the requests one after another, taking the servers in turn request by
request: whatever else the shared machine does during a round, every server meets it alike (run
one after the other, rounds of the same build moved by a third; in turn, by a few percent). The
figure that matters is the server's CPU time per request (user + system of gunicorn's
processes), whose medians over rounds give the ratios (each round's ratio, min-max, printed
beside them); requests per second are printed too.
Then: the unit processor's own cost per span (micro-benchmark on the real SDK), the cost of
the always-record sampler at a 10 % sampling ratio, and the worker's RSS over a long run in
both export modes.

    python benchmarks/overhead.py [--rounds 15] [--requests 400] [--long 50000] [--schedule-delay 5000]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and network access to PyPI once (it
installs ``opentelemetry-distro`` into ``benchmarks/.plain`` for the ``plain`` server).
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import Process, Queue
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
PLAIN = Path(__file__).resolve().parent / ".plain"
BIN = Path(sys.executable).parent
DATABASE = "zenmetry_bench"
PAGES = {"/orders/3/invoice/": "5 queries", "/invoices/": "30 queries"}
SERVER_CPUS = {0}
CLIENT_CPUS = {1}
OTEL_VERSION = "0.66b1"

# Each mode: the variables it adds to the servers' environment, and whether it starts under the launcher.
MODES: dict[str, tuple[dict[str, str], bool]] = {
    "none": ({}, False),
    "plain": (
        {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator", "PYTHONPATH": str(PLAIN)},
        True,
    ),
    "zenmetry": ({"OTEL_PYTHON_DISTRO": "zenmetry", "OTEL_PYTHON_CONFIGURATOR": "zenmetry"}, True),
    "zenmetry-all": (
        {"OTEL_PYTHON_DISTRO": "zenmetry", "OTEL_PYTHON_CONFIGURATOR": "zenmetry", "ZENMETRY_DB_SPANS": "all"},
        True,
    ),
    "plain@10%": (
        {
            "OTEL_PYTHON_DISTRO": "distro",
            "OTEL_PYTHON_CONFIGURATOR": "configurator",
            "PYTHONPATH": str(PLAIN),
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        True,
    ),
    "zenmetry@10%": (
        {
            "OTEL_PYTHON_DISTRO": "zenmetry",
            "OTEL_PYTHON_CONFIGURATOR": "zenmetry",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        True,
    ),
}


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    sink: Sink
    # Per page: CPU seconds per request and requests per second of each round, the requests
    # made, and the spans and bytes the sink received per request (_count_exports).
    cpu_per_request: dict[str, list[float]] = field(default_factory=dict)
    system_per_request: dict[str, list[float]] = field(default_factory=dict)  # the kernel's part of it
    rps: dict[str, list[float]] = field(default_factory=dict)
    # Per page: the worker's request thread and its other threads (the exporters'), CPU seconds
    # per request of each round.
    request_thread: dict[str, list[float]] = field(default_factory=dict)
    other_threads: dict[str, list[float]] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    spans: dict[str, float] = field(default_factory=dict)
    bytes: dict[str, float] = field(default_factory=dict)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of gunicorn's processes so far: user + system, and system."""
        parent = psutil.Process(self.process.pid)
        total = system = 0.0
        for proc in [parent, *parent.children(recursive=True)]:
            times = proc.cpu_times()
            total += _process_cpu(proc.pid, times.user + times.system)
            system += times.system
        return total, system

    def threads(self) -> tuple[float, float]:
        """CPU seconds so far of the worker's request thread (its main thread: a sync worker
        serves there) and of its other threads together. In clock ticks, from ``/proc``: another
        process's thread clocks cannot be read."""
        worker = self.worker()
        request = others = 0.0
        for thread in worker.threads():
            seconds = thread.user_time + thread.system_time
            if thread.id == worker.pid:
                request += seconds
            else:
                others += seconds
        return request, others

    def worker(self) -> psutil.Process:
        (worker,) = psutil.Process(self.process.pid).children()
        return worker

    def worker_rss(self) -> int:
        return int(self.worker().memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=400, help="requests per server per round")
    parser.add_argument("--long", type=int, default=50_000, help="requests of the RSS run (0 to skip)")
    parser.add_argument(
        "--schedule-delay",
        default="5000",
        help="the batch processor's OTEL_BSP_SCHEDULE_DELAY in ms (default: the SDK's 5000, what users run; "
        "at 200 every process posts five batches a second, whose fixed cost swamps what is measured)",
    )
    args = parser.parse_args()

    prepare_database()
    install_plain_distro()
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, CLIENT_CPUS)  # this process holds the sinks: beside the client
    servers = [
        _start(name, Sink(), {**extra, "OTEL_BSP_SCHEDULE_DELAY": args.schedule_delay}, launcher)
        for name, (extra, launcher) in MODES.items()
    ]
    try:
        for server in servers:
            for path in PAGES:
                _load(server.port, path, 100)  # warm-up: imports, connections, caches
        for round_number in range(args.rounds):
            # Each round takes the servers in turn, request by request (the first one moves on each
            # round): whatever else the machine does during the round, every server meets it alike.
            order = servers[round_number % len(servers) :] + servers[: round_number % len(servers)]
            for path in PAGES:
                requests = args.requests if path == next(iter(PAGES)) else max(args.requests // 4, 50)
                before = [(server.cpu(), server.threads()) for server in order]
                seconds = _load_in_turn([server.port for server in order], path, requests)
                # At a short schedule, the round's last batch of spans is exported and reaches the
                # sink before the CPU time is read (read at once, at 200 ms, the export of up to a
                # fifth of the round's spans went uncounted, most of them plain's). At the SDK's
                # 5 s, a round's last batches are exported in the next round, as in a server that
                # never stops: only the last round's go uncounted.
                time.sleep(0.6)
                for server, (cpu, threads), busy in zip(order, before, seconds, strict=True):
                    after, threads_after = server.cpu(), server.threads()
                    server.request_thread.setdefault(path, []).append((threads_after[0] - threads[0]) / requests)
                    server.other_threads.setdefault(path, []).append((threads_after[1] - threads[1]) / requests)
                    server.cpu_per_request.setdefault(path, []).append((after[0] - cpu[0]) / requests)
                    server.system_per_request.setdefault(path, []).append((after[1] - cpu[1]) / requests)
                    server.rps.setdefault(path, []).append(requests / busy)
                    server.requests[path] = server.requests.get(path, 0) + requests
        _count_exports(servers, int(args.schedule_delay) / 1000)
        by_name = {server.name: server for server in servers}
        for path in PAGES:
            _report(by_name, path, args)
        _micro_benchmark()
        if args.long:
            for name in ("zenmetry", "zenmetry-all"):
                _rss_run(by_name[name], args.long)
    finally:
        for server in servers:
            server.process.send_signal(signal.SIGTERM)
        for server in servers:
            server.process.wait(timeout=30)
            server.sink.close()


def _count_exports(servers: list[Server], schedule: float, requests: int = 100) -> None:
    """Spans and bytes each server exports per request of each page: every batch waiting is
    exported first, then a run of requests, then its last batch."""
    for path in PAGES:
        time.sleep(schedule + 1)
        before = [(server.sink.spans, server.sink.bytes) for server in servers]
        _load_in_turn([server.port for server in servers], path, requests)
        time.sleep(schedule + 1)
        for server, (spans, size) in zip(servers, before, strict=True):
            server.spans[path] = (server.sink.spans - spans) / requests
            server.bytes[path] = (server.sink.bytes - size) / requests


def _report(servers: dict[str, Server], path: str, args: argparse.Namespace) -> None:
    rounds = len(next(iter(servers.values())).cpu_per_request[path])
    print(
        f"\n{path} ({PAGES[path]}), gunicorn 1 sync worker, {rounds} alternating rounds "
        f"of {servers['none'].requests[path] // rounds} requests"
    )
    print(
        f"{'server':<14}{'CPU us/request':>16}{'min-max':>14}{'of it system':>14}{'requests/s':>12}"
        f"{'spans/request':>15}{'bytes/request':>15}"
    )
    cpu = {name: statistics.median(s.cpu_per_request[path]) * 1e6 for name, s in servers.items()}
    system = {name: statistics.median(s.system_per_request[path]) * 1e6 for name, s in servers.items()}
    rps = {name: statistics.median(s.rps[path]) for name, s in servers.items()}
    for name, server in servers.items():
        low, high = min(server.cpu_per_request[path]) * 1e6, max(server.cpu_per_request[path]) * 1e6
        print(
            f"{name:<14}{cpu[name]:>16.0f}{f'{low:.0f}-{high:.0f}':>14}{system[name]:>14.0f}{rps[name]:>12.0f}"
            f"{server.spans[path]:>15.1f}{server.bytes[path]:>15.0f}"
        )
    target = 0.95 if path == next(iter(PAGES)) else 0.92
    ratios = {
        name: [
            z / p
            for z, p in zip(servers[name].cpu_per_request[path], servers["plain"].cpu_per_request[path], strict=True)
        ]
        for name in ("zenmetry", "zenmetry-all")
    }

    def ratio(name: str) -> str:
        # The rounds are paired (the servers answered in turn): the median of their ratios first.
        each = ratios[name]
        return (
            f"{statistics.median(each):.3f} (per round {min(each):.3f}-{max(each):.3f};"
            f" ratio of the medians {cpu[name] / cpu['plain']:.3f})"
        )

    def whole(name: str) -> str:
        # Every round's CPU together: the whole run's ratio, which no single round sways.
        return f"{sum(servers[name].cpu_per_request[path]) / sum(servers['plain'].cpu_per_request[path]):.3f}"

    print(f"zenmetry / plain, CPU per request:          {ratio('zenmetry')} (target <= {target})")
    print(f"zenmetry-all / plain, CPU per request:      {ratio('zenmetry-all')} (target <= 1.05)")
    print(f"the same, all rounds' CPU together:         {whole('zenmetry')} and {whole('zenmetry-all')}")
    print(f"zenmetry / plain, requests per second:      {rps['zenmetry'] / rps['plain']:.3f}")
    print(f"plain / none, throughput by CPU per request: {cpu['none'] / cpu['plain']:.3f}")
    print(
        f"at a 10% sampling ratio, zenmetry / plain:   {cpu['zenmetry@10%'] / cpu['plain@10%']:.3f} "
        "(the always-record sampler keeps every span recording for exact metrics)"
    )
    print("the worker's threads, CPU us/request (median, min-max; clock ticks): the request thread, the others")
    for name in ("plain", "zenmetry", "zenmetry-all"):
        request, others = servers[name].request_thread[path], servers[name].other_threads[path]
        print(
            f"  {name:<14}{statistics.median(request) * 1e6:>8.0f} ({min(request) * 1e6:.0f}-{max(request) * 1e6:.0f})"
            f"{statistics.median(others) * 1e6:>8.0f} ({min(others) * 1e6:.0f}-{max(others) * 1e6:.0f})"
        )


def _micro_benchmark(rounds: int = 11) -> None:
    """The unit processor's own cost per DB span, in alternating rounds (medians of the rounds'
    differences, with their min-max), over two baselines: a provider with no processor, and one
    with a processor that does nothing, the slot plain OpenTelemetry's exporting processor takes
    (zenmetry's takes that slot and passes spans on to the export gate). The
    second difference is what the processor's own work costs, without the SDK's call to it."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import SpanKind

    from zenmetry.export._held_spans import holding
    from zenmetry.units._processor import UnitProcessor

    attributes = {"db.system": "postgresql", "db.statement": 'SELECT "t"."id" FROM "t" WHERE "t"."id" = %s'}

    def per_span(provider: TracerProvider, spans: int = 10_000, held: bool = False) -> float:
        tracer = provider.get_tracer("bench")
        if held:
            tracer = holding(tracer, zenmetry)  # a unit's DB spans held, as by default
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
            start = time.process_time()
            for _ in range(spans):
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=attributes):
                    pass
            return (time.process_time() - start) / spans

    bare, do_nothing, with_zenmetry = TracerProvider(), TracerProvider(), TracerProvider()
    do_nothing.add_span_processor(SpanProcessor())
    zenmetry = UnitProcessor()
    with_zenmetry.add_span_processor(zenmetry)
    for provider in (bare, do_nothing, with_zenmetry):
        per_span(provider)  # warm-up
    per_span(with_zenmetry, held=True)
    bases, over_bare, over_slot, held_over_slot = [], [], [], []
    for _ in range(rounds):
        base, slot, zen = per_span(bare), per_span(do_nothing), per_span(with_zenmetry)
        held = per_span(with_zenmetry, held=True)
        bases.append(base)
        over_bare.append(zen - base)
        over_slot.append(zen - slot)
        held_over_slot.append(held - slot)

    # The processor's two calls alone, on DB spans made beforehand: its code with warm caches.
    processor, tracer = UnitProcessor(), bare.get_tracer("bench")
    direct = []
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as unit:
        processor.on_start(unit)  # type: ignore[arg-type]
        made = []
        for _ in range(10_000):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=attributes) as span:
                made.append(span)
        for _ in range(rounds):
            start = time.process_time()
            for span in made:
                processor.on_start(span)  # type: ignore[arg-type]
                processor.on_end(span)  # type: ignore[arg-type]
            direct.append((time.process_time() - start) / len(made))

    def us(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e6:.2f} us (min-max {min(values) * 1e6:.2f}-{max(values) * 1e6:.2f})"

    print(
        f"\nunit processor, cost per DB span (a span alone: {statistics.median(bases) * 1e6:.2f} us; target <= 1.5 us):"
    )
    print(f"  over a provider with no processor:           {us(over_bare)}")
    print(f"  over one with a do-nothing processor's slot: {us(over_slot)}")
    print(f"  its on_start and on_end alone, spans made beforehand: {us(direct)}")
    print(
        f"  a held DB span (the default in a unit) with the processor, over the SDK's span with a "
        f"do-nothing processor: {us(held_over_slot)}"
    )


def _rss_run(server: Server, requests: int) -> None:
    path = next(iter(PAGES))
    _load(server.port, path, 2_000)
    start = server.worker_rss()
    samples = []
    step = requests // 10
    for _ in range(10):
        _load(server.port, path, step)
        samples.append(server.worker_rss())
    print(
        f"\n{server.name} worker RSS over {requests} requests: {start / 2**20:.1f} MiB -> {samples[-1] / 2**20:.1f} MiB "
        f"(change {(samples[-1] - start) / 2**20:+.1f} MiB, max {(max(samples) - start) / 2**20:+.1f} MiB; target within 5 MB)"
    )


# -- set-up -------------------------------------------------------------------------------


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "ZENMETRY_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="shop.settings",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{DATABASE}",
        ZENMETRY_BUDGETS=str(SHOP / "zenmetry.toml"),
    )
    env.update(extra)
    return env


def exporting_environment(name: str, sink: Sink, extra: dict[str, str]) -> dict[str, str]:
    """``environment()`` for a server of mode ``name`` exporting OTLP/HTTP to ``sink``."""
    defaults = {
        "OTEL_SERVICE_NAME": f"bench-{name}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "5000",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
    }
    return environment(**{**defaults, **extra})


def prepare_database() -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    for command in (["migrate", "--verbosity", "0"], ["seed"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=SHOP, env=environment(), check=True, capture_output=True
        )


def install_plain_distro() -> None:
    if not (PLAIN / "opentelemetry" / "distro").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(PLAIN),
                f"opentelemetry-distro=={OTEL_VERSION}",
            ],
            check=True,
        )


def _start(name: str, sink: Sink, extra: dict[str, str], launcher: bool) -> Server:
    port = _free_port()
    command = [
        str(BIN / "gunicorn"),
        "shop.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--log-level",
        "warning",
    ]
    if launcher:
        command = [str(BIN / "opentelemetry-instrument"), *command]
    env = exporting_environment(name, sink, extra)
    if len(os.sched_getaffinity(0) | SERVER_CPUS) > 1:
        command = ["taskset", "--cpu-list", ",".join(map(str, SERVER_CPUS)), *command]
    process = subprocess.Popen(command, cwd=SHOP, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Server(name, process, port, sink)
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not start")


def _process_cpu(pid: int, ticks: float) -> float:
    """The CPU seconds of process ``pid``, all its threads, from its CPU clock: Linux lets any
    process read another's, to the nanosecond (the clock id is clock_getcpuclockid's, made as
    glibc makes it). ``ticks``, psutil's figure, counts in clock ticks of 10 ms: a round of 1.5 s
    read that way moves by up to 1.3 % from its two readings alone. Used where the clock cannot
    be read."""
    try:
        return time.clock_gettime((~pid << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except (OSError, OverflowError):
        return ticks


def _load(port: int, path: str, requests: int) -> float:
    """Make ``requests`` requests from a separate process; return the wall time they took."""
    (seconds,) = _load_in_turn([port], path, requests)
    return seconds


def _load_in_turn(ports: list[int], path: str, requests: int) -> list[float]:
    """Make ``requests`` requests to each server from a separate process, taking the servers in
    turn; return the wall time each server took to answer its requests."""
    queue: Queue[list[float]] = Queue()
    client = Process(target=_client, args=(ports, path, requests, queue))
    client.start()
    seconds = queue.get()
    client.join()
    return seconds


def _client(ports: list[int], path: str, requests: int, queue: Queue[list[float]]) -> None:
    seconds = [0.0] * len(ports)
    for _ in range(requests):
        for index, port in enumerate(ports):
            start = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"{path} answered {response.status}")
            connection.close()
            seconds[index] += time.perf_counter() - start
    queue.put(seconds)


class Sink:
    """An OTLP/HTTP endpoint that counts and discards, standing where the collector would."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/traces":
                    request = ExportTraceServiceRequest.FromString(body)
                    sink.bytes += len(body)
                    sink.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
