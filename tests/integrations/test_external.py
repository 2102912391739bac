"""External calls: counted and timed per library, missing timeouts reported and filled in,
foreground calls against the budget, and database connections without timeouts."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from django.test import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from support.budgets import write
from support.external_server import external_server
from support.harness import Harness
from support.otlp import Receiver
from support.processes import free_port, gunicorn
from support.source import VIEWS, site
from zenmetry.config._budgets import Budgets
from zenmetry.config._settings import Settings
from zenmetry.integrations.django import check_databases
from zenmetry.integrations.pymongo import check_mongo_client
from zenmetry.units._no_timeout import Finding

LIBRARIES = ["requests", "httpx", "httpx-async", "urllib3", "urllib"]
# What each library raises when its own read timeout expires.
TIMEOUT_ERRORS = {
    "requests": "requests.exceptions.ReadTimeout",
    "httpx": "httpx.ReadTimeout",
    "httpx-async": "httpx.ReadTimeout",
    "urllib3": "urllib3.exceptions.ReadTimeoutError",
    "urllib": "builtins.TimeoutError",
}
NO_TIMEOUT_EVENT = ("zen.external.no_timeout", {"http.request.method": "GET", "server.address": "127.0.0.1"})


@pytest.fixture(scope="session")
def external_url() -> Iterator[str]:
    with external_server() as url:
        os.environ["ZEN_TEST_EXTERNAL_URL"] = url
        yield url


def external_spans(zen: Harness) -> list[ReadableSpan]:
    return [
        span
        for span in zen.exporter.get_finished_spans()
        if span.kind is SpanKind.CLIENT and ({"http.method", "http.request.method"} & set(span.attributes or {}))
    ]


def events(span: ReadableSpan, name: str) -> list[tuple[str, dict[str, object]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events if event.name == name]


CALLS = {
    "requests": site(VIEWS, "requests.get(url, timeout=timeout).status_code if timeout", "_call"),
    "httpx": site(VIEWS, "return client.get(url).status_code", "_call"),
    "httpx-async": site(VIEWS, "return (await client.get(url)).status_code", "_call.<locals>.get"),
    "urllib3": site(VIEWS, 'pool.request("GET", url, timeout=timeout) if timeout', "_call"),
    "urllib": site(VIEWS, "with urllib.request.urlopen(url, timeout=timeout) if timeout", "_call"),
}
"""The line of the test app that makes each library's call: the call site of a missing timeout."""


@pytest.mark.usefixtures("external_url")
@pytest.mark.parametrize("library", LIBRARIES)
class TestEachLibrary:
    def test_a_call_is_an_external_call_of_its_request(self, zen: Harness, library: str) -> None:
        """One call of 0.2 s with a timeout: counted, timed, not reported."""
        assert Client().get(f"/external/{library}/slow/?timeout=3").json()["outcomes"] == ["200"]
        attributes = zen.unit().attributes
        assert (
            attributes["zen.external.calls"],
            attributes["zen.external.no_timeout"],
            attributes["zen.db.queries"],
        ) == (1, 0, 0)
        assert 200 <= attributes["zen.external.duration_ms"] < attributes["zen.duration_ms"]
        (call,) = external_spans(zen)
        assert events(call, "zen.external.no_timeout") == []
        ((count, calls),) = zen.metric("zen.unit.external.calls").values()
        assert (count, calls) == (1, 1)

    def test_a_call_without_a_timeout_is_reported_on_its_span(self, zen: Harness, library: str) -> None:
        Client().get(f"/external/{library}/ok/")
        attributes = zen.unit().attributes
        assert (attributes["zen.external.calls"], attributes["zen.external.no_timeout"]) == (1, 1)
        (call,) = external_spans(zen)
        name, attributes = NO_TIMEOUT_EVENT
        assert events(call, "zen.external.no_timeout") == [(name, {**attributes, **CALLS[library]})]

    def test_the_configured_timeout_cuts_a_hanging_call(self, zen: Harness, library: str) -> None:
        """ZENMETRY_HTTP_TIMEOUT=0.5: a server that never answers in time raises the library's own
        timeout exception, as if the caller had passed the timeout itself."""
        zen.reset(Settings(http_timeout=0.5))
        answer = Client().get(f"/external/{library}/hang/").json()
        assert answer["outcomes"] == [TIMEOUT_ERRORS[library]]
        assert answer["seconds"] < 1.0
        assert zen.unit().attributes["zen.external.no_timeout"] == 1

    def test_a_call_with_its_own_timeout_keeps_it(self, zen: Harness, library: str) -> None:
        """Its own 3 s outlasts a 1 s answer that ZENMETRY_HTTP_TIMEOUT=0.5 would have cut."""
        zen.reset(Settings(http_timeout=0.5))
        assert Client().get(f"/external/{library}/slow1/?timeout=3").json()["outcomes"] == ["200"]
        assert zen.unit().attributes["zen.external.no_timeout"] == 0


