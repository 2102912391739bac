"""The pytest plugin, end to end with ``pytester``: a throwaway Django project on PostgreSQL
(pytest-django), with views and tasks of known query counts, run with and without the plugin."""

from __future__ import annotations

import re
import uuid

import pytest

pytest_plugins = ["pytester"]

SETTINGS = """
SECRET_KEY = "x"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "ttp.urls"
INSTALLED_APPS = ["django.contrib.contenttypes", "ttp"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {{"default": {{
    "ENGINE": "django.db.backends.postgresql", "NAME": "{name}", "USER": "postgres", "HOST": "127.0.0.1",
    "OPTIONS": {{"options": "-c TimeZone=UTC -c statement_timeout=10000", "connect_timeout": 10}},
}}}}
CELERY_TASK_ALWAYS_EAGER = True
STATIC_URL = "/static/"
"""

MODELS = """
from django.db import models

class Customer(models.Model):
    name = models.CharField(max_length=50)
"""

VIEWS = """
import requests
from django.db import transaction
from django.http import JsonResponse
from ttp.models import Customer

def one(request):
    return JsonResponse({"n": Customer.objects.count()})

def nplusone(request):
    ids = [c.id for c in Customer.objects.order_by("id")]
    return JsonResponse({"names": [Customer.objects.get(pk=pk).name for pk in ids]})

def save(request):
    with transaction.atomic():
        Customer.objects.create(name="saved")
    return JsonResponse({})

def proxy(request):
    return JsonResponse({"status": requests.get(request.GET["url"], timeout=5).status_code})
"""

NPLUSONE_LINE = next(n for n, line in enumerate(VIEWS.lstrip().splitlines(), 1) if "objects.get(pk=pk)" in line)
"""The line of ttp/views.py that runs the N+1 (``makepyfile`` drops the text's first newline)."""

URLS = """
from django.urls import path
from ttp import views

urlpatterns = [
    path("one/", views.one), path("nplusone/", views.nplusone), path("save/", views.save), path("proxy/", views.proxy),
]
"""

TASKS = """
from celery import Celery
from ttp.models import Customer

app = Celery("ttp")
app.conf.task_always_eager = True

@app.task(name="ttp.tasks.three")
def three():
    for _ in range(3):
        Customer.objects.count()
"""

CONFTEST = """
import pytest
from ttp.models import Customer

@pytest.fixture
def customers(db):
    Customer.objects.bulk_create([Customer(name=f"c{i}") for i in range(12)])
"""

TESTS = """
import pytest
import requests
from ttp.tasks import three

def test_one_query(client, customers):
    assert client.get("/one/").status_code == 200

def test_n_plus_one(client, customers):
    assert client.get("/nplusone/").status_code == 200

@pytest.mark.zenmetry_allow("queries", "repeated_queries")
def test_a_known_offender(client, customers):
    assert client.get("/nplusone/").status_code == 200

def test_a_task(customers):
    three.delay()

@pytest.mark.django_db(transaction=True)
def test_a_live_server(live_server):
    assert requests.get(live_server.url + "/one/", timeout=5).status_code == 200
"""

BUDGETS = """
[http]
queries = 10

[task]
queries = 2
"""


