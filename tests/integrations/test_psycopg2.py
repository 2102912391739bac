"""psycopg2: one DB span per round trip the application asks for. Real PostgreSQL, the real
instrumentation; Django runs on psycopg2 only when psycopg 3 is hidden, so ``TestOnPsycopg2``
runs these tests (and the driver-neutral ones) again in a process where it is."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan

from support.harness import Harness
from support.processes import ROOT, project_env

ON_PSYCOPG2 = os.environ.get("ZEN_TEST_PG_DRIVER") == "psycopg2"
psycopg2_only = pytest.mark.skipif(not ON_PSYCOPG2, reason="run on psycopg2 by TestOnPsycopg2, in a subprocess")
SCOPE = "opentelemetry.instrumentation.psycopg2"
# The driver-neutral modules, run again on psycopg2.
AGAIN = (
    "tests/integrations/test_psycopg2.py",
    "tests/integrations/test_django_count.py",
    "tests/integrations/test_django.py",
)


def _statements(spans: list[ReadableSpan]) -> list[str]:
    return [str(span.attributes["db.statement"]) for span in spans]


@pytest.fixture
def django_connection(harness: Harness) -> Any:
    """Django's own psycopg2 connection, opened."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection


@pytest.fixture
def raw(harness: Harness) -> Iterator[Any]:
    """A psycopg2 connection the application opens itself, outside Django."""
    import psycopg2
    from django.conf import settings

    database = settings.DATABASES["default"]
    connection = psycopg2.connect(host=database["HOST"], user=database["USER"], dbname=database["NAME"])
    try:
        yield connection
    finally:
        connection.close()


@psycopg2_only
class TestRawCursors:
    @pytest.mark.parametrize("factory", ["RealDictCursor", "NamedTupleCursor", "DictCursor"])
    def test_a_cursor_made_with_a_cursor_factory_is_traced(
        self, zen: Harness, django_connection: Any, factory: str
    ) -> None:
        """``connection.cursor(cursor_factory=...)`` (upstream misses these, contrib #578): each
        execute and executemany is one DB span, and the rows are the factory's own."""
        import psycopg2.extras

        cls = getattr(psycopg2.extras, factory)
        with django_connection.cursor(cursor_factory=cls) as cursor:
            assert type(cursor) is cls
            cursor.execute("SELECT 1 AS one, 2 AS two")
            row = cursor.fetchone()
            cursor.executemany("SELECT %s", [(1,), (2,), (3,)])
        expected = {"RealDictCursor": {"one": 1, "two": 2}, "DictCursor": [1, 2]}.get(factory)
        if factory == "NamedTupleCursor":
            assert (row.one, row.two) == (1, 2)
        else:
            assert (dict(row) if factory == "RealDictCursor" else list(row)) == expected
        assert _statements(zen.db_spans()) == ["SELECT 1 AS one, 2 AS two", "SELECT %s"]
        assert {span.instrumentation_scope.name for span in zen.db_spans()} == {SCOPE}

    def test_a_named_cursor_counts_each_fetch_and_its_close(self, zen: Harness, raw: Any) -> None:
        """A named ``RealDictCursor``: BEGIN, DECLARE, each fetch, each refill of its iteration
        buffer, and CLOSE; the rows are the ones psycopg2 returns uninstrumented."""
        import psycopg2.extras

        cursor = raw.cursor(name="zen_named", cursor_factory=psycopg2.extras.RealDictCursor)
        cursor.itersize = 3
        cursor.execute("SELECT n FROM generate_series(1, 10) n")
        rows = [cursor.fetchone(), *cursor.fetchmany(2)]
        rows += list(cursor)  # 7 rows left, 3 at a time: 4 refills (3, 3, 1, and 0 rows: the end)
        cursor.close()
        raw.rollback()  # psycopg2's own rollback, outside Django: not seen (see the README)
        assert [row["n"] for row in rows] == list(range(1, 11))
        assert _statements(zen.db_spans()) == [
            "BEGIN",
            "SELECT n FROM generate_series(1, 10) n",
            'FETCH FORWARD 1 FROM "zen_named"',
            'FETCH FORWARD 2 FROM "zen_named"',
            *['FETCH FORWARD 3 FROM "zen_named"'] * 4,
            'CLOSE "zen_named"',
        ]

    def test_a_named_cursor_of_the_instrumented_factory_too(self, zen: Harness, raw: Any) -> None:
        """The same on the connection's own (instrumented) cursor class, with scroll: MOVE."""
        cursor = raw.cursor(name="zen_plain")
        cursor.execute("SELECT n FROM generate_series(1, 6) n")
        cursor.scroll(2)
        rows = cursor.fetchall()
        cursor.close()
        raw.rollback()
        assert rows == [(3,), (4,), (5,), (6,)]
        assert _statements(zen.db_spans()) == [
            "BEGIN",
            "SELECT n FROM generate_series(1, 6) n",
            'MOVE ? FROM "zen_plain"',
            'FETCH FORWARD ALL FROM "zen_plain"',
            'CLOSE "zen_plain"',
        ]


