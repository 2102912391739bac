"""What the reliability tests read back from the processes they put under faults: the console
line of every unit, zenmetry's warning at exit, request latencies, exit times, a worker's RSS,
PostgreSQL backends to terminate and a private Redis to restart.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psutil

from support.processes import Server, free_port, pg_connect

Result = TypeVar("Result")

GRACEFUL = ("--graceful-timeout", "30")
"""gunicorn's graceful timeout for these tests: longer than any exit under test, so that an
exit within the bound is zenmetry's doing, never gunicorn killing a lingering worker."""

EXIT_SECONDS = 10.0
"""An exit under a collector fault: zenmetry's flush bound (5 s) and 5 s for gunicorn's master
or Celery's main process on a loaded machine. With the SDK's own exit it took 20.7 s."""

LATENCY_SECONDS = 2.0
"""Every request answers within this while the collector misbehaves: proof that no exporter
thread blocks a request (requests take 10 to 100 ms here; a blocked one would wait 5 s)."""

_CONSOLE = re.compile(r"^zenmetry (http \S+ \S+ \d+|task \S+ \S+) \| queries (\d+)", re.MULTILINE)
# At the start of a line, or after the prefix of Celery's log handler.
_UNSENT = re.compile(r"(?:^|\] )zenmetry: (\d+) spans / (\d+) metric points could not be sent", re.MULTILINE)


def console_units(output: str) -> list[tuple[str, int]]:
    """Each console line's unit (``http GET queries/<int:n>/ 200``) and query count, in order."""
    return [(unit, int(queries)) for unit, queries in _CONSOLE.findall(output)]


def unsent(output: str) -> list[tuple[int, int]]:
    """What each ``zenmetry: N spans / M metric points could not be sent`` warning counted."""
    return [(int(spans), int(points)) for spans, points in _UNSENT.findall(output)]


def timed(call: Callable[[], Result]) -> tuple[Result, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


@dataclass
class Traffic:
    """Requests to ``/queries/<n>/`` of one server: statuses, latencies, and the console lines
    they must give."""

    server: Server
    sent: list[int]
    statuses: list[int]
    seconds: list[float]

    @classmethod
    def to(cls, server: Server) -> Traffic:
        return cls(server, [], [], [])

    def send(self, counts: list[int]) -> None:
        for n in counts:
            (status, _body), seconds = timed(lambda n=n: self.server.get(f"/queries/{n}/"))
            self.sent.append(n)
            self.statuses.append(status)
            self.seconds.append(seconds)

    def expected_console(self) -> list[tuple[str, int]]:
        return [("http GET queries/<int:n>/ 200", n) for n in self.sent]


def stop_timed(server: Server) -> tuple[str, float]:
    """SIGTERM, and the seconds until the process (and everything it started) exited."""
    start = time.monotonic()
    output = server.stop(timeout=60)
    return output, time.monotonic() - start


def worker_rss(server: Server) -> int:
    """The RSS of the one gunicorn worker of ``server``."""
    (worker,) = psutil.Process(server.process.pid).children()
    return int(worker.memory_info().rss)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# -- PostgreSQL ------------------------------------------------------------------------------


def backends_running(dbname: str, query_prefix: str) -> list[int]:
    """Pids of the backends of ``dbname`` (the app's) now running a query starting with ``query_prefix``."""
    with pg_connect() as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' AND query LIKE %s"
            " AND pid <> pg_backend_pid()",
            [dbname, query_prefix + "%"],
        ).fetchall()
    return [row[0] for row in rows]


def terminate(pids: list[int]) -> list[bool]:
    """``pg_terminate_backend`` on each pid (only the app's own backends: the server stays up)."""
    with pg_connect() as admin:
        return [bool(admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]) for pid in pids]


# -- a private Redis -------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free port (the machine's Redis is never touched)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None, "redis-server is required (Debian's redis-server package)"
        self.process = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._ready, f"redis-server on port {self.port}")

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
