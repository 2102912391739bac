"""Starting zenmetry: the launcher's entry points, the distro's defaults, bad settings
stopping the process, Django settings that are not there yet, and ``configure()``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.util._importlib_metadata import entry_points

from conftest import BIN, TESTS, otel_env, project_env
from otlp import Receiver
from zenmetry._configurator import ZenmetryConfigurator
from zenmetry._distro import ZenmetryDistro


def run(
    code: str, env: dict[str, str], *, launcher: bool = True, cwd: Path = TESTS
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", textwrap.dedent(code)]
    if launcher:
        command = [str(BIN / "opentelemetry-instrument"), *command]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


class TestEntryPoints:
    def test_distro_and_configurator_are_registered_as_zenmetry(self) -> None:
        (distro,) = [ep for ep in entry_points(group="opentelemetry_distro") if ep.name == "zenmetry"]
        (configurator,) = [ep for ep in entry_points(group="opentelemetry_configurator") if ep.name == "zenmetry"]
        assert (distro.load(), configurator.load()) == (ZenmetryDistro, ZenmetryConfigurator)


class TestDistroDefaults:
    def test_otlp_over_http_is_the_default(self) -> None:
        result = run(
            "import os; print(os.environ['OTEL_TRACES_EXPORTER'], os.environ['OTEL_METRICS_EXPORTER'], os.environ['OTEL_EXPORTER_OTLP_PROTOCOL'])",
            project_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"),
        )
        assert (result.returncode, result.stdout) == (0, "otlp otlp http/protobuf\n"), result.stderr

    def test_the_users_environment_wins(self) -> None:
        result = run(
            "import os; print(os.environ['OTEL_TRACES_EXPORTER'], os.environ['OTEL_METRICS_EXPORTER'])",
            project_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="console"),
        )
        assert result.stdout == "none console\n", result.stderr


class TestBadSettingsStopTheProcess:
    @pytest.mark.parametrize(
        ("variables", "message"),
        [
            ({"ZENMETRY_CONSOLE": "yes"}, "zenmetry: ZENMETRY_CONSOLE='yes': expected 1 (print a line per unit) or 0"),
            ({"ZENMETRY_BUDGETS": "missing.toml"}, "zenmetry: ZENMETRY_BUDGETS='missing.toml': no such budget file"),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "soon"},
                "zenmetry: ZENMETRY_HTTP_TIMEOUT='soon': expected a positive number of seconds, such as 5",
            ),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "-2"},
                "zenmetry: ZENMETRY_HTTP_TIMEOUT='-2': expected a positive number of seconds, such as 5",
            ),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "0"},
                "zenmetry: ZENMETRY_HTTP_TIMEOUT='0': expected a positive number of seconds, such as 5",
            ),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "nan"},
                "zenmetry: ZENMETRY_HTTP_TIMEOUT='nan': expected a positive number of seconds, such as 5",
            ),
        ],
    )
    def test_a_bad_variable_stops_start_up_with_status_2(self, variables: dict[str, str], message: str) -> None:
        result = run(
            "print('the application ran')",
            project_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", **variables),
        )
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines() == [
            message,
            "zenmetry: fix the configuration above; the process was not started",
        ]

    def test_a_broken_budget_file_stops_start_up_naming_file_entry_and_key(self, tmp_path: Path) -> None:
        (tmp_path / "zenmetry.toml").write_text('[http."orders/<int:pk>/"]\nquerys = 8\n')
        result = run(
            "print('the application ran')",
            project_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none"),
            cwd=tmp_path,
        )
        assert result.returncode == 2
        assert result.stderr.splitlines()[0] == (
            "zenmetry: budget file '" + str(tmp_path / "zenmetry.toml") + '\', entry [http."orders/<int:pk>/"], '
            "key 'querys': unknown limit; allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries"
        )


@pytest.mark.usefixtures("postgres_db")
class TestDjangoSettingsNotThereYet:
    def test_django_is_instrumented_at_setup_when_the_settings_module_comes_later(self) -> None:
        """The Celery pattern: DJANGO_SETTINGS_MODULE is set by the app, after the launcher ran.
        zenmetry says so, waits for ``django.setup()``, and the app keeps its own settings."""
        env = project_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", ZENMETRY_CONSOLE="1")
        del env["DJANGO_SETTINGS_MODULE"]
        result = run(
            """
            import os
            os.environ["DJANGO_SETTINGS_MODULE"] = "zentestapp.settings"
            import django
            django.setup()
            from django.conf import settings
            from django.test import Client
            print(settings.ROOT_URLCONF, Client().get("/queries/2/").status_code)
            """,
            env,
        )
        assert result.stdout == "zentestapp.urls 200\n", result.stderr
        lines = result.stderr.splitlines()
        assert lines[0] == (
            "zenmetry: DJANGO_SETTINGS_MODULE is not set; Django will be instrumented when django.setup() runs. "
            "Set it in the environment of opentelemetry-instrument (for example DJANGO_SETTINGS_MODULE=mysite.settings) "
            "so that requests are measured from the first one"
        )
        assert [line.split(" | ")[:2] for line in lines[1:]] == [
            ["zenmetry http GET queries/<int:n>/ 200", "queries 2 (postgresql 2)"]
        ]


@pytest.mark.usefixtures("postgres_db")
class TestConfigure:
    def test_configure_without_the_launcher_is_idempotent(self, receiver: Receiver) -> None:
        result = run(
            """
            import zenmetry, django
            zenmetry.configure()
            zenmetry.configure()
            django.setup()
            from django.test import Client
            print(Client().get("/queries/3/").status_code)
            """,
            otel_env(receiver),
            launcher=False,
        )
        assert (result.returncode, result.stdout) == (0, "200\n"), result.stderr
        assert "already instrumented" not in result.stderr
        receiver.wait(lambda r: len(r.units()) == 1)
        assert receiver.units()[0].attributes["zen.db.queries"] == 3

    def test_configure_raises_config_error_on_bad_settings(self) -> None:
        result = run(
            """
            import zenmetry
            try:
                zenmetry.configure()
            except zenmetry.ConfigError as error:
                print("ConfigError:", error)
            """,
            project_env(ZENMETRY_HTTP_TIMEOUT="-1"),
            launcher=False,
        )
        assert (
            result.stdout
            == "ConfigError: ZENMETRY_HTTP_TIMEOUT='-1': expected a positive number of seconds, such as 5\n"
        ), result.stderr


class TestModules:
    @pytest.mark.parametrize(
        "module",
        sorted(path.stem for path in (TESTS.parent / "src" / "zenmetry").glob("*.py") if path.stem != "__main__"),
    )
    def test_every_module_imports_on_its_own(self, module: str) -> None:
        """No import cycle depends on which zenmetry module a process imports first."""
        name = "zenmetry" if module == "__init__" else f"zenmetry.{module}"
        result = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60, check=False
        )
        assert (result.returncode, result.stderr) == (0, "")


DECLARATIVE = """
file_format: "1.0"
propagator:
  composite:
    - tracecontext:
    - baggage:
