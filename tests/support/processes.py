"""Processes of the test project: its environment, servers started under
``opentelemetry-instrument``, and the bookkeeping that kills whatever a failing test left running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from support.otlp import Receiver, Span

TESTS = Path(__file__).parent.parent
ROOT = TESTS.parent
BIN = Path(sys.executable).parent
PG_DB = f"zenmetry_test_{os.getpid()}"


def pg_connect(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname=dbname, autocommit=True)


def project_env(**extra: str) -> dict[str, str]:
    """The environment of a test-project process: this venv, the project on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "ZENMETRY_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(TESTS),
        DJANGO_SETTINGS_MODULE="zentestapp.settings",
        ZEN_TEST_PG_DB=PG_DB,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def otel_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    """A test-project environment exporting to ``receiver`` quickly.

    Every DB span is exported (``ZENMETRY_DB_SPANS=all``) unless a test asks for the default:
    most tests check the DB spans themselves; ``test_summary.py`` checks the summarizing."""
    return project_env(
        **{
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "zentest",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "OTEL_PYTHON_LOG_LEVEL": "warning",
            "ZENMETRY_DB_SPANS": "all",
            **extra,
        }
    )


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "django", *args],
        env=env,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def instrumented_command(receiver: Receiver, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python -m django <args>``, exporting to ``receiver``, to its end."""
    return subprocess.run(
        [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "-m", "django", *args],
        env=otel_env(receiver, **env),
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


STARTED: list[subprocess.Popen[str]] = []
"""Every process a test started; whatever a failing test left running is killed after it."""


def track(process: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """Register a process started in its own session (``start_new_session=True``)."""
    STARTED.append(process)
    return process


@dataclass
class Server:
    """A server process of the test project; ``stop()`` ends it gracefully so it flushes.

    What it prints is read as it comes (a full pipe would block it) and kept in ``lines``.
    """

    process: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def output(self) -> str:
        """Everything it printed so far."""
        return "".join(self.lines)

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 30) -> str:
        """Stop gracefully (providers flush at exit); return everything it printed, after
        checking that zenmetry swallowed no internal error in the process."""
        if self.process.poll() is None:
            self.process.send_signal(how)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        assert self.reader is not None
        self.reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        output = self.output()
        assert_no_internal_error(output)
        return output


def assert_no_internal_error(output: str) -> None:
    """What a subprocess printed holds no error zenmetry's guard swallowed."""
    assert "zenmetry: internal error" not in output, output


def start_server(command: list[str], env: dict[str, str], port: int) -> Server:
    """Start ``command`` (which listens on ``port``) and wait until it accepts connections."""
    process = track(
        subprocess.Popen(
            command,
            env=env,
            cwd=TESTS,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    )
    server = Server(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{command[0]} exited with {process.returncode}:\n{server.stop()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        raise AssertionError(f"{command} did not listen on {port}:\n{server.stop()}")
    return server


def gunicorn(receiver: Receiver, *args: str, app: str = "zentestapp.wsgi", **env: str) -> Server:
    """``opentelemetry-instrument gunicorn <app>``, exporting to ``receiver``."""
    port = free_port()
    command = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "gunicorn"),
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        *args,
    ]
    return start_server(command, otel_env(receiver, **env), port)


def path_of(span: Span) -> str:
    return str(span.attributes.get("url.path") or span.attributes.get("http.target"))


def uvicorn(receiver: Receiver, **env: str) -> Server:
    """``opentelemetry-instrument uvicorn zentestapp.asgi:application``, exporting to ``receiver``."""
    port = free_port()
    command = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"),
        "zentestapp.asgi:application",
        "--port",
        str(port),
        "--no-access-log",
    ]
    return start_server(command, otel_env(receiver, **env), port)


def leave_mid_stream(server: Server, path: str, read: int) -> int:
    """GET ``path``, read ``read`` bytes of the body, then close the connection: a client that
    goes away in the middle of a streamed response. Returns the bytes read."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        got = 0
        while got < read:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += len(chunk)
        # RST rather than FIN: the server's next write fails at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return got
