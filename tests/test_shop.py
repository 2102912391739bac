"""The example shop and the demo: the README's first command, and the shop on real servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import django
import psycopg
import pytest

from support.otlp import Receiver
from support.processes import ROOT, Server, gunicorn, otel_env
from support.source import line_of

SHOP = ROOT / "examples" / "shop"
SHOP_VIEWS = SHOP / "shop" / "views.py"

# What the tour must end with: (kind, name) -> (units, queries p50, queries max, external calls, breaches)
EXPECTED_TABLE = {
    ("http", "catalogue/"): ("1", "1", "1", "0", "-"),
    ("http", "checkout/<int:pk>/"): ("1", "2", "2", "1", "external_calls"),
    ("http", "checkout/<int:pk>/background/"): ("1", "1", "1", "0", "-"),
    ("http", "orders/"): ("1", "13", "13", "0", "repeated_queries"),
    ("http", "orders/<int:pk>/"): ("1", "2", "2", "0", "-"),
    ("http", "orders/<int:pk>/invoice/"): ("1", "5", "5", "0", "-"),
    ("http", "orders/fixed/"): ("1", "1", "1", "0", "-"),
    ("http", "report/"): ("2", "0", "0", "0", "memory_mb"),
    ("http", "search/"): ("1", "1", "1", "0", "db_time_ms, slow_query_ms"),
    ("http", "stats/rebuild/"): ("1", "0", "0", "0", "-"),
    ("http", "stock/sync/"): ("1", "0", "0", "0", "-"),
    ("task", "shop.tasks.confirm_payment"): ("1", "2", "2", "1", "-"),
    ("task", "shop.tasks.rebuild_stats"): ("1", "1", "1", "0", "duration_ms"),
    ("task", "shop.tasks.sync_stock"): ("3", "1", "1", "0", "-"),
    ("http", "orders/<int:pk>/receipt/"): ("1", "2", "2", "0", "-"),
    ("task", "shop.jobs.send_receipt"): ("1", "2", "2", "0", "-"),
    # 1 + 10 unpaid orders' customers; on Django 6, the system checks the command runs first
    # also ask SQLite for JSON support (django-tasks-db's JSONField): BEGIN, SELECT JSON(?), COMMIT.
    ("command", "remind_unpaid"): (
        "1",
        *(("11", "11") if django.VERSION < (6,) else ("14", "14")),
        "0",
        "repeated_queries",
    ),
}


class TestDemo:
    def test_the_tour_ends_with_the_known_figures_and_only_the_intended_breaches(self, demo: str) -> None:
        """SQLite, a real worker on a folder broker, no collector: the README's first command."""
        table = demo.split("per route and task:\n")[1].splitlines()
        header, *rows = (re.split(r"\s{2,}", line.strip()) for line in table)
        assert header == ["kind", "name", "units", "queries p50", "max", "db ms", "mem MiB", "ext", "breaches"]
        found = {(row[0], row[1]): (row[2], row[3], row[4], row[7], row[8]) for row in rows}
        assert found == EXPECTED_TABLE
        assert "zenmetry: internal error" not in demo

    def test_the_tour_says_where_each_problem_is(self, demo: str) -> None:
        """The N+1's line, the slow statement's, the call without a timeout's, and where the
        traced report's memory went."""
        lines = {line.split(" | ")[0].strip(): line for line in demo.splitlines() if "zenmetry " in line}
        n_plus_one = line_of(SHOP_VIEWS, "return JsonResponse", after="def order_list(request")
        assert lines["zenmetry http GET orders/ 200"].endswith(
            f"BREACH repeated_queries 12>5 at shop/views.py:{n_plus_one} order_list"
        )
        slow = line_of(SHOP_VIEWS, 'cursor.execute("SELECT pg_sleep(0.8)")')
        assert lines["zenmetry http GET search/ 200"].endswith(f" at shop/views.py:{slow} search")
        checkout = line_of(SHOP_VIEWS, 'response = requests.post(f"{payments.url()}/charge"')
        assert (
            f"ext 1 (1 without timeout at shop/views.py:{checkout} checkout)"
            in lines["zenmetry http GET checkout/<int:pk>/ 200"]
        )
        reports = [line for line in demo.splitlines() if "zenmetry http GET report/ 200" in line]
        keeping = line_of(SHOP_VIEWS, '"note": "x" * 64} for i in range(5000)')
        assert ["traced:" in line for line in reports] == [False, True]
        assert f", most at shop/views.py:{keeping} " in reports[1]
        command = SHOP_VIEWS.parent / "management" / "commands" / "remind_unpaid.py"
        remind = line_of(command, "emails = [order.customer.email")
        assert lines["zenmetry command remind_unpaid OK"].endswith(
            f"BREACH repeated_queries 10>5 at shop/management/commands/remind_unpaid.py:{remind} Command.handle"
        )
        assert " | queued " in lines["zenmetry task shop.jobs.send_receipt SUCCESSFUL"]