@pytest.fixture
def project(pytester: pytest.Pytester, postgres_db: str, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A Django project with its tests; its test database is created and dropped by pytest-django."""
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE")
    pytester.mkpydir("ttp")
    name = f"zen_ttp_{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(
        **{
            "ttp/settings": SETTINGS.format(name=name),
            "ttp/models": MODELS,
            "ttp/views": VIEWS,
            "ttp/urls": URLS,
            "ttp/tasks": TASKS,
            "conftest": CONFTEST,
            "test_views": TESTS,
        }
    )
    pytester.mkpydir("ttp/migrations")
    pytester.makepyfile(
        **{
            "ttp/migrations/0001_initial": """
from django.db import migrations, models

class Migration(migrations.Migration):
    initial = True
    operations = [migrations.CreateModel(name="Customer", fields=[
        ("id", models.AutoField(primary_key=True, serialize=False)), ("name", models.CharField(max_length=50))])]
"""
        }
    )
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = ttp.settings\npythonpath = .\n")
    (pytester.path / "zenmetry.toml").write_text(BUDGETS)
    return pytester


class TestGlobalMode:
    def test_without_the_plugin_nothing_is_checked(self, project: pytest.Pytester) -> None:
        project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=5)

    def test_units_over_the_budget_file_fail_their_tests_with_the_statements(self, project: pytest.Pytester) -> None:
        result = project.runpytest_subprocess("--zenmetry", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=3, failed=2)
        result.stdout.fnmatch_lines(
            [
                "*_ test_n_plus_one _*",
                "zenmetry: 1 unit over budget",
                "http GET nplusone/  (budget: http)",
                "  13 > 10  queries",
                f"  12 > 5  repeated_queries  at ttp/views.py:{NPLUSONE_LINE} nplusone",
                "  queries, in order of first execution (count, total time):",
                '       1x * ms  postgresql SELECT "ttp_customer"."id", "ttp_customer"."name" FROM "ttp_customer" ORDER BY "ttp_customer"."id" ASC',
                '      12x * ms  postgresql SELECT "ttp_customer"."id", "ttp_customer"."name" FROM "ttp_customer" WHERE "ttp_customer"."id" = ? LIMIT ?'
                f"  <- repeated at ttp/views.py:{NPLUSONE_LINE} nplusone",
                "*_ test_a_task _*",
                "zenmetry: 1 unit over budget",
                "task ttp.tasks.three  (budget: task)",
                "  3 > 2  queries",
                "  queries, in order of first execution (count, total time):",
                '       3x * ms  postgresql SELECT COUNT(*) AS "__count" FROM "ttp_customer"  <- repeated',
            ],
            consecutive=False,
        )
        result.stdout.fnmatch_lines(
            [
                "FAILED test_views.py::test_n_plus_one - Failed: zenmetry: 1 unit over budget",
                "FAILED test_views.py::test_a_task - Failed: zenmetry: 1 unit over budget",
            ]
        )

    def test_the_ini_option_turns_it_on_too(self, project: pytest.Pytester) -> None:
        project.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = ttp.settings\npythonpath = .\nzenmetry = true\n")
        project.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3, failed=2)

    def test_the_report_lists_every_unit_and_fails_nothing(self, project: pytest.Pytester) -> None:
        result = project.runpytest_subprocess("--zenmetry-report", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=5)
        result.stdout.fnmatch_lines(
            [
                "*zenmetry: units by route and task, heaviest (most queries) first, then slowest*",
                "kind  name *units  queries p50  max  round trips max  db ms max  mem MiB max  ext max  ms max  breaches",
            ]
        )
        rows = [re.split(r"\s{2,}", line) for line in result.stdout.lines if line.startswith(("http ", "task "))]
        assert [(row[0], row[1], row[2], row[3], row[4], row[5], row[8], row[10]) for row in rows] == [
            ("http", "nplusone/", "2", "13", "13", "13", "0", "queries, repeated_queries"),
            ("task", "ttp.tasks.three", "1", "3", "3", "3", "0", "queries"),
            ("http", "one/", "2", "1", "1", "1", "0", "-"),
        ]


AS_DJANGO_COUNTS = """
import pytest
from ttp.models import Customer
from zenmetry.testing import assert_budget

def _three():
    Customer.objects.create(name="a")
    Customer.objects.filter(name="a").count()
    Customer.objects.filter(name="a").exists()

@pytest.mark.django_db
def test_three_within_three():
    with assert_budget(queries=3):
        _three()

@pytest.mark.django_db
def test_four_over_three():
    with assert_budget(queries=3):
        _three()
        Customer.objects.count()

def test_a_request_within_its_route_budget(client, db):
    assert client.get("/one/").status_code == 200
"""

UNITTEST_AS_DJANGO_COUNTS = """
from django.test import TestCase
from ttp.models import Customer
from zenmetry.testing import assert_budget

class Counted(TestCase):
    def test_three_within_three(self):
        with assert_budget(queries=3), self.assertNumQueries(3):
            Customer.objects.create(name="a")
            Customer.objects.filter(name="a").count()
            Customer.objects.filter(name="a").exists()
"""


class TestAsDjangoCounts:
    """A test's own transaction adds nothing to the units inside it: the ``BEGIN`` psycopg sends
    with the test's first statement is a round trip, not a query."""

    @pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
    def test_the_first_statements_of_a_test_count_as_in_production(self, project: pytest.Pytester, driver: str) -> None:
        if driver == "psycopg2":  # Django prefers psycopg 3 when both are installed: hide it
            settings = project.path / "ttp" / "settings.py"
            settings.write_text('import sys\nsys.modules["psycopg"] = None\n' + settings.read_text())
        (project.path / "zenmetry.toml").write_text('[http."one/"]\nqueries = 1\n')
        project.makepyfile(test_counts=AS_DJANGO_COUNTS, test_unittest_counts=UNITTEST_AS_DJANGO_COUNTS)
        result = project.runpytest_subprocess("test_counts.py", "test_unittest_counts.py", "--zenmetry", *NO_FLAGS)
        result.assert_outcomes(passed=3, failed=1)
        result.stdout.fnmatch_lines(
            [
                "E       AssertionError: zenmetry: 1 unit over budget",
                "E       assert_budget block at */test_counts.py:17  (budget: assert_budget)",
                "E         4 > 3  queries",
                "E         queries 4 (5 round trips)",
                "E         queries, in order of first execution (count, total time):",
                "E         and the driver's own round trips:",
                "E         *1x * ms  postgresql BEGIN",
            ],
            consecutive=False,
        )
        result.stdout.fnmatch_lines(["FAILED test_counts.py::test_four_over_three - AssertionError: *"])


class TestLocalAssertions:
    def test_assert_budget_and_zen_units_work_without_the_global_mode(self, project: pytest.Pytester) -> None:
        project.makepyfile(
            test_local="""
            from zenmetry.testing import assert_budget

            def test_within(client, customers):
                with assert_budget(queries=1, external_calls=0):
                    client.get("/one/")

            def test_over(client, customers):
                with assert_budget(queries=5):
                    client.get("/nplusone/")

            @assert_budget(queries=3)
            def test_decorated(customers):
                from ttp.tasks import three
                three.delay()

            def test_units(client, customers, zen_units):
                client.get("/one/")
                client.get("/nplusone/")
                assert [(u.kind, u.name, u.figures.queries, u.figures.repeated_max) for u in zen_units] == [
                    ("http", "one/", 1, 1), ("http", "nplusone/", 13, 12)]
        """
        )
        result = project.runpytest_subprocess("test_local.py", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=3, failed=1)
        result.stdout.fnmatch_lines(
            [
                "E       AssertionError: zenmetry: 1 unit over budget",
                "E       assert_budget block at */test_local.py:8  (budget: assert_budget)",
                "E         13 > 5  queries",
            ]
        )

    def test_slow_statements_and_memory_say_where(self, project: pytest.Pytester) -> None:
        """assert_budget checks slow_query_ms and memory_mb; the report names the statement's line
        and says how the memory will be explained."""
        project.makepyfile(
            test_where="""
            from django.db import connection
            from zenmetry.testing import assert_budget

            kept = []

            def test_slow(db):
                with assert_budget(slow_query_ms=500):
                    connection.cursor().execute("SELECT pg_sleep(0.6)")

            def test_memory():
                with assert_budget(memory_mb=10):
                    kept.append(b"x" * (40 * 2**20))
        """
        )
        result = project.runpytest_subprocess("test_where.py", "-p", "no:cacheprovider")
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(
            [
                "E       assert_budget block at */test_where.py:7  (budget: assert_budget)",
                "E         6* ms > 500.0 ms  slow_query_ms  at test_where.py:8 test_slow",
                "E         queries, in order of first execution (count, total time):",
                "E              1x    6* ms  postgresql SELECT pg_sleep(?)  <- slow (6* ms) at test_where.py:8 test_slow",
                "E       assert_budget block at */test_where.py:11  (budget: assert_budget)",
                "E         4*.* MiB > 10.0 MiB  memory_mb",
                "E         allocations: not traced in this unit; the next assert_budget block at */test_where.py:11 "
                "of this process will be (ZENMETRY_MEMORY_TRACE)",
            ]
        )


class TestBadInput:
    def test_an_unknown_limit_in_assert_budget_is_a_collection_error(self, project: pytest.Pytester) -> None:
        project.makepyfile(
            test_bad="""
            from zenmetry.testing import assert_budget

            @assert_budget(querys=3)
            def test_x():
                pass
        """
        )
        result = project.runpytest_subprocess("test_bad.py", "-p", "no:cacheprovider")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(
            [
                "E   zenmetry._errors.ConfigError: assert_budget at */test_bad.py:3, key 'querys': unknown limit; "
                "allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms, queue_wait_ms",
            ]
        )

    def test_a_marker_naming_an_unknown_limit_stops_the_run(self, project: pytest.Pytester) -> None:
        project.makepyfile(
            test_marker="""
            import pytest

            @pytest.mark.zenmetry_allow("querys")
            def test_x():
                pass
        """
        )
        result = project.runpytest_subprocess("test_marker.py", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                "ERROR: zenmetry: @pytest.mark.zenmetry_allow('querys') on test_marker.py::test_x: unknown limit; "
                "allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms, queue_wait_ms",
            ]
        )

    def test_a_broken_budget_file_stops_the_run(self, project: pytest.Pytester) -> None:
        (project.path / "zenmetry.toml").write_text("[http]\nqueries = -1\n")
        result = project.runpytest_subprocess("--zenmetry", "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            [
                f"ERROR: zenmetry: budget file '{project.path / 'zenmetry.toml'}', entry [http], key 'queries': "
                "expected a non-negative integer, got -1",
            ]
        )