@psycopg2_only
class TestTransactions:
    def test_the_begin_psycopg2_sends_is_a_call_of_its_own(self, zen: Harness, raw: Any) -> None:
        """The BEGIN psycopg2 sends in C before the first statement is sent just before it
        instead, with the session's characteristics, in a span that ends before the statement's
        starts; the connection is then in the transaction, as it would be."""
        import psycopg2.extensions

        raw.set_session(isolation_level="SERIALIZABLE", readonly=True)
        with raw.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert raw.status == psycopg2.extensions.STATUS_BEGIN
        assert raw.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        begin, select = sorted(zen.db_spans(), key=lambda span: span.start_time or 0)
        assert _statements([begin, select]) == ["BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", "SELECT 1"]
        assert (begin.end_time or 0) <= (select.start_time or 0)
        with raw.cursor() as cursor:
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone() == ("serializable",)

    def test_a_failing_statement_fails_as_it_would_uninstrumented(self, zen: Harness, raw: Any) -> None:
        """The same error, and the connection left in the same state, with and without zenmetry."""
        import psycopg2.errors

        outcomes = []
        for instrumented in (True, False):
            with contextlib.nullcontext() if instrumented else suppress_instrumentation():
                with pytest.raises(psycopg2.errors.UndefinedTable) as raised, raw.cursor() as cursor:
                    cursor.execute("SELECT * FROM zen_no_such_table")
                outcomes.append((type(raised.value), raw.status, raw.info.transaction_status))
                raw.rollback()
        assert outcomes[0] == outcomes[1]
        assert [span.name for span in zen.db_spans()] == ["BEGIN", "SELECT"]

    def test_django_commits_and_rollbacks_are_calls(self, zen: Harness) -> None:
        """Through Django (the connection's commit and rollback are C methods, seen where Django
        calls them): BEGIN, INSERT, COMMIT and BEGIN, INSERT, ROLLBACK."""
        assert Client().get("/count/block/atomic/").status_code == 200
        assert Client().get("/count/block/rollback/").status_code == 200
        assert [statement.split()[0] for statement in _statements(zen.db_spans())] == [
            *("BEGIN", "INSERT", "COMMIT"),
            *("BEGIN", "INSERT", "ROLLBACK"),
        ]
        assert [unit.attributes["zen.db.queries"] for unit in zen.units()] == [3, 3]


@pytest.mark.skipif(ON_PSYCOPG2, reason="this is the run on psycopg2")
class TestOnPsycopg2:
    def test_the_driver_tests_pass_on_psycopg2(self) -> None:
        """Django on psycopg2 (psycopg 3 hidden), in a process of its own: the psycopg2 tests and
        the driver-neutral ones all pass."""
        env = project_env(ZEN_TEST_PG_DRIVER="psycopg2")
        env.pop("ZEN_TEST_PG_DB")  # the subprocess makes a database of its own
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *AGAIN],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        # Every test ran and passed but TestOnPsycopg2 itself (none skipped for another reason).
        summary = result.stdout.splitlines()[-1]
        assert re.fullmatch(r"\d+ passed, 1 skipped in .*", summary), result.stdout[-2000:]
        assert int(summary.split()[0]) >= 30, summary
