"""Budgets: the file, its precedence rules, ``@budget``, breaches on real requests and tasks,
and every kind of bad input with its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from support.budgets import BAD_FILES, EXAMPLE, expected_problem, write
from support.harness import Harness
from support.otlp import Receiver
from support.processes import TESTS, gunicorn, path_of
from support.source import VIEWS, site
from zenmetry import ConfigError, budget
from zenmetry.config._budgets import Budget, Budgets
from zenmetry.config._limits import Limits
from zenmetry.config._settings import Settings


@pytest.fixture
def example(tmp_path: Path) -> Budgets:
    return Budgets.from_file(write(tmp_path, EXAMPLE))


class TestLookup:
    @pytest.mark.parametrize(
        ("kind", "name", "source", "queries"),
        [
            ("http", "orders/<int:pk>/", "orders/<int:pk>/", 8),  # exact entry
            ("http", "api/v1/customers/", "api/v1/*", 10),  # longest matching glob
            ("http", "api/v2/customers/", "api/*", 12),
            ("http", "checkout/", "http", 30),  # the kind's table
            ("http", "unmatched", "http", 30),
        ],
    )
    def test_the_most_specific_entry_wins(
        self, example: Budgets, kind: str, name: str, source: str, queries: int
    ) -> None:
        found = example.lookup(kind, name)
        assert (found.source, found.limits.get("queries")) == (source, queries)

    def test_limits_left_out_of_an_entry_come_from_the_kinds_table(self, example: Budgets) -> None:
        assert example.lookup("http", "orders/<int:pk>/").limits == Limits(
            queries=8, db_time_ms=150, duration_ms=800, external_calls=0, repeated_queries=5
        )

    def test_an_exact_task_entry_beats_a_glob(self, example: Budgets) -> None:
        exact = example.lookup("task", "shop.tasks.sync_stock")
        glob = example.lookup("task", "shop.tasks.invoice")
        assert (exact.source, exact.limits.get("external_calls"), exact.limits.get("duration_ms")) == (
            "shop.tasks.sync_stock",
            100,
            30000,
        )
        assert (glob.source, glob.limits.get("duration_ms"), glob.limits.get("memory_mb")) == ("shop.tasks.*", 5000, 50)

    def test_a_decorator_overrides_the_entry_that_would_apply(self, example: Budgets) -> None:
        found = example.resolve("http", "orders/<int:pk>/", Limits(queries=5, duration_ms=200))
        assert found == Budget(
            "@budget", Limits(queries=5, db_time_ms=150, duration_ms=200, external_calls=0, repeated_queries=5)
        )

    def test_without_a_file_only_the_defaulted_limits_are_checked(self) -> None:
        found = Budgets().lookup("http", "anything/")
        assert (found.source, found.checks) == ("default", (("repeated_queries", 5), ("slow_query_ms", 500.0)))

    @pytest.mark.parametrize(
        ("text", "left"),
        [
            ("[task]\nrepeated_queries = 0\n", (("slow_query_ms", 500.0),)),
            ("[task]\nslow_query_ms = 0\n", (("repeated_queries", 5),)),
            ("[task]\nrepeated_queries = 0\nslow_query_ms = 0\n", ()),
        ],
    )
    def test_a_defaulted_limit_at_zero_turns_its_check_off(
        self, tmp_path: Path, text: str, left: tuple[tuple[str, float], ...]
    ) -> None:
        budgets = Budgets.from_file(write(tmp_path, text))
        assert budgets.lookup("task", "x").checks == left

    def test_limits_are_checked_in_their_own_units(self, example: Budgets) -> None:
        """Counts stay int; milliseconds and MiB are floats, as events report them."""
        assert example.lookup("http", "x").checks == (
            ("queries", 30),
            ("db_time_ms", 150.0),
            ("duration_ms", 800.0),
            ("external_calls", 0),
            ("repeated_queries", 5),
            ("slow_query_ms", 500.0),
        )


class TestBadFile:
    @pytest.mark.parametrize(("text", "problem"), BAD_FILES)
    def test_each_problem_names_the_file_the_entry_and_the_key(self, tmp_path: Path, text: str, problem: str) -> None:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as raised:
            Budgets.from_file(path)
        assert raised.value.problems == [expected_problem(path, problem)]

    def test_a_file_that_is_not_utf8_is_one_problem(self, tmp_path: Path) -> None:
        """Found by the fuzzer: it raised UnicodeDecodeError instead."""
        path = tmp_path / "zenmetry.toml"
        path.write_bytes(b"[http]\nqueries = 3 # \xff\n")
        with pytest.raises(ConfigError) as raised:
            Budgets.from_file(path)
        assert raised.value.problems == [expected_problem(path, "not UTF-8 text (invalid start byte at byte 21)")]

    def test_every_problem_of_a_file_is_reported_at_once(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[http]\nqueries = -1\nzz = 1\n[task.\"t\"]\nmemory_mb = 'x'\n")
        with pytest.raises(ConfigError) as raised:
            Budgets.from_file(path)
        assert len(raised.value.problems) == 3


class TestDecorator:
    def test_an_unknown_keyword_fails_at_import_naming_the_function(self) -> None:
        with pytest.raises(ConfigError) as raised:

            @budget(querys=5)  # type: ignore[call-arg]
            def view() -> None: ...

        assert raised.value.problems == [
            f"{__file__!r}, @budget on test_budgets.TestDecorator.test_an_unknown_keyword_fails_at_import_naming_the_function.<locals>.view, "
            "key 'querys': unknown limit; allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms, queue_wait_ms"
        ]

    def test_a_negative_limit_on_a_class_is_refused(self) -> None:
        with pytest.raises(ConfigError) as raised:

            @budget(duration_ms=-5)
            class Slow: ...

        assert raised.value.problems == [
            f"{__file__!r}, @budget on test_budgets.TestDecorator.test_a_negative_limit_on_a_class_is_refused.<locals>.Slow, "
            "key 'duration_ms': expected a non-negative number, got -5"
        ]


class TestBreachesOnRequests:
    """In this process: Django's test client, real PostgreSQL and the MongoDB wire-protocol server."""

    @pytest.fixture
    def budgets(self, zen: Harness, tmp_path: Path) -> Harness:
        path = write(
            tmp_path,
            """
            [http]
            queries = 30
            [http."queries/<int:n>/"]
            queries = 3
            [http."api/*"]
            queries = 1
            [http."api/v1/customers/<int:n>/"]
            queries = 2
            [http."grow/<int:mib>/"]
            memory_mb = 16
            [http."cbv/"]
            db_time_ms = 0
            duration_ms = 0
        """,
        )
        zen.reset(Settings(budgets=Budgets.from_file(path)))
        return zen

    @pytest.mark.parametrize(("n", "breached"), [(3, False), (4, True)])
    def test_a_limit_is_breached_when_exceeded_not_at_equality(self, budgets: Harness, n: int, breached: bool) -> None:
        Client().get(f"/queries/{n}/")
        unit = budgets.unit()
        events = [dict(e.attributes) for e in unit.events if e.name == "zen.budget.breach"]
        assert unit.attributes["zen.budget"] == "queries/<int:n>/"
        if breached:
            assert events == [
                {"zen.limit": "queries", "zen.limit.value": 3, "zen.actual": 4, "zen.budget": "queries/<int:n>/"}
            ]
            assert unit.attributes["zen.budget.breached"] == ("queries",)
        else:
            assert events == []
            assert "zen.budget.breached" not in unit.attributes

    def test_an_exact_route_beats_the_glob_that_also_matches(self, budgets: Harness) -> None:
        Client().get("/api/v1/customers/2/")
        assert (budgets.unit().attributes["zen.budget"], budgets.unit().attributes.get("zen.budget.breached")) == (
            "api/v1/customers/<int:n>/",
            None,
        )

    @pytest.mark.parametrize(
        ("path", "source", "breached"), [("/decorated/2/", "@budget", None), ("/decorated/3/", "@budget", ("queries",))]
    )
    def test_a_decorated_view_uses_its_decorator(
        self, budgets: Harness, path: str, source: str, breached: object
    ) -> None:
        Client().get(path)
        attributes = budgets.unit().attributes
        assert (attributes["zen.budget"], attributes.get("zen.budget.breached")) == (source, breached)

    def test_a_decorated_class_based_view_uses_its_decorator(self, budgets: Harness) -> None:
        Client().get("/decorated-class/")
        unit = budgets.unit()
        events = [dict(e.attributes) for e in unit.events if e.name == "zen.budget.breach"]
        assert events == [{"zen.limit": "queries", "zen.limit.value": 0, "zen.actual": 1, "zen.budget": "@budget"}]

    def test_one_event_per_limit_exceeded_in_each_limits_own_unit(self, budgets: Harness) -> None:
        Client().get("/cbv/")
        unit = budgets.unit()
        events = {e.attributes["zen.limit"]: dict(e.attributes) for e in unit.events if e.name == "zen.budget.breach"}
        assert sorted(events) == ["db_time_ms", "duration_ms"]
        db = events["db_time_ms"]
        assert (db["zen.limit.value"], db["zen.actual"], db["zen.budget"]) == (
            0.0,
            unit.attributes["zen.db.duration_ms"],
            "cbv/",
        )
        assert isinstance(db["zen.actual"], float)
        assert events["duration_ms"]["zen.actual"] == unit.attributes["zen.duration_ms"]
        assert unit.attributes["zen.budget.breached"] == ("db_time_ms", "duration_ms")

    def test_memory_growth_is_checked_in_mib(self, budgets: Harness) -> None:
        Client().get("/grow/24/")
        unit = budgets.unit()
        (event,) = [dict(e.attributes) for e in unit.events if e.name == "zen.budget.breach"]
        assert (event["zen.limit"], event["zen.limit.value"]) == ("memory_mb", 16.0)
        assert event["zen.actual"] == unit.attributes["zen.memory.rss_delta_bytes"] / 2**20

    def test_the_breach_counter_counts_breaching_units_by_limit(self, budgets: Harness) -> None:
        for n in (1, 4, 5, 3, 6):
            Client().get(f"/queries/{n}/")
        counted = {dict(key)["zen.limit"]: value for key, (value, _) in budgets.metric("zen.budget.breaches").items()}
        assert counted == {"queries": 3, "repeated_queries": 1}  # 6 runs of one shape also exceed 5

    def test_n_plus_one_sql_is_reported_with_its_shape(self, budgets: Harness) -> None:
        Client().get("/nplusone/")
        unit = budgets.unit()
        (event,) = [dict(e.attributes) for e in unit.events if e.name == "zen.db.repeated_query"]
        assert event == {
            "zen.statement.fingerprint": 'SELECT "zentestapp_customer"."id", "zentestapp_customer"."name" FROM "zentestapp_customer" WHERE "zentestapp_customer"."id" = ? LIMIT ?',
            "zen.count": 12,
            "db.system": "postgresql",
            **site(VIEWS, "names = [Customer.objects.get(pk=pk).name", "n_plus_one"),
        }
        (breach,) = [dict(e.attributes) for e in unit.events if e.name == "zen.budget.breach"]
        assert breach == {"zen.limit": "repeated_queries", "zen.limit.value": 5, "zen.actual": 12, "zen.budget": "http"}

    def test_n_plus_one_mongodb_is_reported_with_its_shape(self, budgets: Harness) -> None:
        Client().get("/mongo-nplusone/")
        unit = budgets.unit()
        (event,) = [dict(e.attributes) for e in unit.events if e.name == "zen.db.repeated_query"]
        assert event == {
            "zen.statement.fingerprint": 'products.find {"sku": ?}',
            "zen.count": 12,
            "db.system": "mongodb",
            **site(VIEWS, 'mongo().catalogue.products.find_one({"sku": f"SKU-{i}"})', "mongo_n_plus_one"),
        }
        assert unit.attributes["zen.db.mongodb.queries"] == 12