SNAPSHOT_TESTS = """
import pytest
from ttp.tasks import three

def test_one_query(client, customers):
    assert client.get("/one/").status_code == 200

def test_n_plus_one(client, customers):
    assert client.get("/nplusone/").status_code == 200

def test_save(client, db):
    assert client.post("/save/").status_code == 200

@pytest.mark.parametrize("times", [1, 2])
def test_parametrized(client, customers, times):
    for _ in range(times):
        client.get("/one/")

class TestInAClass:
    def test_a_task(self, customers):
        three.delay()

def test_no_unit():
    assert sum([1, 1]) == 2

@pytest.mark.django_db(transaction=True)
def test_an_external_call(client, live_server):
    assert client.get("/proxy/", {"url": live_server.url + "/one/"}).status_code == 200
"""

COUNT = 'SELECT COUNT(*) AS "__count" FROM "ttp_customer"'
ORDERED = 'SELECT "ttp_customer"."id", "ttp_customer"."name" FROM "ttp_customer" ORDER BY "ttp_customer"."id" ASC'
BY_ID = 'SELECT "ttp_customer"."id", "ttp_customer"."name" FROM "ttp_customer" WHERE "ttp_customer"."id" = ? LIMIT ?'

RECORDED = f"""# zenmetry snapshots of test_snap.py: each test's units, with their statement shapes in order
# of first execution and their counts. Compared by pytest --zenmetry-snapshot, rewritten by
# --zenmetry-snapshot-update; review its changes like code.

TestInAClass::test_a_task
  task ttp.tasks.three
    3x postgresql {COUNT}

test_an_external_call
  http one/
    1x postgresql {COUNT}
  http proxy/
    1x external localhost

test_n_plus_one
  http nplusone/
    1x postgresql {ORDERED}
    12x postgresql {BY_ID}

test_one_query
  http one/
    1x postgresql {COUNT}

test_parametrized[1]
  http one/
    1x postgresql {COUNT}

test_parametrized[2]
  http one/
    1x postgresql {COUNT}
  http one/
    1x postgresql {COUNT}

test_save
  http save/
    1x postgresql SAVEPOINT ?
    1x postgresql INSERT INTO "ttp_customer" ("name") VALUES (?) RETURNING "ttp_customer"."id"
    1x postgresql RELEASE SAVEPOINT ?
"""
"""What the first run records: sections sorted by test name, no time, id, port or path; a unit's
queries as Django counts them. The view's first statement opens the test's transaction: psycopg's
``BEGIN`` is a round trip of the unit, not a query, and not in the snapshot."""