@pytest.mark.usefixtures("external_url")
class TestUrllib3Timeouts:
    @pytest.mark.parametrize(("library", "reported"), [("urllib3-total", 0), ("urllib3-connect-only", 1)])
    def test_a_total_timeout_counts_and_a_connect_timeout_alone_does_not(
        self, zen: Harness, library: str, reported: int
    ) -> None:
        """``Timeout(total=3)`` bounds the read; ``Timeout(connect=2)`` leaves it unbounded."""
        assert Client().get(f"/external/{library}/ok/").json()["outcomes"] == ["200"]
        assert zen.unit().attributes["zen.external.no_timeout"] == reported


@pytest.mark.usefixtures("external_url")
class TestForeground:
    def test_one_external_call_in_a_request_breaches_external_calls_zero(self, zen: Harness, tmp_path: Path) -> None:
        zen.reset(Settings(budgets=Budgets.from_file(write(tmp_path, "[http]\nexternal_calls = 0\n"))))
        Client().get("/external/requests/ok/?timeout=3")
        unit = zen.unit()
        assert events(unit, "zen.budget.breach") == [
            (
                "zen.budget.breach",
                {"zen.limit": "external_calls", "zen.limit.value": 0, "zen.actual": 1, "zen.budget": "http"},
            )
        ]

    def test_a_task_making_ten_calls_stays_within_the_task_table(
        self, zen: Harness, tmp_path: Path, external_url: str
    ) -> None:
        from zentestapp.tasks import calls

        zen.reset(
            Settings(
                budgets=Budgets.from_file(write(tmp_path, "[http]\nexternal_calls = 0\n[task]\nexternal_calls = 10\n"))
            )
        )
        calls.apply(args=[f"{external_url}/ok", 10])
        attributes = zen.unit().attributes
        assert (attributes["zen.unit.kind"], attributes["zen.external.calls"], attributes["zen.budget"]) == (
            "task",
            10,
            "task",
        )
        assert "zen.budget.breached" not in attributes

    def test_the_console_line_shows_calls_without_a_timeout(
        self, zen: Harness, capfd: pytest.CaptureFixture[str]
    ) -> None:
        zen.reset(Settings(console=True))
        Client().get("/external/urllib/ok/?count=2")
        (line,) = capfd.readouterr().err.splitlines()
        where = CALLS["urllib"]
        assert f" | ext 2 (2 without timeout at {where['code.file.path']}:{where['code.line.number']} _call) | " in line