@pytest.fixture
def shop_database() -> str:
    name = f"zenmetry_shop_test_{os.getpid()}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def shop(receiver: Receiver, **env: str) -> Server:
    """The shop, migrated and seeded, under ``opentelemetry-instrument gunicorn``."""
    environment = {
        "DJANGO_SETTINGS_MODULE": "shop.settings",
        "PYTHONPATH": str(SHOP),
        "ZENMETRY_BUDGETS": str(SHOP / "zenmetry.toml"),
        **env,
    }
    for command in (["migrate", "--verbosity", "0"], ["seed"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=SHOP,
            env=otel_env(receiver, **environment),
            check=True,
            capture_output=True,
        )
    return gunicorn(receiver, "--workers", "1", app="shop.wsgi", **environment)


class TestShopOnRealServers:
    def test_the_catalogue_counts_postgresql_and_mongodb_apart(
        self, receiver: Receiver, shop_database: str, mongo_url: str
    ) -> None:
        server = shop(receiver, DATABASE_URL=shop_database, MONGO_URL=mongo_url)
        status, body = server.get("/catalogue/")
        assert status == 200
        assert b'"coffee": ["SKU-001", "SKU-004", "SKU-007", "SKU-010"]' in body
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 1)
        attributes = receiver.units()[0].attributes
        assert (
            attributes["zen.db.queries"],
            attributes["zen.db.postgresql.queries"],
            attributes["zen.db.mongodb.queries"],
        ) == (4, 1, 3)
        receiver.wait(lambda r: r.total("zen.unit.db.queries", db__system="all").count == 1)
        per_system = {
            system: receiver.total("zen.unit.db.queries", db__system=system).sum
            for system in ("postgresql", "mongodb", "all")
        }
        assert per_system == {"postgresql": 1, "mongodb": 3, "all": 4}

    def test_the_invoice_page_makes_five_postgresql_queries(self, receiver: Receiver, shop_database: str) -> None:
        server = shop(receiver, DATABASE_URL=shop_database)
        assert server.get("/orders/3/invoice/")[0] == 200
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 1)
        attributes = receiver.units()[0].attributes
        assert (
            attributes["zen.db.postgresql.queries"],
            attributes["zen.budget"],
            "zen.budget.breached" in attributes,
        ) == (5, "http", False)

    def test_the_invoices_page_makes_thirty_queries_within_its_own_budget(
        self, receiver: Receiver, shop_database: str
    ) -> None:
        server = shop(receiver, DATABASE_URL=shop_database, ZENMETRY_DB_SPANS="detail")
        assert server.get("/invoices/")[0] == 200
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 1)
        attributes = receiver.units()[0].attributes
        assert (
            attributes["zen.db.postgresql.queries"],
            attributes["zen.db.repeated_max"],
            attributes["zen.budget"],
            "zen.budget.breached" in attributes,
            attributes["zen.db.spans"],
        ) == (30, 6, "invoices/", False, "summarized")
