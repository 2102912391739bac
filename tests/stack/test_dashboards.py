"""Dashboards and alert rules against a real Prometheus holding real metrics of the example shop.

Translation path in these tests: the shop (gunicorn) and its Celery worker run under
``opentelemetry-instrument`` with zenmetry and OpenTelemetry's own Prometheus exporter
(``OTEL_METRICS_EXPORTER=prometheus``, opentelemetry-exporter-prometheus), scraped by Debian's
Prometheus. In the compose stack the same metrics travel as OTLP to the collector, whose
``prometheus`` exporter names them; ``TestNames`` proves both give the same names: the ones
Prometheus shows here are exactly those the collector's documented rules produce.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from support.mongo import mongo_server
from support.processes import BIN, ROOT, TESTS, Server, free_port, project_env, start_server
from support.stack import (
    DATASOURCES,
    INSTRUMENTS,
    POINT_ATTRIBUTES,
    PROMETHEUS_SOURCE,
    RULE_TESTS,
    RULES,
    TEMPO_SOURCE,
    Prometheus,
    collector_label_name,
    collector_metric_name,
    dashboards,
    exposed_names,
    load_yaml,
    panels,
    prometheus,
    prometheus_panels,
    promql_labels,
    promql_metrics,
    rule_alerts,
    rule_records,
    tempo_panels,
    variable_queries,
)

SHOP = ROOT / "examples" / "shop"
BROKER_DB = 11
ROUNDS = 6

# One round of the shop's tour: (path, units it makes: http, task).
TOUR = (
    ("/orders/", 1, 0),
    ("/orders/fixed/", 1, 0),
    ("/orders/1/", 1, 0),
    ("/orders/1/invoice/", 1, 0),
    ("/catalogue/", 1, 0),
    ("/report/", 1, 0),
    ("/checkout/1/", 1, 0),
    ("/checkout/2/background/", 1, 1),  # shop.tasks.confirm_payment
    ("/stats/rebuild/", 1, 1),  # shop.tasks.rebuild_stats
    ("/stock/sync/", 1, 3),  # shop.tasks.sync_stock: RETRY, RETRY, FAILURE
    ("/search/", 1, 0),  # one statement of 0.8 s
    ("/orders/1/receipt/", 1, 1),  # shop.jobs.send_receipt, a Django task (db_worker)
)
HTTP_PER_ROUND = sum(http for _, http, _ in TOUR)
TASKS_PER_ROUND = sum(tasks for _, _, tasks in TOUR)
ROUTES = {
    "orders/",
    "orders/fixed/",
    "orders/<int:pk>/",
    "orders/<int:pk>/invoice/",
    "catalogue/",
    "report/",
    "checkout/<int:pk>/",
    "checkout/<int:pk>/background/",
    "stats/rebuild/",
    "stock/sync/",
    "search/",
    "orders/<int:pk>/receipt/",
}
TASKS = {"shop.tasks.confirm_payment", "shop.tasks.rebuild_stats", "shop.tasks.sync_stock", "shop.jobs.send_receipt"}
# What the shop's zenmetry.toml makes breach, on purpose (see its header).
BREACHES = {
    ("http", "orders/", "repeated_queries"),
    ("http", "report/", "memory_mb"),
    ("http", "checkout/<int:pk>/", "external_calls"),
    ("http", "search/", "slow_query_ms"),
    ("http", "search/", "db_time_ms"),
    ("task", "shop.tasks.rebuild_stats", "duration_ms"),
}
# Grafana's built-in variables, as wide as the whole test run.
BUILTINS = {"$__rate_interval": "5m", "$__range": "5m", "$__interval": "15s"}
SCOPE_LABELS = {"job", "instance", "otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}


@dataclass
class Shop:
    """The Prometheus that scraped the shop's tour, and the zen_ metric names it holds."""

    prometheus: Prometheus
    names: set[str]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.prometheus.query(expr)

    def labels(self, expr: str, *names: str) -> set[tuple[str, ...]]:
        """The label values of each series an expression returns."""
        return {tuple(series["metric"].get(name, "") for name in names) for series in self.query(expr)}


