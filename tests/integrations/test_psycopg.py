"""psycopg 3: one DB span per round trip the application asks for, every connection left as
the application made it. Real PostgreSQL, the real instrumentation, in this process."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan

from support.harness import Harness
from zenmetry.export._scrub import scrub

pytestmark = pytest.mark.skipif(
    os.environ.get("ZEN_TEST_PG_DRIVER") == "psycopg2", reason="psycopg 3 is hidden on this run"
)
SCOPE = "opentelemetry.instrumentation.psycopg"


def _statements(spans: list[ReadableSpan]) -> list[str]:
    return [str(span.attributes["db.statement"]) for span in spans]


def _first_words(spans: list[ReadableSpan]) -> list[str]:
    return [statement.split()[0] for statement in _statements(spans)]


@pytest.fixture
def raw(harness: Harness) -> Iterator[Any]:
    """A psycopg 3 connection the application opens itself, outside Django (autocommit off)."""
    import psycopg
    from django.conf import settings

    database = settings.DATABASES["default"]
    with psycopg.connect(host=database["HOST"], user=database["USER"], dbname=database["NAME"]) as connection:
        yield connection


class TestConnectionLeftAsMade:
    """What Django's own suite checks (``test_connect_custom_cursor_factory``,
    ``test_connect_server_side_binding``), which fail under the bare instrumentation."""

    def _connect(self, **options: object) -> Any:
        from django.db import connection

        new = connection.copy()
        new.settings_dict["OPTIONS"] = {**new.settings_dict["OPTIONS"], **options}
        new.connect()
        return new

    def test_a_custom_cursor_factory_is_the_one_the_connection_has(self, zen: Harness) -> None:
        """``OPTIONS["cursor_factory"]`` is the connection's ``cursor_factory``, and its statements
        are still DB spans."""
        from django.db.backends.postgresql.base import Cursor

        class MyCursor(Cursor):  # type: ignore[misc, valid-type]
            pass

        new = self._connect(cursor_factory=MyCursor)
        try:
            assert new.connection.cursor_factory is MyCursor
            with new.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert type(cursor.cursor) is MyCursor
        finally:
            new.close()
        assert _statements(zen.db_spans()) == ["SELECT 1"]

    def test_server_side_binding_keeps_its_cursor_class(self, zen: Harness) -> None:
        """``OPTIONS["server_side_binding"]``: the connection's factory is Django's
        ``ServerBindingCursor``, and its statements are still DB spans."""
        from django.db.backends.postgresql.base import ServerBindingCursor

        new = self._connect(server_side_binding=True)
        try:
            assert new.connection.cursor_factory is ServerBindingCursor
            with new.cursor() as cursor:
                cursor.execute("SELECT %s", [1])
        finally:
            new.close()
        assert _statements(zen.db_spans()) == ["SELECT %s"]

    def test_a_raw_connection_keeps_the_factory_it_was_given(self, zen: Harness, raw: Any) -> None:
        """``psycopg.connect(cursor_factory=...)`` outside Django: the same class, read back and
        instantiated; its statements are DB spans."""
        import psycopg

        with psycopg.connect(raw.info.dsn, cursor_factory=psycopg.ClientCursor, autocommit=True) as connection:
            assert connection.cursor_factory is psycopg.ClientCursor
            cursor = connection.cursor()
            assert type(cursor) is psycopg.ClientCursor
            cursor.execute("SELECT 1")
            cursor.executemany("SELECT %s", [(1,), (2,)])
        assert _first_words(zen.db_spans()) == ["SELECT", "SELECT"]


class TestTransactions:
    def test_begin_and_commit_are_calls_of_their_own_whose_times_add_up(self, zen: Harness) -> None:
        """``atomic()`` around an INSERT: BEGIN, INSERT, COMMIT, one after the other, none inside
        another; the unit's DB time is the sum of the three."""
        assert Client().get("/count/block/atomic/").status_code == 200
        spans = sorted(zen.db_spans(), key=lambda span: span.start_time or 0)
        assert _first_words(spans) == ["BEGIN", "INSERT", "COMMIT"]
        for earlier, later in itertools.pairwise(spans):
            assert (earlier.end_time or 0) <= (later.start_time or 0)
        durations = [((span.end_time or 0) - (span.start_time or 0)) / 1e6 for span in spans]
        assert all(duration > 0 for duration in durations)
        unit = zen.unit().attributes
        assert unit["zen.db.queries"] == 3
        assert unit["zen.db.duration_ms"] == pytest.approx(sum(durations), abs=0.01)
        assert unit["zen.db.slowest_ms"] == pytest.approx(max(durations), abs=0.01)

    def test_a_raw_connection_counts_its_transactions_too(self, zen: Harness, raw: Any) -> None:
        """On a connection of the application's own: the implicit BEGIN, commit(), rollback(),
        and ``transaction()``'s savepoints; a commit with nothing to commit sends nothing."""
        raw.execute("SELECT 1")
        raw.commit()
        raw.commit()  # nothing to commit: no round trip
        raw.execute("SELECT 2")
        raw.rollback()
        with raw.transaction():
            raw.execute("SELECT 3")
            with raw.transaction():
                raw.execute("SELECT 4")
        assert _statements(zen.db_spans()) == [
            *("BEGIN", "SELECT 1", "COMMIT"),
            *("BEGIN", "SELECT 2", "ROLLBACK"),
            *("BEGIN", "SELECT 3", 'SAVEPOINT "_pg3_2"', "SELECT 4", 'RELEASE "_pg3_2"', "COMMIT"),
        ]

    def test_a_failing_statement_fails_as_it_would_uninstrumented(self, zen: Harness, raw: Any) -> None:
        """The same error, and the transaction left in the same state, with and without zenmetry."""
        import psycopg

        outcomes = []
        for instrumented in (True, False):
            with suppress_instrumentation() if not instrumented else contextlib.nullcontext():
                with pytest.raises(psycopg.errors.UndefinedTable) as raised:
                    raw.execute("SELECT * FROM zen_no_such_table")
                outcomes.append((type(raised.value), raw.info.transaction_status))
                raw.rollback()
        assert outcomes[0] == outcomes[1] == (psycopg.errors.UndefinedTable, psycopg.pq.TransactionStatus.INERROR)
        failed = [span for span in zen.db_spans() if span.status.status_code.name == "ERROR"]
        assert _first_words(failed) == ["SELECT"]
        assert _first_words(zen.db_spans()) == ["BEGIN", "SELECT", "ROLLBACK"]