N_PLUS_ONE_IN_ONE = """
def one(request):
    names = [Customer.objects.get(pk=c.pk).name for c in Customer.objects.order_by("id")]
    return JsonResponse({"n": Customer.objects.count(), "names": names})
"""

NO_FLAGS = ("-p", "no:cacheprovider", "-p", "no:randomly")


@pytest.fixture
def snapshotted(project: pytest.Pytester) -> pytest.Pytester:
    project.makepyfile(test_snap=SNAPSHOT_TESTS)
    return project


def _snapshot_file(project: pytest.Pytester) -> str:
    return (project.path / "test_snap.zenmetry").read_text(encoding="utf-8")


class TestSnapshots:
    def test_the_first_run_records_every_test_with_units_and_says_so(self, snapshotted: pytest.Pytester) -> None:
        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot", "-p", "no:cacheprovider")
        result.assert_outcomes(passed=8)
        assert _snapshot_file(snapshotted) == RECORDED
        result.stdout.fnmatch_lines(
            [
                "*zenmetry: query snapshots*",
                "recorded          test_snap.py::TestInAClass::test_a_task  (units 1, queries 3)",
                "recorded          test_snap.py::test_an_external_call  (units 2, queries 1)",
                "recorded          test_snap.py::test_n_plus_one  (units 1, queries 13)",
                "recorded          test_snap.py::test_one_query  (units 1, queries 1)",
                "recorded          test_snap.py::test_parametrized[1]  (units 1, queries 1)",
                "recorded          test_snap.py::test_parametrized[2]  (units 2, queries 2)",
                "recorded          test_snap.py::test_save  (units 1, queries 3)",
                "7 recorded; tests with a snapshot: units 0 -> 0, queries 0 -> 0",
                "written: test_snap.zenmetry",
            ]
        )

    def test_a_second_run_passes_and_leaves_the_file_byte_identical(self, snapshotted: pytest.Pytester) -> None:
        snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot", *NO_FLAGS[:2]).assert_outcomes(passed=8)
        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot-strict", *NO_FLAGS[:2])
        result.assert_outcomes(passed=8)
        assert _snapshot_file(snapshotted) == RECORDED
        result.stdout.fnmatch_lines(["7 same; tests with a snapshot: units 9 -> 9, queries 24 -> 24"])
        assert "written:" not in result.stdout.str()

    def test_an_n_plus_one_fails_its_test_with_the_diff_until_updated(self, snapshotted: pytest.Pytester) -> None:
        snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot", *NO_FLAGS[:2]).assert_outcomes(passed=8)
        views = (snapshotted.path / "ttp" / "views.py").read_text()
        start, end = views.index("def one("), views.index("def nplusone(")
        (snapshotted.path / "ttp" / "views.py").write_text(
            views[:start] + N_PLUS_ONE_IN_ONE.lstrip() + "\n" + views[end:]
        )
        conftest = (snapshotted.path / "conftest.py").read_text()
        (snapshotted.path / "conftest.py").write_text(conftest.replace("range(12)", "range(13)"))

        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot", *NO_FLAGS[:2])
        result.assert_outcomes(passed=3, failed=5)
        result.stdout.fnmatch_lines(
            [
                "*_ test_one_query _*",
                "zenmetry: the units of this test changed from its snapshot (test_snap.zenmetry, line 20):",
                "  http one/",
                f"    + 1x postgresql {ORDERED}",
                f"    + 13x postgresql {BY_ID}",
                "if it is intended, accept it with pytest --zenmetry-snapshot-update and review the file's diff",
                "*_ test_n_plus_one _*",
                "zenmetry: the units of this test changed from its snapshot (test_snap.zenmetry, line 15):",
                "  http nplusone/",
                f"    12x -> 13x postgresql {BY_ID}",
                "if it is intended, accept it with pytest --zenmetry-snapshot-update and review the file's diff",
            ]
        )
        result.stdout.fnmatch_lines(
            [
                "*zenmetry: query snapshots*",
                "changed (failed)  test_snap.py::test_an_external_call  (units 2 -> 2, queries 1 -> 2)",
                "changed (failed)  test_snap.py::test_n_plus_one  (units 1 -> 1, queries 13 -> 14)",
                "changed (failed)  test_snap.py::test_one_query  (units 1 -> 1, queries 1 -> 15)",
                "changed (failed)  test_snap.py::test_parametrized[1]  (units 1 -> 1, queries 1 -> 15)",
                "changed (failed)  test_snap.py::test_parametrized[2]  (units 2 -> 2, queries 2 -> 30)",
                "2 same, 5 changed; tests with a snapshot: units 9 -> 9, queries 24 -> 82",
            ]
        )
        assert _snapshot_file(snapshotted) == RECORDED  # a failing comparison writes nothing

        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot-update", *NO_FLAGS[:2])
        result.assert_outcomes(passed=8)
        result.stdout.fnmatch_lines(
            [
                "updated           test_snap.py::test_n_plus_one  (units 1 -> 1, queries 13 -> 14)",
                "2 same, 5 updated; tests with a snapshot: units 9 -> 9, queries 24 -> 82",
                "written: test_snap.zenmetry",
            ]
        )
        updated = _snapshot_file(snapshotted)
        assert f"test_one_query\n  http one/\n    1x postgresql {ORDERED}\n    13x postgresql {BY_ID}\n" in updated
        assert f"    1x postgresql {COUNT}\n" in updated
        snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot-strict", *NO_FLAGS[:2]).assert_outcomes(
            passed=8
        )

    def test_a_test_without_a_snapshot_fails_under_strict(self, snapshotted: pytest.Pytester) -> None:
        snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot", *NO_FLAGS[:2]).assert_outcomes(passed=8)
        snapshotted.makepyfile(
            test_snap=SNAPSHOT_TESTS + "\ndef test_new(client, customers):\n    client.get('/one/')\n"
        )
        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot-strict", *NO_FLAGS[:2])
        result.assert_outcomes(passed=8, failed=1)
        result.stdout.fnmatch_lines(
            [
                "*_ test_new _*",
                "zenmetry: no snapshot of this test in test_snap.zenmetry (--zenmetry-snapshot-strict); record it "
                "with pytest --zenmetry-snapshot-update and commit the file",
                "missing (strict)  test_snap.py::test_new  (units 1, queries 1)",
            ]
        )
        assert _snapshot_file(snapshotted) == RECORDED

    def test_xdist_workers_compare_and_the_controller_alone_writes(self, snapshotted: pytest.Pytester) -> None:
        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot", "-n", "2", *NO_FLAGS[:2])
        result.assert_outcomes(passed=8)
        assert _snapshot_file(snapshotted) == RECORDED
        result = snapshotted.runpytest_subprocess(
            "test_snap.py", "--zenmetry-snapshot-strict", "-n", "2", *NO_FLAGS[:2]
        )
        result.assert_outcomes(passed=8)

    def test_the_ini_options_turn_it_on_and_choose_the_folder(self, snapshotted: pytest.Pytester) -> None:
        snapshotted.makeini(
            "[pytest]\nDJANGO_SETTINGS_MODULE = ttp.settings\npythonpath = .\n"
            "zenmetry_snapshot = true\nzenmetry_snapshot_dir = snapshots\n"
        )
        snapshotted.runpytest_subprocess("test_snap.py", *NO_FLAGS[:2]).assert_outcomes(passed=8)
        assert (snapshotted.path / "snapshots" / "test_snap.zenmetry").read_text(encoding="utf-8") == RECORDED
        assert not (snapshotted.path / "test_snap.zenmetry").exists()


