"""The zenmetry demo: the example shop under ``opentelemetry-instrument``, toured view by view.

Embedded defaults (SQLite, no collector): nothing but Python is needed. Every request
prints zenmetry's console line as it happens; the tour ends with a table per route.
With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, everything is also exported there.

    python examples/demo.py
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
SHOP = EXAMPLES / "shop"
BIN = Path(sys.executable).parent

# (path, what it shows, task lines to wait for)
TOUR = [
    ("/orders/1/", "a well-behaved page: 2 queries, within its budget of 2", 0),
    ("/orders/", "N+1: one query for the orders, then one per order for its customer", 0),
    ("/orders/fixed/", "the same page with select_related(): 1 query", 0),
    ("/orders/3/invoice/", "five queries, each one needed", 0),
    ("/catalogue/", "SQL for categories and, with MONGO_URL set, MongoDB for products", 0),
    ("/report/", "a report kept in memory 'for later': the process grows", 0),
    ("/report/", "the same report again: this time zenmetry traces where its memory goes", 0),
    ("/search/", "one statement slower than half a second: its line is named", 0),
    ("/checkout/2/", "the payment provider called while the customer waits, without a timeout", 0),
    ("/checkout/3/background/", "the fixed twin: a task calls the provider, with a timeout", 1),
    ("/stats/rebuild/", "a slow task, over its duration budget", 1),
    ("/stock/sync/", "a failing task: retried twice, then it fails for good", 3),
    ("/orders/3/receipt/", "a Django task builds the receipt in the background; its queue wait is measured", 1),
]
# A management command after the tour: the nightly job is a unit too.
COMMAND = ("remind_unpaid", "a nightly command reads each order's customer one by one (N+1)")

LINE = re.compile(
    r"zenmetry (?P<kind>http|task|command) (?P<head>.+?) \| queries (?P<queries>\d+)(?: \([^)]*\))* \| db (?P<db>[\d.]+) ms"
    r"(?: \| cache [^|]*)? \| mem (?P<mem>[+-][\d.]+) MiB[^|]* \| ext (?P<ext>\d+)[^|]*(?: \| queued [\d.]+ ms)?"
    r" \| (?P<total>[\d.]+) ms(?: \| BREACH (?P<breach>.*))?"
)


@dataclass
class Row:
    """What the tour saw of one route or task."""

    queries: list[int] = field(default_factory=list)
    db_ms: list[float] = field(default_factory=list)
    mem_mib: list[float] = field(default_factory=list)
    external: list[int] = field(default_factory=list)
    breaches: list[str] = field(default_factory=list)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="zenmetry-demo-"))
    env = _environment(workdir)
    print("zenmetry demo: the example shop (SQLite, a Celery worker on a folder broker, a Django task worker) under")
    print("  opentelemetry-instrument, with ZENMETRY_CONSOLE=1 and the budgets of examples/shop/zenmetry.toml")
    print(
        "  exporting to",
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "nowhere (set OTEL_EXPORTER_OTLP_ENDPOINT to export)",
    )
    for command in (["migrate", "--verbosity", "0"], ["seed"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=SHOP, env=env, check=True, capture_output=True)
    port = _free_port()
    launcher = str(BIN / "opentelemetry-instrument")
    web = _start(
        [
            launcher,
            str(BIN / "gunicorn"),
            "shop.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env,
    )
    worker = _start(
        [
            launcher,
            str(BIN / "celery"),
            "-A",
            "shop",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "warning",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    )
    # Django's own tasks: django-tasks-db's worker, polling the shop's database.
    tasks = _start([launcher, sys.executable, "manage.py", "db_worker", "--interval", "0.2", "--no-reload"], env)
    processes = (web, worker, tasks)
    rows: dict[tuple[str, str], Row] = defaultdict(Row)
    task_lines = threading.Semaphore(0)
    readers = [threading.Thread(target=_echo, args=(process, rows, task_lines), daemon=True) for process in processes]
    for reader in readers:
        reader.start()
    try:
        _wait_for(port, web)
        for path, what, tasks in TOUR:
            print(f"\n-> GET {path}  ({what})", flush=True)
            _get(f"http://127.0.0.1:{port}{path}")
            for _ in range(tasks):
                if not task_lines.acquire(timeout=30):
                    raise SystemExit("a task did not run within 30 s")
            time.sleep(0.2)  # let the request's console line arrive before the next heading
        name, what = COMMAND
        print(f"\n-> manage.py {name}  ({what})", flush=True)
        command = _start([launcher, sys.executable, "manage.py", name], env)
        _echo(command, rows, task_lines)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        for reader in readers:
            reader.join(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
    _table(rows)
    return 0


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=SHOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DJANGO_SETTINGS_MODULE="shop.settings",
        SHOP_SQLITE_PATH=str(workdir / "shop.sqlite3"),
        # A broker made of folders: a real Celery worker runs the tasks in the background,
        # with nothing but Python.
        CELERY_BROKER_URL="filesystem://localhost/",
        SHOP_BROKER_FOLDER=str(workdir / "broker"),
        ZENMETRY_CONSOLE="1",
        ZENMETRY_BUDGETS=str(SHOP / "zenmetry.toml"),
        OTEL_SERVICE_NAME=env.get("OTEL_SERVICE_NAME", "shop"),
        PYTHONUNBUFFERED="1",
    )
    if not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        env.setdefault("OTEL_TRACES_EXPORTER", "none")
        env.setdefault("OTEL_METRICS_EXPORTER", "none")
    return env


def _echo(server: subprocess.Popen[str], rows: dict[tuple[str, str], Row], task_lines: threading.Semaphore) -> None:
    """Print zenmetry's lines as they come, and keep the figures of every console line.

    The rest (gunicorn's and Celery's own logs, such as the failing task's traceback) is shown
    only if the process ends badly.
    """
    assert server.stdout is not None
    others: list[str] = []
    for text in server.stdout:
        if not text.startswith("zenmetry"):
            others.append(text)
            continue
        print("   " + text.rstrip(), flush=True)
        match = LINE.fullmatch(text.strip())
        if match is None:
            continue
        head = match["head"].split()
        name = head[1] if match["kind"] == "http" else head[0]  # a task's or a command's name
        row = rows[(match["kind"], name)]
        row.queries.append(int(match["queries"]))
        row.db_ms.append(float(match["db"]))
        row.mem_mib.append(float(match["mem"]))
        row.external.append(int(match["ext"]))
        if match["breach"]:
            row.breaches.extend(part.split()[0] for part in match["breach"].split(", "))
        if match["kind"] == "task":
            task_lines.release()
    if server.wait() not in (0, -signal.SIGTERM):
        print("".join(others), flush=True)


def _table(rows: dict[tuple[str, str], Row]) -> None:
    print("\nper route and task:")
    header = ("kind", "name", "units", "queries p50", "max", "db ms", "mem MiB", "ext", "breaches")
    table = [header]
    for (kind, name), row in sorted(rows.items()):
        table.append(
            (
                kind,
                name,
                str(len(row.queries)),
                f"{statistics.median(row.queries):g}",
                str(max(row.queries)),
                f"{sum(row.db_ms):.1f}",
                f"{sum(row.mem_mib):+.1f}",
                str(sum(row.external)),
                ", ".join(sorted(set(row.breaches))) or "-",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the shop exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the shop did not start within 30 s")


def _get(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
    except urllib.error.HTTPError as error:
        error.read()


if __name__ == "__main__":
    sys.exit(main())