class TestDatabaseTimeouts:
    @pytest.mark.parametrize(
        ("database", "missing"),
        [
            (
                {"ENGINE": "django.db.backends.postgresql", "OPTIONS": {}},
                (
                    "connect timeout (OPTIONS['connect_timeout'])",
                    "statement timeout (OPTIONS['options'] = '-c statement_timeout=5000')",
                ),
            ),
            (
                {"ENGINE": "django.db.backends.postgresql", "OPTIONS": {"connect_timeout": 5}},
                ("statement timeout (OPTIONS['options'] = '-c statement_timeout=5000')",),
            ),
            (
                {
                    "ENGINE": "django.db.backends.postgresql",
                    "OPTIONS": {"connect_timeout": 5, "options": "-c statement_timeout=2000"},
                },
                (),
            ),
            (
                {"ENGINE": "django.db.backends.mysql", "OPTIONS": {"connect_timeout": 5}},
                ("read timeout (OPTIONS['read_timeout'])",),
            ),
            ({"ENGINE": "django.db.backends.sqlite3"}, ()),
        ],
    )
    def test_django_databases_without_timeouts_are_found(
        self, database: dict[str, object], missing: tuple[str, ...]
    ) -> None:
        found = check_databases({"default": database}, environ={})
        system = str(database["ENGINE"]).rsplit(".", 1)[-1]
        assert found == ([Finding(system, "Django database 'default'", missing)] if missing else [])

    def test_libpq_environment_variables_count(self) -> None:
        database = {"ENGINE": "django.db.backends.postgresql"}
        assert (
            check_databases(
                {"x": database}, environ={"PGCONNECT_TIMEOUT": "5", "PGOPTIONS": "-c statement_timeout=1000"}
            )
            == []
        )

    @pytest.mark.parametrize(
        ("options", "missing"),
        [
            ("", ("serverSelectionTimeoutMS (the default waits 30 s for a server)", "socketTimeoutMS")),
            ("?serverSelectionTimeoutMS=2000", ("socketTimeoutMS",)),
            ("?serverSelectionTimeoutMS=2000&socketTimeoutMS=2000", ()),
            ("?timeoutMS=2000", ()),
        ],
    )
    def test_mongo_clients_without_timeouts_are_found(self, options: str, missing: tuple[str, ...]) -> None:
        with pymongo.MongoClient(f"mongodb://127.0.0.1:27999/{options}", connect=False) as client:
            finding = check_mongo_client(client)
        assert finding == (Finding("mongodb", "MongoClient(127.0.0.1:27999)", missing) if missing else None)

    def test_a_client_without_timeouts_is_reported_once_and_on_the_next_unit(
        self, zen: Harness, caplog: pytest.LogCaptureFixture
    ) -> None:
        port = free_port()
        with caplog.at_level(logging.WARNING, logger="zenmetry"):
            for _ in range(2):
                pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", connect=False).close()
        assert [record.getMessage() for record in caplog.records] == [
            f"zenmetry: MongoClient(127.0.0.1:{port}) (mongodb) has no serverSelectionTimeoutMS (the default waits 30 s "
            "for a server) and no socketTimeoutMS: a stuck database makes every request and task that uses it hang"
        ]
        Client().get("/queries/0/")
        Client().get("/queries/0/")
        first, second = zen.units()
        assert events(first, "zen.config.no_timeout") == [
            (
                "zen.config.no_timeout",
                {
                    "db.system": "mongodb",
                    "zen.config.source": f"MongoClient(127.0.0.1:{port})",
                    "zen.config.missing": (
                        "serverSelectionTimeoutMS (the default waits 30 s for a server)",
                        "socketTimeoutMS",
                    ),
                },
            )
        ]
        assert events(second, "zen.config.no_timeout") == []

    @pytest.mark.usefixtures("postgres_db")
    def test_a_server_warns_at_start_and_reports_on_its_first_unit(self, receiver: Receiver) -> None:
        """The test project's database has no timeouts: every worker reports it once."""
        server = gunicorn(receiver, "--workers", "1", ZEN_TEST_PG_TIMEOUTS="0")
        server.get("/queries/1/")
        server.get("/queries/1/")
        output = server.stop()
        assert output.count("zenmetry: Django database 'default' (postgresql) has no connect timeout") == 1
        receiver.wait(lambda r: len(r.units()) == 2)
        reported = [unit.events_named("zen.config.no_timeout") for unit in receiver.units()]
        assert sorted(len(found) for found in reported) == [0, 1]