def _metrics_total(port: int, kind: str) -> float:
    """Units of ``kind`` a process has counted, read from its own exporter."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "zen_unit_duration_seconds_count" and sample.labels.get("zen_unit_kind") == kind
    )


def _wait_for_port(port: int, server: Server) -> None:
    deadline = time.monotonic() + 60
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"exited:\n{server.stop()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {port}:\n{server.stop()}") from None
            time.sleep(0.1)


def _tour(web: Server) -> None:
    # One request at a time: resident memory is the process's, so requests served side by side
    # would each count the growth of the report served next to them.
    answers = [(path, web.get(path)[0]) for path, _, _ in TOUR]
    assert answers == [(path, 200) for path, _, _ in TOUR]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The example shop on PostgreSQL, MongoDB (wire-protocol server) and Redis, under gunicorn, a
    Celery worker and a Django tasks worker (django-tasks-db's db_worker), toured once to warm up, then scraped by Prometheus while it is toured ROUNDS
    more times. Yields when Prometheus holds every unit of the tour."""
    # A MongoDB of its own: the seed's catalogue must not show up in other tests' shops.
    with mongo_server() as mongo_url:
        try:
            yield from _shop(tmp_path_factory.mktemp("stack"), mongo_url)
        finally:
            with pymongo.MongoClient(mongo_url) as client:
                client.shop.products.drop()