class TestCorruptSnapshots:
    @pytest.mark.parametrize(
        ("line", "problem"),
        [
            ("    one query", "expected 'COUNTx SYSTEM STATEMENT' or 'COUNTx external HOST', got 'one query'"),
            (
                "   http one/",
                "'   http one/' is indented by neither 2 spaces (a unit) nor 4 (a statement or external call)",
            ),
            ("  http", "expected a unit as 'KIND NAME' (http orders/), got 'http'"),
            (
                "    0x postgresql SELECT 1",
                "expected 'COUNTx SYSTEM STATEMENT' or 'COUNTx external HOST', got '0x postgresql SELECT 1'",
            ),
        ],
    )
    def test_a_bad_line_fails_the_module_s_tests_naming_file_test_and_line(
        self, snapshotted: pytest.Pytester, line: str, problem: str
    ) -> None:
        lines = RECORDED.splitlines()
        at = lines.index("test_one_query") + 2  # the line after the unit's title
        lines.insert(at, line)
        (snapshotted.path / "test_snap.zenmetry").write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = snapshotted.runpytest_subprocess("test_snap.py", "--zenmetry-snapshot-update", *NO_FLAGS[:2])
        result.assert_outcomes(failed=8)  # every test of the module, until its file is fixed
        result.stdout.fnmatch_lines(
            [
                f"zenmetry: snapshot file 'test_snap.zenmetry', line {at + 1} (test test_one_query): {problem}",
                "fix the line, or delete the file and run pytest --zenmetry-snapshot-update to record it anew",
            ]
        )
        assert (snapshotted.path / "test_snap.zenmetry").read_text(encoding="utf-8") == "\n".join(lines) + "\n"


