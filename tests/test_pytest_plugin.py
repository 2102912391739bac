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
from django.http import JsonResponse
from ttp.models import Customer

def one(request):
    return JsonResponse({"n": Customer.objects.count()})

def nplusone(request):
    ids = [c.id for c in Customer.objects.order_by("id")]
    return JsonResponse({"names": [Customer.objects.get(pk=pk).name for pk in ids]})
"""

NPLUSONE_LINE = next(n for n, line in enumerate(VIEWS.lstrip().splitlines(), 1) if "objects.get(pk=pk)" in line)
"""The line of ttp/views.py that runs the N+1 (``makepyfile`` drops the text's first newline)."""

URLS = """
from django.urls import path
from ttp import views

urlpatterns = [path("one/", views.one), path("nplusone/", views.nplusone)]
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
                "  statements, in order of first execution (count, total time):",
                '       1x * ms  postgresql SELECT "ttp_customer"."id", "ttp_customer"."name" FROM "ttp_customer" ORDER BY "ttp_customer"."id" ASC',
                '      12x * ms  postgresql SELECT "ttp_customer"."id", "ttp_customer"."name" FROM "ttp_customer" WHERE "ttp_customer"."id" = ? LIMIT ?'
                f"  <- repeated at ttp/views.py:{NPLUSONE_LINE} nplusone",
                "*_ test_a_task _*",
                "zenmetry: 1 unit over budget",
                "task ttp.tasks.three  (budget: task)",
                "  3 > 2  queries",
                "  statements, in order of first execution (count, total time):",
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
                "kind  name *units  queries p50  max  db ms max  mem MiB max  ext max  ms max  breaches",
            ]
        )
        rows = [re.split(r"\s{2,}", line) for line in result.stdout.lines if line.startswith(("http ", "task "))]
        assert [(row[0], row[1], row[2], row[3], row[4], row[7], row[9]) for row in rows] == [
            ("http", "nplusone/", "2", "13", "13", "0", "queries, repeated_queries"),
            ("task", "ttp.tasks.three", "1", "3", "3", "0", "queries"),
            ("http", "one/", "2", "1", "1", "0", "-"),
        ]


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
                "E         statements, in order of first execution (count, total time):",
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
                "allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms",
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
                "allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms",
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