def _shop(folder: Path, mongo_url: str) -> Iterator[Shop]:
    database = f"zenmetry_stack_{os.getpid()}"
    admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
    admin.execute(f'CREATE DATABASE "{database}"')
    broker = redis.Redis(host="127.0.0.1", port=6379, db=BROKER_DB)
    broker.flushdb()
    payments_port, web_port, master_port, web_metrics, worker_metrics, tasks_metrics = (free_port() for _ in range(6))
    env = project_env(
        PYTHONPATH=str(SHOP),
        DJANGO_SETTINGS_MODULE="shop.settings",
        DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{database}",
        MONGO_URL=mongo_url,
        CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{BROKER_DB}",
        PAYMENTS_URL=f"http://127.0.0.1:{payments_port}",
        ZENMETRY_BUDGETS=str(SHOP / "zenmetry.toml"),
        # No allocation tracing: the memory a traced report frees at its end is reused by the next
        # one, whose RSS then grows less than the report keeps (seen on Python 3.13: one report of
        # seven under 16 MiB), and the p95 below is exact.
        ZENMETRY_MEMORY_TRACE="off",
        OTEL_METRICS_EXPORTER="prometheus",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_PYTHON_LOG_LEVEL="warning",
    )
    servers: list[Server] = []
    try:
        for command in (["migrate", "--verbosity", "0"], ["seed"]):
            done = _run([str(BIN / "python"), "-m", "django", *command], env)
            assert done.returncode == 0, done.stderr
        payments = start_server(
            [str(BIN / "python"), "-m", "shop.payments", "--port", str(payments_port)], env, payments_port
        )
        servers.append(payments)
        web = start_server(
            [
                str(BIN / "opentelemetry-instrument"),
                str(BIN / "gunicorn"),
                "shop.wsgi",
                # -c: opentelemetry-instrument would take --config for its own --config_file.
                "-c",
                str(TESTS / "support" / "stack_gunicorn.py"),
                "--bind",
                f"127.0.0.1:{web_port}",
                "--workers",
                "1",
                "--threads",
                "4",
                "--worker-class",
                "gthread",
                "--graceful-timeout",
                "5",
            ],
            {
                **env,
                "OTEL_SERVICE_NAME": "shop-web",
                "OTEL_EXPORTER_PROMETHEUS_PORT": str(master_port),
                "ZEN_TEST_WORKER_METRICS_PORT": str(web_metrics),
            },
            web_port,
        )
        servers.append(web)
        _wait_for_port(web_metrics, web)
        worker = start_server(
            [
                str(BIN / "opentelemetry-instrument"),
                str(BIN / "celery"),
                "--app=shop",
                "worker",
                "--pool=solo",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            {**env, "OTEL_SERVICE_NAME": "shop-worker", "OTEL_EXPORTER_PROMETHEUS_PORT": str(worker_metrics)},
            worker_metrics,
        )
        servers.append(worker)
        tasks_worker = start_server(
            [
                str(BIN / "opentelemetry-instrument"),
                *(str(BIN / "python"), "-m", "django", "db_worker"),
                *("--interval", "0.1", "--no-reload", "--no-startup-delay"),
            ],
            {**env, "OTEL_SERVICE_NAME": "shop-tasks", "OTEL_EXPORTER_PROMETHEUS_PORT": str(tasks_metrics)},
            tasks_metrics,
        )
        servers.append(tasks_worker)

        # Warm-up: every series exists before Prometheus first scrapes, so every rate below
        # counts the measured rounds only (a counter's first sample has no increase).
        _tour(web)
        Prometheus.wait(
            lambda: _metrics_total(worker_metrics, "task") + _metrics_total(tasks_metrics, "task") == TASKS_PER_ROUND,
            "the workers did not run the warm-up's tasks",
        )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "shop-web", "static_configs": [{"targets": [f"127.0.0.1:{web_metrics}"]}]},
                {"job_name": "shop-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_metrics}"]}]},
                {"job_name": "shop-tasks", "static_configs": [{"targets": [f"127.0.0.1:{tasks_metrics}"]}]},
            ],
        }
        with prometheus(folder, config) as server:
            units = 'sum by (zen_unit_kind) (zen_unit_duration_seconds_count{zen_unit_kind="%s"})'
            for rounds in range(ROUNDS + 1):
                if rounds:
                    _tour(web)
                http, tasks = HTTP_PER_ROUND * (rounds + 1), TASKS_PER_ROUND * (rounds + 1)
                Prometheus.wait(
                    lambda http=http, tasks=tasks: (
                        server.value(units % "http") == http and server.value(units % "task") == tasks
                    ),
                    f"Prometheus never held {http} http and {tasks} task units",
                    describe=lambda: server.query(
                        "sum by (job, zen_unit_kind, zen_unit_name) (zen_unit_duration_seconds_count)"
                    ),
                )
            names = set(server.api("label/__name__/values"))
            yield Shop(server, {name for name in names if name.startswith("zen_")})
    finally:
        # Stop everything even when one process reports an error zenmetry swallowed, then fail.
        failures: list[AssertionError] = []
        for process in reversed(servers):
            try:
                process.stop(signal.SIGTERM)
            except AssertionError as failure:
                failures.append(failure)
        broker.flushdb()
        broker.close()
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()
    if failures:
        raise failures[0]


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=TESTS, capture_output=True, text=True, timeout=120, check=False)