class TestNothingUnmeasured:
    def test_assert_budget_imported_inside_a_test_measures_its_block(self, project: pytest.Pytester) -> None:
        """The test database connection is open before zenmetry.testing is first imported:
        it is traced then, and the block's 4 queries are counted."""
        project.makepyfile(
            test_late="""
            from ttp.models import Customer

            def test_late_import(customers):
                from zenmetry.testing import assert_budget

                with assert_budget(queries=3):
                    for _ in range(4):
                        Customer.objects.count()
        """
        )
        result = project.runpytest_subprocess("test_late.py", *NO_FLAGS[:2])
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(
            [
                "E       AssertionError: zenmetry: 1 unit over budget",
                "E       assert_budget block at */test_late.py:6  (budget: assert_budget)",
                "E         4 > 3  queries",
            ]
        )

    def test_statements_on_a_connection_that_cannot_be_traced_fail_the_block(self, project: pytest.Pytester) -> None:
        """Every installed driver can be traced late, so the test marks the real connection as
        one that cannot (what zenmetry does for an unknown driver): the block fails saying why."""
        project.makepyfile(
            test_untraced="""
            from django.db import connection
            from ttp.models import Customer
            from zenmetry.testing import _open_connections
            from zenmetry.testing import assert_budget, recorded

            def test_block(customers):
                connection.ensure_connection()
                _open_connections._unmeasurable(connection, "an unknown driver")
                with assert_budget(queries=10):
                    Customer.objects.count()
                    Customer.objects.count()

            def test_recorded(customers):
                with recorded():
                    Customer.objects.count()
        """
        )
        result = project.runpytest_subprocess("test_untraced.py", *NO_FLAGS[:2])
        result.assert_outcomes(failed=2)
        result.stdout.fnmatch_lines(
            [
                "E       AssertionError: zenmetry: assert_budget at */test_untraced.py:9 missed statements: 2 statement(s) "
                "ran on the postgresql connection 'default', which was opened before zenmetry instrumented this process "
                "(an unknown driver), so the block was not measured. Instrument before the first connection opens: "
                "import zenmetry.testing's helpers in conftest.py (from zenmetry.testing import assert_budget), or run pytest *",
                "E       AssertionError: zenmetry: recorded() missed statements: 1 statement(s) ran on the postgresql *",
            ]
        )

    def test_nested_blocks_each_keep_their_own_units(self, project: pytest.Pytester) -> None:
        """recorded() around assert_budget around a request, then more units: each block keeps
        its own (it raised ValueError from list.remove, which compared collectors by equality)."""
        project.makepyfile(
            test_nested="""
            from ttp.models import Customer
            from ttp.tasks import three
            from zenmetry.testing import assert_budget, recorded

            def test_nested(client, customers):
                with recorded() as outer:
                    with assert_budget(queries=1):
                        client.get("/one/")
                    client.get("/nplusone/")
                    three.delay()
                assert [u.name for u in outer] == ["nplusone/", "ttp.tasks.three"]

            def test_inner_block_over(customers):
                with assert_budget(queries=5):
                    with assert_budget(queries=1):
                        Customer.objects.count()
                        Customer.objects.count()
                    Customer.objects.count()
        """
        )
        result = project.runpytest_subprocess("test_nested.py", *NO_FLAGS[:2])
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            [
                "E           assert_budget block at */test_nested.py:15  (budget: assert_budget)",
                "E             2 > 1  queries",
            ]
        )
        result = project.runpytest_subprocess("test_nested.py", "--zenmetry-snapshot", *NO_FLAGS[:2])
        result.assert_outcomes(passed=1, failed=1)
        assert (
            (project.path / "test_nested.zenmetry")
            .read_text(encoding="utf-8")
            .endswith(
                "test_nested\n  http nplusone/\n"
                f"    1x postgresql {ORDERED}\n    12x postgresql {BY_ID}\n"
                f"  task ttp.tasks.three\n    3x postgresql {COUNT}\n"
            )
        )
