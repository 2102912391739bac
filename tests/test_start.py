"""Starting zenmetry: the launcher's entry points, the distro's defaults, bad settings
stopping the process, Django settings that are not there yet, and ``configure()``."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.util._importlib_metadata import entry_points

from support.otlp import Receiver
from support.processes import BIN, TESTS, otel_env, project_env
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
    """What each bad setting says is tested on ``_settings.load()`` (test_settings.py); here, that
    the launcher stops the process with those lines and exit status 2 before the app runs."""

    def test_a_broken_budget_file_stops_start_up_with_status_2(self, tmp_path: Path) -> None:
        (tmp_path / "zenmetry.toml").write_text('[http."orders/<int:pk>/"]\nquerys = 8\n')
        result = run(
            "print('the application ran')",
            project_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", ZENMETRY_CONSOLE="yes"),
            cwd=tmp_path,
        )
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines() == [
            "zenmetry: ZENMETRY_CONSOLE='yes': expected 1 (print a line per unit) or 0",
            "zenmetry: budget file '" + str(tmp_path / "zenmetry.toml") + '\', entry [http."orders/<int:pk>/"], '
            "key 'querys': unknown limit; allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms, queue_wait_ms",
            "zenmetry: fix the configuration above; the process was not started",
        ]


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


SOURCE = TESTS.parent / "src" / "zenmetry"
MODULES = sorted(
    ".".join(("zenmetry", *path.relative_to(SOURCE).with_suffix("").parts)).removesuffix(".__init__")
    for path in SOURCE.rglob("*.py")
)


def _imports(module: str) -> set[str]:
    """zenmetry modules ``module`` imports when it is imported (not in functions or TYPE_CHECKING)."""
    path = SOURCE.joinpath(*module.split(".")[1:])
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    # A package's own __init__ is imported before any of its modules: not an edge of the graph.
    return {name for name in found if name in MODULES and name != module and not module.startswith(name + ".")}


class TestModules:
    @pytest.mark.parametrize("module", MODULES)
    def test_every_module_imports_on_its_own(self, module: str) -> None:
        """No import cycle depends on which zenmetry module a process imports first."""
        result = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60, check=False
        )
        assert (result.returncode, result.stderr) == (0, "")

    def test_no_module_imports_itself_through_others(self) -> None:
        """The import graph of the package, read from every module's top-level imports, has no cycle."""
        graph = {module: _imports(module) for module in MODULES}
        cycles = []

        def visit(module: str, path: tuple[str, ...]) -> None:
            for imported in graph[module]:
                if imported in path:
                    cycles.append((*path[path.index(imported) :], imported))
                else:
                    visit(imported, (*path, imported))

        for module in MODULES:
            visit(module, (module,))
        assert cycles == []

    def test_importing_zenmetry_imports_no_integration(self) -> None:
        """``import zenmetry`` (and the distro) leaves every library's integration unimported."""
        code = (
            "import sys, zenmetry, zenmetry._distro; print(sorted(m for m in sys.modules if m.startswith('zenmetry.')))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
        imported = ast.literal_eval(result.stdout)
        assert [module for module in imported if module.startswith("zenmetry.integrations.")] == []
        assert "zenmetry.integrations" in imported

    def test_an_integration_is_imported_only_when_its_instrumentor_loads(self) -> None:
        """The distro imports ``zenmetry.integrations.pymongo`` only for the pymongo instrumentor."""
        code = (
            "import sys\n"
            "from zenmetry import integrations\n"
            "assert integrations.for_entry_point('sqlite3') is None\n"
            "found = integrations.for_entry_point('pymongo')\n"
            "print(type(found).__name__, found.present(), sorted(m for m in sys.modules if m.startswith('zenmetry.integrations.')))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
        assert (result.stdout, result.stderr) == ("PymongoIntegration True ['zenmetry.integrations.pymongo']\n", "")


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
