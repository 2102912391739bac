"""Fixtures shared by the whole suite: real PostgreSQL, a MongoDB wire-protocol server, the
OTLP receiver, Celery queues, and the in-process harness built on the real SDK. The helpers
behind them live in ``support/``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

from support import harness as harness_module
from support.harness import Harness
from support.mongo import mongo_server
from support.otlp import Receiver
from support.processes import BIN, PG_DB, ROOT, STARTED, manage, pg_connect, project_env

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zentestapp.settings")

# Property tests explore the same examples on every run, so CI cannot turn red by chance; run
# them with HYPOTHESIS_PROFILE=explore to search further.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, max_examples=300, deadline=None)
hypothesis_settings.register_profile("explore", max_examples=20_000, database=None, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
os.environ.setdefault("ZEN_TEST_PG_DB", PG_DB)


# -- zenmetry's own guard: anything it swallowed fails the test -------------------------


@pytest.fixture(autouse=True)
def swallowed() -> Iterator[list[logging.LogRecord]]:
    """zenmetry's hooks never raise into the application; in its own tests, what they
    swallowed is a failure. A test that provokes one on purpose empties this list."""
    handler = harness_module.Collect()
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


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """A fresh PostgreSQL database with the test project's tables, dropped at the end."""
    try:
        admin = pg_connect()
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is required at 127.0.0.1:5432 (user postgres): {error}")
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}"')
        admin.execute(f'CREATE DATABASE "{PG_DB}"')
    manage("migrate", "--verbosity", "0", env=project_env(ZEN_TEST_DB="postgresql"))
    with pg_connect(PG_DB) as connection:
        connection.execute("INSERT INTO zentestapp_customer (name) SELECT 'c' || i FROM generate_series(1, 50) i")
    yield PG_DB
    with pg_connect() as admin:
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


@pytest.fixture
def raw_receiver() -> Iterator[Receiver]:
    """A receiver that also keeps every request body as it arrived."""
    with Receiver(keep_raw=True) as running:
        yield running


# -- subprocesses ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_process_left_running() -> Iterator[None]:
    """Whatever a failing test left running is killed after it."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def task_queue() -> str:
    return f"zentest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def send(task_queue: str) -> Iterator[object]:
    """Send a task by name to this test's own queue."""
    from zentestapp.celery_app import app

    with app.connection_for_write() as connection:

        def send_task(name: str, *args: object) -> None:
            app.send_task(name, args=list(args), queue=task_queue, connection=connection)

        yield send_task


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery tasks run eagerly, in the calling process (inside the request that sends them)."""
    from zentestapp.celery_app import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(scope="session")
def demo() -> str:
    """What ``make demo`` (``examples/demo.py``) printed, run once: SQLite, a real worker on a
    folder broker, no collector."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# -- the in-process harness ----------------------------------------------------------------


@pytest.fixture(scope="session")
def harness(postgres_db: str, mongo_url: str) -> Iterator[Harness]:
    """Instrument this process once, through zenmetry's distro, with providers of the test's own."""
    os.environ["ZEN_TEST_MONGO_URL"] = mongo_url
    made = harness_module.instrument()
    import django

    django.setup()
    yield made
    _close_mongo_client()


@pytest.fixture
def zen(harness: Harness) -> Iterator[Harness]:
    """The in-process harness, reset for this test (no budget file, fresh metrics)."""
    harness.reset()
    yield harness
    _close_mongo_client()


def _close_mongo_client() -> None:
    """Close the test project's MongoDB client once its test is over: an open client's monitor
    thread sends a heartbeat every 10 s, and pymongo and the stand-in server draw each message's
    request id from the global ``random`` module, which Hypothesis reads as a strategy using it
    (a property test that draws during a heartbeat failed CI with HypothesisDeprecationWarning)."""
    from zentestapp import views

    if views.mongo.cache_info().currsize:
        views.mongo().close()
        views.mongo.cache_clear()