class TestServerSideCursors:
    def test_each_fetch_move_and_close_is_a_call(self, zen: Harness, raw: Any) -> None:
        """A named cursor: its DECLARE, every fetch and scroll, and its CLOSE, in order; the rows
        are the ones an uninstrumented cursor returns."""
        with raw.cursor(name="zen_named") as cursor:
            cursor.execute("SELECT generate_series(1, 10)")
            rows = [cursor.fetchone(), *cursor.fetchmany(3)]
            cursor.scroll(2)
            rows += cursor.fetchall()
        raw.commit()
        assert [row[0] for row in rows if row] == [1, 2, 3, 4, 7, 8, 9, 10]
        assert _statements(zen.db_spans()) == [
            "BEGIN",
            "SELECT generate_series(1, 10)",  # DECLARE: the span carries the application's query
            'FETCH FORWARD 1 FROM "zen_named"',
            'FETCH FORWARD 3 FROM "zen_named"',
            'MOVE 2 FROM "zen_named"',
            'FETCH FORWARD ALL FROM "zen_named"',
            'CLOSE "zen_named"',
            "COMMIT",
        ]

    def test_a_reused_named_cursor_closes_before_declaring_again(self, zen: Harness, raw: Any) -> None:
        """Executing a named cursor a second time closes the first one first: CLOSE, then DECLARE,
        each its own call (not one inside the other)."""
        with raw.cursor(name="zen_again") as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT 2")
            assert cursor.fetchall() == [(2,)]
        raw.commit()
        spans = sorted(zen.db_spans(), key=lambda span: span.start_time or 0)
        assert _statements(spans) == [
            *("BEGIN", "SELECT 1", 'CLOSE "zen_again"', "SELECT 2"),
            *('FETCH FORWARD ALL FROM "zen_again"', 'CLOSE "zen_again"', "COMMIT"),
        ]
        for earlier, later in itertools.pairwise(spans):
            assert (earlier.end_time or 0) <= (later.start_time or 0)

    def test_what_is_exported_of_them_holds_no_literal(self, zen: Harness, raw: Any) -> None:
        """Closing a named cursor never executed looks it up by name, a literal: the export guard
        removes it, as from any statement."""
        raw.autocommit = True
        raw.cursor(name="zen_secret_name", withhold=True).close()
        (span,) = zen.db_spans()
        assert span.attributes["db.statement"] == ("SELECT 1 FROM pg_catalog.pg_cursors WHERE name = 'zen_secret_name'")
        assert "zen_secret_name" not in str(scrub(span).attributes["db.statement"])