def _interpolate(expr: str, **variables: str) -> str:
    for name, value in sorted(BUILTINS.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, expr
    return expr


def _dashboard(name: str) -> dict[str, Any]:
    return dashboards()[name]


def _panel_exprs(name: str) -> dict[str, list[str]]:
    return {
        panel["title"]: [target["expr"] for target in panel["targets"]] for panel in prometheus_panels(_dashboard(name))
    }


class TestNames:
    def test_prometheus_holds_the_names_the_collector_documents(self, shop: Shop) -> None:
        """The zen_ metrics Prometheus shows are exactly the contract's instruments named by the collector's rules."""
        expected = {name for instrument in INSTRUMENTS for name in exposed_names(instrument)}
        assert shop.names == expected
        assert collector_metric_name("zen.unit.duration", "s", "histogram") == "zen_unit_duration_seconds"
        assert collector_metric_name("zen.budget.breaches", "{breach}", "counter") == "zen_budget_breaches_total"

    @pytest.mark.parametrize("instrument", INSTRUMENTS, ids=lambda instrument: instrument.name)
    def test_labels_are_the_point_attributes_named_by_the_collector(self, shop: Shop, instrument: Any) -> None:
        """Each series carries exactly its kind's point attributes (plus the instrument's own), translated."""
        base = collector_metric_name(instrument.name, instrument.unit, instrument.kind)
        name = f"{base}_count" if instrument.kind == "histogram" else base
        by_kind: dict[str, set[frozenset[str]]] = {}
        for series in shop.prometheus.api("series", **{"match[]": name}):
            by_kind.setdefault(series["zen_unit_kind"], set()).add(frozenset(set(series) - SCOPE_LABELS - {"__name__"}))
        expected = {
            kind: {
                frozenset(collector_label_name(key) for key in (*attributes, *instrument.extra)) for attributes in sets
            }
            for kind, sets in POINT_ATTRIBUTES.items()
            if kind in instrument.kinds
        }
        if instrument.kind == "counter":  # breaches: the shop's Django task breaches nothing
            expected["task"] = {labels for labels in expected["task"] if "django_task_status" not in labels}
        assert by_kind == expected

    @pytest.mark.parametrize(
        ("name", "unit", "kind", "prometheus_name"),
        [
            ("system.filesystem.usage", "By", "gauge", "system_filesystem_usage_bytes"),
            ("system.network.dropped", "{packets}", "gauge", "system_network_dropped"),
            ("system.network.dropped", "packets", "gauge", "system_network_dropped_packets"),
            ("system.memory.utilization", "1", "gauge", "system_memory_utilization_ratio"),
            ("storage.filesystem.utilization", "%", "gauge", "storage_filesystem_utilization_percent"),
            ("astro.light.speed", "m/s", "gauge", "astro_light_speed_meters_per_second"),
            ("system.processes.created", "", "counter", "system_processes_created_total"),
            ("(lambda).function.executions(#)", "", "gauge", "lambda_function_executions"),
            ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
        ],
    )
    def test_the_translation_follows_the_translators_own_examples(
        self, name: str, unit: str, kind: str, prometheus_name: str
    ) -> None:
        """The rules used above reproduce the examples of the Prometheus translator's documentation."""
        assert collector_metric_name(name, unit, kind) == prometheus_name

    @pytest.mark.parametrize(
        ("key", "label"),
        [
            ("host.name", "host_name"),
            ("name (of the host)", "name__of_the_host_"),
            ("2 cents", "key_2_cents"),
            ("__name", "__name"),
            ("_name", "key_name"),
        ],
    )
    def test_label_translation_follows_the_documented_examples(self, key: str, label: str) -> None:
        """Attribute keys become labels as the translator's documentation shows."""
        assert collector_label_name(key) == label

    def test_dashboards_rules_and_rule_tests_use_only_real_names(self, shop: Shop) -> None:
        """Every zen_ metric and label in dashboards, alert rules and rule tests is one Prometheus shows."""
        labels = {"le"} | {
            label for series in shop.prometheus.api("series", **{"match[]": '{__name__=~"zen_.+"}'}) for label in series
        }
        # A command's process exits before a scrape: its point attributes, as the collector names them.
        labels |= {collector_label_name(key) for key in POINT_ATTRIBUTES["command"][0]}
        records = {rule["record"] for rule in rule_records()}
        exprs = [
            target["expr"]
            for dashboard in dashboards().values()
            for panel in prometheus_panels(dashboard)
            for target in panel["targets"]
        ]
        exprs += [query for dashboard in dashboards().values() for query in variable_queries(dashboard).values()]
        exprs += [rule["expr"] for rule in rule_alerts()]
        exprs += [series["series"] for test in load_yaml(RULE_TESTS)["tests"] for series in test["input_series"]]
        used_metrics = set().union(*(promql_metrics(expr) for expr in exprs))
        used_labels = set().union(*(promql_labels(expr) for expr in exprs))
        used_labels |= {
            query.split(",")[-1].strip(" )")
            for dashboard in dashboards().values()
            for query in variable_queries(dashboard).values()
        }
        assert used_metrics - records - shop.names == set()
        assert used_labels - labels == set()
        assert {
            "zen_unit_external_no_timeout_sum",
            "zen_budget_breaches_total",
            "zen_unit_memory_growth_bytes_bucket",
        } <= used_metrics


class TestOverview:
    def _query(self, shop: Shop, title: str, job: str = ".*") -> list[dict[str, Any]]:
        (expr,) = _panel_exprs("overview.json")[title]
        return shop.query(_interpolate(expr, job=job))

    def test_the_service_variable_lists_every_service(self, shop: Shop) -> None:
        """$job offers every service that sent units: the web server and the two workers."""
        definition = variable_queries(_dashboard("overview.json"))["job"]
        assert definition == "label_values(zen_unit_duration_seconds_count, job)"
        assert set(shop.prometheus.api("label/job/values", **{"match[]": "zen_unit_duration_seconds_count"})) == {
            "shop-web",
            "shop-worker",
            "shop-tasks",
        }

    def test_units_per_second_by_kind(self, shop: Shop) -> None:
        """One series per kind, each with a positive rate."""
        result = self._query(shop, "Units per second, by kind")
        assert {series["metric"]["zen_unit_kind"] for series in result} == {"http", "task"}
        assert all(float(series["value"][1]) > 0 for series in result)

    def test_units_for_one_service(self, shop: Shop) -> None:
        """Choosing a service in $job narrows every panel to it: the worker has only tasks."""
        result = self._query(shop, "Units per second, by kind", job="shop-worker")
        assert [series["metric"] for series in result] == [{"zen_unit_kind": "task"}]

    def test_breaches_by_limit(self, shop: Shop) -> None:
        """One series per limit the shop's budgets catch."""
        result = self._query(shop, "Budget breaches per second, by limit")
        assert {series["metric"]["zen_limit"] for series in result} == {limit for _, _, limit in BREACHES}

    def test_breaching_routes_and_tasks(self, shop: Shop) -> None:
        """The table lists exactly the routes and tasks that breached, with their limits and counts."""
        result = self._query(shop, "Breaching routes and tasks")
        found = {(s["metric"]["zen_unit_kind"], s["metric"]["zen_unit_name"], s["metric"]["zen_limit"]) for s in result}
        assert found == BREACHES
        assert all(float(series["value"][1]) >= ROUNDS for series in result)

    def test_top_by_p95_queries(self, shop: Shop) -> None:
        """Ten routes and tasks; the N+1 page leads with 13 queries (p95 interpolated in (10, 15])."""
        result = self._query(shop, "Top routes and tasks by DB queries per unit (p95)")
        assert len(result) == 10
        top = max(result, key=lambda series: float(series["value"][1]))
        assert (top["metric"]["zen_unit_name"], float(top["value"][1])) == ("orders/", pytest.approx(14.75))

    def test_top_by_p95_cache_misses(self, shop: Shop) -> None:
        """Only the catalogue calls the cache: its categories missed once, in the warm-up, and hit
        in every measured round (p95 0 misses)."""
        result = self._query(shop, "Top routes and tasks by cache misses per unit (p95)")
        assert [(s["metric"]["zen_unit_name"], float(s["value"][1])) for s in result] == [("catalogue/", 0.0)]
        # Over the last 5 minutes: a scrape that timed out under load marks the series stale for a moment.
        calls = shop.query("sum by (zen_unit_name) (max_over_time(zen_unit_cache_calls_sum[5m]))")
        assert [(s["metric"]["zen_unit_name"], float(s["value"][1])) for s in calls] == [("catalogue/", ROUNDS + 1)]

    def test_top_by_p95_db_time(self, shop: Shop) -> None:
        """Ten routes and tasks, each with a DB time."""
        result = self._query(shop, "Top routes and tasks by DB time per unit (p95)")
        assert len(result) == 10
        names = {series["metric"]["zen_unit_name"] for series in result}
        assert names <= ROUTES | TASKS
        assert all(float(series["value"][1]) > 0 for series in result)

    def test_db_time_by_system(self, shop: Shop) -> None:
        """PostgreSQL for the orders, MongoDB for the catalogue; never the "all" total."""
        result = self._query(shop, "DB time by system")
        assert {series["metric"]["db_system"] for series in result} == {"postgresql", "mongodb"}
        assert all(float(series["value"][1]) > 0 for series in result)

    def test_top_by_memory_growth(self, shop: Shop) -> None:
        """The report that keeps its rows leads, in the (16 MiB, 64 MiB] bucket."""
        result = self._query(shop, "Top routes and tasks by memory growth per unit (p95)")
        assert len(result) == 10
        top = max(result, key=lambda series: float(series["value"][1]))
        assert (top["metric"]["zen_unit_name"], float(top["value"][1])) == (
            "report/",
            pytest.approx(16 * 2**20 + 0.95 * 48 * 2**20),
        )

    def test_foreground_external_calls(self, shop: Shop) -> None:
        """Only the checkout that calls the payment provider while the customer waits."""
        result = self._query(shop, "Foreground external calls")
        assert [series["metric"] for series in result] == [{"zen_unit_name": "checkout/<int:pk>/"}]

    def test_calls_without_a_timeout(self, shop: Shop) -> None:
        """Only the checkout: the background task passes a timeout."""
        result = self._query(shop, "External calls without a timeout")
        assert [series["metric"] for series in result] == [
            {"zen_unit_kind": "http", "zen_unit_name": "checkout/<int:pk>/"}
        ]

    def test_routes_and_tasks_with_slow_statements(self, shop: Shop) -> None:
        """Only the search page, once per round: the breach counter's slow_query_ms."""
        result = self._query(shop, "Routes and tasks with slow statements")
        found = {(s["metric"]["zen_unit_kind"], s["metric"]["zen_unit_name"], s["metric"]["zen_limit"]) for s in result}
        assert found == {("http", "search/", "slow_query_ms")}
        assert all(float(series["value"][1]) >= ROUNDS for series in result)

    def test_the_slow_statements_come_from_tempo(self) -> None:
        """The table of slow statements asks Tempo for the spans carrying a zen.db.slow_query event."""
        (panel,) = tempo_panels(_dashboard("overview.json"))
        (target,) = panel["targets"]
        assert (panel["title"], target["datasource"], target["queryType"], target["tableType"]) == (
            "Units with a statement over slow_query_ms (traces)",
            TEMPO_SOURCE,
            "traceql",
            "spans",
        )
        assert target["query"].startswith('{ event:name = "zen.db.slow_query" && resource.service.name =~ "$job" }')

    def test_every_panel_is_tested_here(self) -> None:
        """Each overview panel has its test above (a new panel needs one)."""
        assert set(_panel_exprs("overview.json")) == {
            "Units per second, by kind",
            "Budget breaches per second, by limit",
            "Breaching routes and tasks",
            "Top routes and tasks by DB queries per unit (p95)",
            "Top routes and tasks by cache misses per unit (p95)",
            "Top routes and tasks by DB time per unit (p95)",
            "DB time by system",
            "Top routes and tasks by memory growth per unit (p95)",
            "Foreground external calls",
            "External calls without a timeout",
            "Routes and tasks with slow statements",
        }


class TestDrillDown:
    def test_variables_offer_the_kinds_routes_and_tasks(self, shop: Shop) -> None:
        """$kind lists http and task; $name lists exactly the shop's routes, or its tasks."""
        queries = variable_queries(_dashboard("unit.json"))
        values = {}
        for kind in ("http", "task"):
            expr = queries["name"].removeprefix("label_values(").rsplit(",", 1)[0]
            values[kind] = set(
                shop.prometheus.api(
                    "label/zen_unit_name/values", **{"match[]": _interpolate(expr, job=".*", kind=kind)}
                )
            )
        kinds_expr = queries["kind"].removeprefix("label_values(").rsplit(",", 1)[0]
        kinds = set(
            shop.prometheus.api("label/zen_unit_kind/values", **{"match[]": _interpolate(kinds_expr, job=".*")})
        )
        assert (kinds, values["http"], values["task"]) == ({"http", "task"}, ROUTES, TASKS)

    @pytest.mark.parametrize(
        ("kind", "name", "limits", "outcomes"),
        [
            ("http", "orders/", {"repeated_queries"}, {("200", "")}),
            ("http", "checkout/<int:pk>/", {"external_calls"}, {("200", "")}),
            ("task", "shop.tasks.sync_stock", set(), {("", "RETRY"), ("", "FAILURE")}),
            ("task", "shop.tasks.rebuild_stats", {"duration_ms"}, {("", "SUCCESS")}),
            ("task", "shop.jobs.send_receipt", set(), {("", "SUCCESSFUL")}),
        ],
    )
    def test_every_panel_returns_data(
        self, shop: Shop, kind: str, name: str, limits: set[str], outcomes: set[tuple[str, str]]
    ) -> None:
        """Each query of the drill-down answers for a route or a task; breaches show its own limits."""
        for title, exprs in _panel_exprs("unit.json").items():
            for expr in exprs:
                result = shop.query(_interpolate(expr, job=".*", kind=kind, name=name))
                if title == "Queue wait per run (tasks)" and kind == "http":
                    assert result == [], title  # requests wait in no queue
                    continue
                if title == "Budget breaches per second, by limit":
                    assert {series["metric"]["zen_limit"] for series in result} == limits, title
                    continue
                assert result, f"{title}: {expr}"
                if title == "Units per second, by outcome":
                    found = {
                        (
                            s["metric"].get("http_response_status_code", ""),
                            s["metric"].get("celery_state", "") + s["metric"].get("django_task_status", ""),
                        )
                        for s in result
                    }
                    assert found == outcomes
                if title.startswith("DB "):
                    assert {series["metric"]["db_system"] for series in result} == {"all", "postgresql"}


class TestAlertsOnRealData:
    def test_the_shop_raises_exactly_the_alerts_it_was_built_to_raise(self, shop: Shop) -> None:
        """With the shipped thresholds, the alert rules select exactly the shop's deliberate faults."""
        expected = {
            *(("ZenmetryBudgetBreaches", kind, name, limit) for kind, name, limit in BREACHES),
            ("ZenmetryQueriesP95High", "", "orders/", ""),
            ("ZenmetryForegroundExternalCalls", "", "checkout/<int:pk>/", ""),
            ("ZenmetryCallsWithoutTimeout", "http", "checkout/<int:pk>/", ""),
            ("ZenmetryMemoryGrowthP95High", "http", "report/", ""),
            ("ZenmetrySlowQueries", "http", "search/", ""),
        }

        def active() -> set[tuple[str, ...]]:
            return shop.labels(
                'ALERTS{alertname=~"Zenmetry.*"}', "alertname", "zen_unit_kind", "zen_unit_name", "zen_limit"
            )

        Prometheus.wait(lambda: active() == expected, f"alerts never became {expected}: {active()}", timeout=30)
        # Silent by design: the shop is sending units, and gives no task a queue_wait_ms budget
        # (the rule's promtool tests make it fire).
        assert {alert["alert"] for alert in rule_alerts()} - {name for name, *_ in expected} == {
            "ZenmetryNoUnits",
            "ZenmetryQueueWaitOverBudget",
        }


class TestDashboardFiles:
    def test_panels_and_variables_use_the_provisioned_prometheus(self) -> None:
        """Every panel, query and variable names the data source provisioning creates, by uid:
        Prometheus, or Tempo for the one table of traces."""
        sources = {source["uid"]: source["type"] for source in load_yaml(DATASOURCES)["datasources"]}
        assert (sources["prometheus"], sources["tempo"]) == ("prometheus", "tempo")
        for dashboard in dashboards().values():
            for panel in panels(dashboard):
                assert panel["datasource"] in (PROMETHEUS_SOURCE, TEMPO_SOURCE), panel["title"]
                for target in panel["targets"]:
                    assert target["datasource"] == panel["datasource"], panel["title"]
            for variable in dashboard["templating"]["list"]:
                assert variable["datasource"] == {"type": "prometheus", "uid": "prometheus"}
                assert variable["query"] == variable["definition"]

    def test_dashboards_are_the_overview_and_the_drill_down(self) -> None:
        """Two dashboards with stable uids, tagged zenmetry; the drill-down's variables are job, kind and name."""
        found = {name: (d["uid"], d["tags"]) for name, d in dashboards().items()}
        assert found == {
            "overview.json": ("zenmetry-overview", ["zenmetry"]),
            "unit.json": ("zenmetry-unit", ["zenmetry"]),
        }
        unit = _dashboard("unit.json")
        assert [variable["name"] for variable in unit["templating"]["list"]] == ["job", "kind", "name"]


class TestLinks:
    @staticmethod
    def _tempo_links(panel: dict[str, Any]) -> list[dict[str, Any]]:
        links = panel["fieldConfig"]["defaults"].get("links", [])
        found = []
        for link in links:
            url = urllib.parse.urlsplit(link["url"])
            if url.path == "/explore":
                found.append(json.loads(urllib.parse.parse_qs(url.query)["panes"][0]))
        return found

    def test_breach_panels_link_to_their_traces_in_tempo(self) -> None:
        """Every panel that shows breaches links to Tempo with a TraceQL query on the breach event."""
        checked = 0
        for dashboard in dashboards().values():
            for panel in prometheus_panels(dashboard):
                if not any("zen_budget_breaches_total" in target["expr"] for target in panel["targets"]):
                    continue
                (pane,) = (pane for panes in self._tempo_links(panel) for pane in panes.values())
                (query,) = pane["queries"]
                assert (pane["datasource"], query["datasource"]["uid"], query["queryType"]) == (
                    "tempo",
                    "tempo",
                    "traceql",
                )
                assert query["query"].startswith('{ event:name = "zen.budget.breach" && event.zen.limit = "${')
                checked += 1
        assert checked == 4

    def test_the_drill_down_links_to_all_breaching_traces_of_its_unit(self) -> None:
        """The drill-down's own Tempo link asks for the selected route's or task's breaching traces."""
        links = [link for link in _dashboard("unit.json")["links"] if link["url"].startswith("/explore")]
        (link,) = links
        panes = json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query)["panes"][0])
        (query,) = panes["zen"]["queries"]
        assert query["query"] == '{ event:name = "zen.budget.breach" && span.zen.unit.name = "${name:percentencode}" }'

    def test_alerts_link_to_the_drill_down(self) -> None:
        """The dashboard annotation of the alerts opens the drill-down, whose uid and variables exist."""
        unit = _dashboard("unit.json")
        names = {variable["name"] for variable in unit["templating"]["list"]}
        for alert in rule_alerts():
            link = alert["annotations"].get("dashboard")
            if link is None:
                assert alert["alert"] == "ZenmetryNoUnits"
                continue
            url = urllib.parse.urlsplit(link)
            assert url.path.split("/")[2] == unit["uid"], link
            assert {key.removeprefix("var-") for key in urllib.parse.parse_qs(url.query)} == names


def test_fixture_paths_exist() -> None:
    """The shop and the gunicorn settings the fixture starts are where it looks for them."""
    assert (SHOP / "zenmetry.toml").is_file()
    assert (TESTS / "support" / "stack_gunicorn.py").is_file()
    assert Path(RULES).is_file()
