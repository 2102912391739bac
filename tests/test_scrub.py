"""Nothing exported carries a statement literal, a query parameter or a query-string value."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan

from support.otlp import Receiver
from support.processes import gunicorn
from zenmetry.export._scrub import scrub, strip_query


class TestScrub:
    def test_statements_lose_their_literals(self) -> None:
        span = ReadableSpan(
            "SELECT", attributes={"db.system": "postgresql", "db.statement": "SELECT * FROM t WHERE a = 'x' AND b = 7"}
        )
        assert scrub(span).attributes["db.statement"] == "SELECT * FROM t WHERE a = ? AND b = ?"

    def test_a_bytes_statement_is_scrubbed_as_text(self) -> None:
        """OpenTelemetry exports a bytes attribute as bytes: found by the fuzzer, the literal went out."""
        span = ReadableSpan("SELECT", attributes={"db.system": "mysql", "db.statement": b"SELECT 'secret-42' \xff"})
        assert scrub(span).attributes["db.statement"] == "SELECT ? \ufffd"

    def test_query_strings_lose_their_values(self) -> None:
        span = ReadableSpan(
            "GET",
            attributes={
                "http.target": "/a/?token=abc&page=2",
                "url.query": "q=secret",
                "url.full": "http://h/b?x=1#top",
            },
        )
        assert dict(scrub(span).attributes) == {
            "http.target": "/a/?token=?&page=?",
            "url.query": "q=?",
            "url.full": "http://h/b?x=?#",
        }

    def test_spans_without_them_pass_through_untouched(self) -> None:
        span = ReadableSpan("GET", attributes={"http.route": "a/", "db.statement": "SELECT a FROM t WHERE b = %s"})
        scrubbed = scrub(span)
        assert scrubbed.attributes["db.statement"] == "SELECT a FROM t WHERE b = ?"
        plain = ReadableSpan("GET", attributes={"http.route": "a/"})
        assert scrub(plain) is plain

    def test_strip_query_keeps_paths_without_a_query(self) -> None:
        assert (strip_query("/a/?"), strip_query("/a/?flag")) == ("/a/?", "/a/?flag=?")


class TestExport:
    def test_a_hostile_request_exports_no_literal_parameter_or_query_value(
        self, receiver: Receiver, postgres_db: str
    ) -> None:
        """Raw SQL with a literal, a bound parameter and a secret in the query string: the exported
        spans name the statement's shape and the query's keys, never the values."""
        server = gunicorn(receiver, OTEL_SEMCONV_STABILITY_OPT_IN="http/dup,database/dup")
        status, body = server.get("/raw/?token=hunter2-secret")
        assert (status, body) == (200, b'{"row": ["param-value-7", "sensitive-literal-42"]}')
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 1)
        exported = repr([(s.name, s.attributes, s.events) for s in receiver.spans()])
        for secret in ("sensitive-literal-42", "param-value-7", "hunter2-secret"):
            assert secret not in exported
        (db,) = [s for s in receiver.spans() if s.kind == "CLIENT"]
        assert db.attributes["db.statement"] == "SELECT ?::text, ? FROM zentestapp_customer WHERE id = ?"
        (unit,) = receiver.units()
        assert (unit.attributes["url.query"], unit.attributes["http.target"]) == ("token=?", "/raw/?token=?")

    def test_an_error_exports_its_type_not_its_message(self, receiver: Receiver, postgres_db: str) -> None:
        """A unique violation quotes the duplicate value in its message: the exported status and
        exception events keep the exception's type and frames, never the message."""
        server = gunicorn(receiver)
        assert server.get("/violation/?email=secret-email-5@example.com")[0] == 500
        server.stop()
        receiver.wait(
            lambda r: len(r.units()) == 1 and any(s.status_code == 2 for s in r.spans() if s.kind == "CLIENT")
        )
        exported = repr([(s.name, s.attributes, s.events) for s in receiver.spans()])
        leak = exported.find("secret-email-5@example.com")
        assert leak == -1, exported[max(leak - 400, 0) : leak + 100]
        (failed,) = [s for s in receiver.spans() if s.kind == "CLIENT" and s.status_code == 2]
        (event,) = failed.events_named("exception")
        assert (event["exception.type"], event["exception.message"]) == ("psycopg.errors.UniqueViolation",) * 2
        assert event["exception.stacktrace"].endswith("\npsycopg.errors.UniqueViolation")
