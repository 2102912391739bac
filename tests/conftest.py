"""Fixtures shared by the whole suite: real PostgreSQL, a MongoDB wire-protocol server, the
OTLP receiver, real servers under ``opentelemetry-instrument``, and an in-process harness
built on the real SDK.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind
from opentelemetry.util._importlib_metadata import entry_points

from mongo import mongo_server
from otlp import Receiver
from zenmetry import _config
from zenmetry._distro import ZenmetryDistro
from zenmetry._metrics import Instruments
from zenmetry._processor import UnitProcessor
from zenmetry._sampler import AlwaysRecordSampler
from zenmetry._settings import Settings

TESTS = Path(__file__).parent
ROOT = TESTS.parent
BIN = Path(sys.executable).parent
PG_DB = f"zenmetry_test_{os.getpid()}"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zentestapp.settings")

# Property tests explore the same examples on every run, so CI cannot turn red by chance; run
# them with HYPOTHESIS_PROFILE=explore to search further.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, max_examples=300, deadline=None)
hypothesis_settings.register_profile("explore", max_examples=20_000, database=None, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
os.environ.setdefault("ZEN_TEST_PG_DB", PG_DB)


# -- zenmetry's own guard: anything it swallowed fails the test -------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def swallowed() -> Iterator[list[logging.LogRecord]]:
    """zenmetry's hooks never raise into the application; in its own tests, what they
    swallowed is a failure. A test that provokes one on purpose empties this list."""
    handler = _Collect()
    logger = logging.getLogger("zenmetry")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
    if handler.records:
        details = "\n".join(logging.Formatter().format(record) for record in handler.records)
        pytest.fail(f"zenmetry swallowed an internal error:\n{details}")


# -- services -------------------------------------------------------------------------


def _pg(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname=dbname, autocommit=True)


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database with the test project's tables, dropped at the end."""
    try:
        admin = _pg()
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is required at 127.0.0.1:5432 (user postgres): {error}")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        admin.execute(f'CREATE DATABASE "{PG_DB}"')
    manage("migrate", "--verbosity", "0", env=project_env(ZEN_TEST_DB="postgresql"))
    with _pg(PG_DB) as connection:
        connection.execute("INSERT INTO zentestapp_customer (name) SELECT 'c' || i FROM generate_series(1, 50) i")
    yield PG_DB
    with _pg() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("sqlite") / "zentest.sqlite3")
    manage("migrate", "--verbosity", "0", env=project_env(ZEN_TEST_DB="sqlite", ZEN_TEST_SQLITE_PATH=path))
    return path


@pytest.fixture(scope="session")
def mongo_url() -> Iterator[str]:
    with mongo_server() as url:
        yield url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


# -- subprocesses ----------------------------------------------------------------------


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
    """A test-project environment exporting to ``receiver`` quickly."""
    return project_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME="zentest",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRIC_EXPORT_INTERVAL="300",
        OTEL_PYTHON_LOG_LEVEL="warning",
        **extra,
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_STARTED: list[subprocess.Popen[str]] = []
"""Every process a test started; whatever a failing test left running is killed after it."""


@pytest.fixture(autouse=True)
def _no_process_left_running() -> Iterator[None]:
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def track(process: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """Register a process started in its own session (``start_new_session=True``)."""
    _STARTED.append(process)
    return process


@dataclass
class Server:
    """A server process of the test project; ``stop()`` ends it gracefully so it flushes."""

    process: subprocess.Popen[str]
    url: str

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def stop(self, how: signal.Signals = signal.SIGTERM) -> str:
        """Stop gracefully (providers flush at exit); return everything it printed, after
        checking that zenmetry swallowed no internal error in the process."""
        if self.process.poll() is None:
            self.process.send_signal(how)
        try:
            output, _ = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
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


# -- the in-process harness: real SDK, real instrumentations, in-memory exporters --------


@dataclass
class Harness:
    """zenmetry's processor and the real instrumentations in this process, exporting to memory."""

    exporter: InMemorySpanExporter
    processor: UnitProcessor
    reader: InMemoryMetricReader | None = None

    def reset(self, settings: Settings | None = None) -> None:
        """Forget spans; fresh metrics and the given settings for the next test."""
        self.exporter.clear()
        self.processor._findings.clear()
        self.reader = InMemoryMetricReader()
        self.processor.settings = settings or Settings()
        self.processor._instruments = Instruments(MeterProvider(metric_readers=[self.reader]))

    def units(self) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if "zen.unit.kind" in (span.attributes or {})]

    def unit(self) -> ReadableSpan:
        """The one unit span the test produced."""
        (found,) = self.units()
        return found

    def db_spans(self) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.kind is SpanKind.CLIENT and _is_db(span)]

    def metric(self, name: str) -> dict[frozenset[tuple[str, object]], tuple[int | float, float]]:
        """Points of one metric: attributes -> (count, sum) for histograms, (value, value) for counters."""
        assert self.reader is not None
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, object]], tuple[int | float, float]] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        count = getattr(point, "count", None)
                        found[key] = (count, point.sum) if count is not None else (point.value, point.value)
        return found


def _is_db(span: ReadableSpan) -> bool:
    attributes = span.attributes or {}
    return "db.system" in attributes or "db.system.name" in attributes


@pytest.fixture(scope="session")
def harness(postgres_db: str, mongo_url: str) -> Iterator[Harness]:
    """Instrument this process once, through zenmetry's distro, with providers of the test's own."""
    os.environ["ZEN_TEST_MONGO_URL"] = mongo_url
    exporter = InMemorySpanExporter()
    meter_provider = MeterProvider()
    tracer_provider = TracerProvider(sampler=AlwaysRecordSampler(ParentBased(ALWAYS_ON)))
    processor = UnitProcessor(meter_provider=meter_provider)
    tracer_provider.add_span_processor(processor)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    _config.state.processor = processor
    distro = ZenmetryDistro()
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        if entry_point.name in INSTRUMENTED:
            distro.load_instrumentor(entry_point, tracer_provider=tracer_provider, meter_provider=meter_provider)
    import django

    django.setup()
    yield Harness(exporter, processor)
    from zentestapp import views

    if views.mongo.cache_info().currsize:
        views.mongo().close()


@pytest.fixture
def zen(harness: Harness) -> Harness:
    """The in-process harness, reset for this test (no budget file, fresh metrics)."""
    harness.reset()
    return harness


INSTRUMENTED = {"django", "psycopg", "pymongo", "sqlite3", "celery", "requests", "httpx", "urllib3", "urllib"}
