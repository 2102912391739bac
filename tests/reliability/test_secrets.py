"""Nothing secret leaves the process: canaries sent through every channel a backend has never
appear in the raw bytes the OTLP receiver got, traces, metrics and logs alike. gunicorn and a
Celery worker run under ``opentelemetry-instrument``; MongoDB is a wire-protocol server
(``mockupdb``), the external system a local HTTP server."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from support.celery_worker import start_worker
from support.external_server import external_server
from support.otlp import Receiver
from support.processes import Server, gunicorn

CHANNELS = (
    "literal",  # inlined in raw SQL
    "parameter",  # bound to a statement
    "mongo",  # a MongoDB filter value
    "password",  # URL userinfo of an outgoing call: http://user:<canary>@host/
    "outgoing_query",  # an outgoing call's query string
    "outgoing_header",  # an outgoing call's Authorization header
    "task",  # a task's argument, and its result
    "response",  # the response body
    "query",  # the request's query string (a parameter the view ignores)
    "authorization",  # the request's Authorization header
    "cookie",  # the request's Cookie header
    "custom_header",  # a custom request header
    "body",  # the request body
    "error",  # an exception message built from the request's data
    "task_error",  # a failing task's argument and exception message
)
CANARIES = {channel: f"canary-{channel.replace('_', '-')}-{uuid.uuid4().hex[:10]}" for channel in CHANNELS}
OPT_IN = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http/dup,database/dup"}  # both generations of attributes


def _request(server: Server, path: str, query: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{server.url}{path}?{urllib.parse.urlencode(query)}",
        data=body,
        headers={
            "Authorization": f"Bearer {CANARIES['authorization']}",
            "Cookie": f"sessionid={CANARIES['cookie']}",
            "X-Api-Token": CANARIES["custom_header"],
        },
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.usefixtures("postgres_db")
class TestNothingSecretIsExported:
    def test_no_canary_of_any_channel_reaches_the_collector(
        self, mongo_url: str, task_queue: str, send, raw_receiver: Receiver
    ) -> None:
        """A request carrying a canary in each channel, a failing request, a task and a failing
        task: every unit arrives, and no canary is in any byte exported."""
        receiver = raw_receiver
        with external_server() as external:
            worker = start_worker(receiver, task_queue, "--pool", "solo", **OPT_IN)
            server = gunicorn(
                receiver,
                "--workers",
                "1",
                ZEN_TEST_MONGO_URL=mongo_url,
                ZEN_TEST_EXTERNAL_URL=external,
                ZEN_TEST_QUEUE=task_queue,
                **OPT_IN,
            )
            status, answer = _request(server, "/secrets/", dict(CANARIES), CANARIES["body"].encode())
            failed, _ = _request(server, "/secrets/error/", {"error": CANARIES["error"]})
            send("zentestapp.tasks.fails_with", CANARIES["task_error"])
            receiver.wait(lambda r: len(r.units()) == 4, timeout=60)
            server.stop()
            worker.stop()
        assert (status, json.loads(answer), failed) == (
            200,
            {"echo": CANARIES["body"], "token": CANARIES["response"]},
            500,
        )
        units = sorted(unit.attributes["zen.unit.name"] for unit in receiver.units())
        assert units == ["secrets/", "secrets/error/", "zentestapp.tasks.echo", "zentestapp.tasks.fails_with"]
        (secrets,) = [unit for unit in receiver.units() if unit.attributes["zen.unit.name"] == "secrets/"]
        assert (secrets.attributes["zen.db.postgresql.queries"], secrets.attributes["zen.db.mongodb.queries"]) == (1, 1)
        assert secrets.attributes["zen.external.calls"] == 1
        exported = {path: b"".join(bodies) for path, bodies in receiver.raw.items()}
        assert sorted(exported) == ["/v1/metrics", "/v1/traces"]  # zenmetry exports no logs by default
        leaks = {
            channel: path
            for channel, canary in CANARIES.items()
            for path, raw in exported.items()
            if canary.encode() in raw
        }
        assert leaks == {}
        # The channels were exported, without their values.
        traces = exported["/v1/traces"]
        for scrubbed in (
            b"SELECT ?, ?::text FROM zentestapp_customer WHERE id = ?",
            b"http://REDACTED:REDACTED@127.0.0.1:",  # the instrumentation's own redaction of userinfo
            b"/ok?api_key=?",
            b"literal=?&parameter=?&mongo=?",
            b"cannot handle",  # the failing view's source line in its stack trace, not its message
        ):
            assert scrubbed in traces, scrubbed