class TestSpans:
    def test_the_new_calls_carry_the_instrumentations_attributes(self, zen: Harness, raw: Any) -> None:
        """BEGIN, FETCH and COMMIT spans have the name, kind, scope and attributes the
        instrumentation gives a statement's span on the same connection."""
        with raw.cursor(name="zen_attributes") as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        raw.commit()
        spans = {span.name: span for span in zen.db_spans()}
        assert set(spans) == {"BEGIN", "SELECT", "FETCH", "CLOSE", "COMMIT"}
        statement = {key: value for key, value in spans["SELECT"].attributes.items() if key != "db.statement"}
        assert statement["db.system"] == "postgresql"
        for span in spans.values():
            assert span.kind.name == "CLIENT"
            assert span.instrumentation_scope.name == SCOPE
            assert {key: value for key, value in span.attributes.items() if key != "db.statement"} == statement

    def test_each_connection_has_its_own_attributes(self, zen: Harness, raw: Any) -> None:
        """Two connections open at once, to two databases by two host names: each statement's
        span names its own connection's (the integration of each is a copy of one template)."""
        import psycopg
        from django.conf import settings

        raw.execute("SELECT 0")  # the raw connection's attributes are taken first
        with psycopg.connect(host="localhost", user="postgres", dbname="postgres") as other:
            other.execute("SELECT 1")
            raw.execute("SELECT 2")
        found = [
            (span.attributes["db.statement"], span.attributes["db.name"], span.attributes["net.peer.name"])
            for span in zen.db_spans()
        ]
        name, host = settings.DATABASES["default"]["NAME"], settings.DATABASES["default"]["HOST"]
        assert host != "localhost"
        assert [row for row in found if row[0].startswith("SELECT")] == [
            ("SELECT 0", name, host),
            ("SELECT 1", "postgres", "localhost"),
            ("SELECT 2", name, host),
        ]


class TestAsync:
    def test_an_async_connection_in_an_async_view_counts_every_round_trip(self, zen: Harness) -> None:
        """psycopg 3's ``AsyncConnection`` in an async view: 3 statements, a transaction and a
        named cursor's DECLARE, 2 FETCH and CLOSE are the request's 10 DB calls, and the
        connection's cursor factory is psycopg's own. Outside Django, the statements executed
        are the queries (5: the 3, the transaction's SELECT, the DECLARE); the DB calls and the
        cursor's DESCRIBE the round trips (11)."""
        response = Client().get("/count/raw-async/3/")
        assert response.json() == {"rows": 5, "factory": "AsyncCursor"}
        assert (zen.unit().attributes["zen.db.queries"], zen.unit().attributes["zen.db.round_trips"]) == (5, 11)
        assert zen.unit().attributes["zen.db.postgresql.queries"] == 5
        assert _statements(zen.db_spans()) == [
            *("SELECT %s", "SELECT %s", "SELECT %s"),
            *("BEGIN", "SELECT 1", "COMMIT"),
            "SELECT generate_series(1, 5)",
            *('FETCH FORWARD 3 FROM "zen_async"', 'FETCH FORWARD ALL FROM "zen_async"', 'CLOSE "zen_async"'),
        ]