@pytest.mark.usefixtures("postgres_db")
class TestBreachesOverOtlp:
    """Real gunicorn and Celery processes with a budget file, exporting to the OTLP receiver."""

    def test_requests_breach_and_the_counter_counts_them(
        self, receiver: Receiver, mongo_url: str, tmp_path: Path
    ) -> None:
        path = write(tmp_path, '[http]\nqueries = 30\n[http."queries/<int:n>/"]\nqueries = 3\n')
        server = gunicorn(receiver, "--workers", "2", ZENMETRY_BUDGETS=str(path), ZEN_TEST_MONGO_URL=mongo_url)
        for n in range(1, 7):
            server.get(f"/queries/{n}/")
        server.get("/mongo-nplusone/")
        server.stop()
        receiver.wait(lambda r: len(r.units()) == 7)
        by_n = {
            int(path_of(u).strip("/").split("/")[-1]): u
            for u in receiver.units()
            if u.attributes["zen.unit.name"] == "queries/<int:n>/"
        }
        for n, unit in by_n.items():
            assert unit.events_named("zen.budget.breach")[:1] == (
                []
                if n <= 3
                else [{"zen.limit": "queries", "zen.limit.value": 3, "zen.actual": n, "zen.budget": "queries/<int:n>/"}]
            )
        (mongo,) = [u for u in receiver.units() if u.attributes["zen.unit.name"] == "mongo-nplusone/"]
        assert mongo.events_named("zen.db.repeated_query") == [
            {
                "zen.statement.fingerprint": 'products.find {"sku": ?}',
                "zen.count": 12,
                "db.system": "mongodb",
                **site(VIEWS, 'find_one({"sku": f"SKU-{i}"})', "mongo_n_plus_one", cwd=TESTS),
            }
        ]
        assert mongo.attributes["zen.budget.breached"] == ["repeated_queries"]
        receiver.wait(lambda r: r.total("zen.budget.breaches", zen__limit="queries").value == 3)
        assert (
            receiver.total("zen.budget.breaches", zen__limit="repeated_queries").value == 2
        )  # /queries/6/ and the MongoDB loop

    def test_tasks_breach_their_entry_or_their_decorator(self, receiver: Receiver, tmp_path: Path) -> None:
        from support.celery_worker import FAILS, THREE, start_worker
        from zentestapp.celery_app import app

        path = write(tmp_path, '[task]\nqueries = 2\n[task."zentestapp.tasks.fails"]\nqueries = 0\n')
        queue = f"zentest-budgets-{tmp_path.name[-8:]}"
        worker = start_worker(receiver, queue, "--pool", "solo", ZENMETRY_BUDGETS=str(path))
        with app.connection_for_write() as connection:
            for name, args in [(THREE, [1]), (THREE, [2]), ("zentestapp.tasks.decorated", [4]), (FAILS, [])]:
                app.send_task(name, args=args, queue=queue, connection=connection)
            receiver.wait(lambda r: len(r.units()) == 4, timeout=60)
        worker.stop()
        found = sorted(
            (
                u.attributes["zen.unit.name"],
                u.attributes["zen.budget"],
                tuple(u.attributes.get("zen.budget.breached", ())),
            )
            for u in receiver.units()
        )
        assert found == [
            ("zentestapp.tasks.decorated", "@budget", ()),
            ("zentestapp.tasks.fails", "zentestapp.tasks.fails", ("queries",)),
            (THREE, "task", ("queries",)),
            (THREE, "task", ("queries",)),
        ]
        receiver.wait(lambda r: r.total("zen.budget.breaches", zen__limit="queries").value == 3)
        assert (
            receiver.total(
                "zen.budget.breaches", zen__limit="queries", zen__unit__name=THREE, celery__state="SUCCESS"
            ).value
            == 2
        )
