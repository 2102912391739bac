"""``zenmetry check`` and start-up under ``opentelemetry-instrument`` refuse every bad budget
file with the same exact message, and ``check`` prints the effective budgets of a good one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.budgets import BAD_FILES, EXAMPLE, expected_problem, write
from support.processes import BIN, TESTS, project_env


def zenmetry(*args: str, cwd: Path = TESTS, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "zenmetry"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=project_env(**env),
        timeout=60,
        check=False,
    )


class TestCheck:
    def test_a_valid_file_prints_the_effective_budget_of_every_entry(self, tmp_path: Path) -> None:
        path = write(tmp_path, EXAMPLE)
        result = zenmetry("check", str(path))
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == textwrap.dedent(f"""\
            {path}: valid; effective budgets (a limit left out is not checked):
              [http]                          queries 30, db_time_ms 150, duration_ms 800, external_calls 0, repeated_queries 5, slow_query_ms 500
              [http."api/*"]                  queries 12, db_time_ms 150, duration_ms 800, external_calls 0, repeated_queries 5, slow_query_ms 500
              [http."api/v1/*"]               queries 10, db_time_ms 150, duration_ms 800, external_calls 0, repeated_queries 5, slow_query_ms 500
              [http."orders/<int:pk>/"]       queries 8, db_time_ms 150, duration_ms 800, external_calls 0, repeated_queries 5, slow_query_ms 500
              [task]                          memory_mb 50, duration_ms 30000, repeated_queries 5, slow_query_ms 500
              [task."shop.tasks.*"]           memory_mb 50, duration_ms 5000, repeated_queries 5, slow_query_ms 500
              [task."shop.tasks.sync_stock"]  memory_mb 50, duration_ms 30000, external_calls 100, repeated_queries 5, slow_query_ms 500
              [command]                       repeated_queries 5, slow_query_ms 500
            """)

    @pytest.mark.parametrize(("text", "problem"), BAD_FILES)
    def test_a_bad_file_gives_one_message_and_status_2(self, tmp_path: Path, text: str, problem: str) -> None:
        path = write(tmp_path, text)
        result = zenmetry("check", str(path))
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == f"zenmetry: {expected_problem(path, problem)}\n"

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        result = zenmetry("check", str(tmp_path / "nope.toml"))
        assert (result.returncode, result.stderr) == (
            2,
            f"zenmetry: budget file '{tmp_path / 'nope.toml'}': cannot be read (No such file or directory)\n",
        )

    def test_without_an_argument_it_checks_the_file_start_up_would_use(self, tmp_path: Path) -> None:
        write(tmp_path, "[http]\nqueries = 3\n")
        result = zenmetry("check", cwd=tmp_path)
        assert (result.returncode, result.stdout.splitlines()[0]) == (
            0,
            f"{tmp_path / 'zenmetry.toml'}: valid; effective budgets (a limit left out is not checked):",
        )
        (tmp_path / "zenmetry.toml").unlink()
        none = zenmetry("check", cwd=tmp_path)
        assert (none.returncode, none.stderr) == (
            2,
            "zenmetry: no budget file: ZENMETRY_BUDGETS is not set and there is no ./zenmetry.toml\n",
        )
        named = zenmetry("check", cwd=tmp_path, ZENMETRY_BUDGETS=str(tmp_path / "other.toml"))
        assert (named.returncode, named.stderr) == (
            2,
            f"zenmetry: ZENMETRY_BUDGETS='{tmp_path / 'other.toml'}': no such budget file\n",
        )


class TestStartUp:
    @pytest.mark.parametrize(("text", "problem"), BAD_FILES)
    def test_a_bad_file_stops_the_process_before_the_app_runs(self, tmp_path: Path, text: str, problem: str) -> None:
        path = write(tmp_path, text)
        result = subprocess.run(
            [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", "print('the application ran')"],
            capture_output=True,
            text=True,
            cwd=TESTS,
            timeout=60,
            check=False,
            env=project_env(ZENMETRY_BUDGETS=str(path), OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none"),
        )
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.splitlines() == [
            f"zenmetry: {expected_problem(path, problem)}",
            "zenmetry: fix the configuration above; the process was not started",
        ]