tracer_provider:
  processors:
    - batch:
        schedule_delay: 100
        exporter:
          otlp_http:
            endpoint: {endpoint}/v1/traces
meter_provider:
  readers:
    - periodic:
        interval: 300
        exporter:
          otlp_http:
            endpoint: {endpoint}/v1/metrics
"""


@pytest.mark.usefixtures("postgres_db")
class TestDeclarativeConfiguration:
    def test_with_otel_config_file_units_are_still_measured_and_the_user_is_told(
        self, receiver: Receiver, tmp_path: Path
    ) -> None:
        """OTEL_CONFIG_FILE makes the SDK ignore configurator arguments: zenmetry adds its processor
        to the provider the file built, and says that sampled-out traces will not be counted."""
        config = tmp_path / "otel.yaml"
        config.write_text(DECLARATIVE.format(endpoint=receiver.endpoint))
        result = run(
            """
            import django
            django.setup()
            from django.test import Client
            print(Client().get("/queries/2/").status_code)
            """,
            project_env(OTEL_CONFIG_FILE=str(config)),
        )
        assert (result.returncode, result.stdout) == (0, "200\n"), result.stderr
        assert (
            "zenmetry: OTEL_CONFIG_FILE is set; the unit processor was added to the provider it built, but its "
            "sampler is not wrapped (zenmetry's metrics count sampled traces only) and neither are its "
            "exporters (statements and URLs are exported as the instrumentations record them)"
        ) in result.stderr.splitlines()
        receiver.wait(lambda r: len(r.units()) == 1 and r.total("zen.unit.db.queries", db__system="all").count == 1)
        assert receiver.units()[0].attributes["zen.db.queries"] == 2
        assert receiver.total("zen.unit.db.queries", db__system="postgresql").sum == 2


class TestDebugOnSqlite:
    def test_djangos_query_log_does_not_count(self, sqlite_db: str) -> None:
        """With DEBUG=True on SQLite, Django quotes every logged statement's parameters through
        the connection: 3 queries are still 3, as connection.queries says."""
        result = run(
            """
            import django
            django.setup()
            from django.db import connection
            from django.test import Client
            print(Client().get("/queries/3/").status_code, len(connection.queries))
            """,
            project_env(
                ZEN_TEST_DB="sqlite",
                ZEN_TEST_SQLITE_PATH=sqlite_db,
                ZEN_TEST_DEBUG="1",
                ZENMETRY_CONSOLE="1",
                OTEL_TRACES_EXPORTER="none",
                OTEL_METRICS_EXPORTER="none",
            ),
        )
        assert result.stdout == "200 3\n", result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("zenmetry http")]
        assert line.split(" | ")[:2] == ["zenmetry http GET queries/<int:n>/ 200", "queries 3 (sqlite 3)"]
