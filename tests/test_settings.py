"""Settings: every ``ZENMETRY_*`` variable read and validated in one place, each bad value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.budgets import write
from zenmetry._errors import ConfigError
from zenmetry.config._settings import is_unit_command, load


class TestLoad:
    def test_nothing_set_gives_the_defaults(self, tmp_path: Path) -> None:
        settings = load({}, cwd=tmp_path)
        assert (settings.console, settings.http_timeout, settings.budgets.path) == (False, None, None)
        assert settings.budgets.lookup("http", "x").checks == (("repeated_queries", 5), ("slow_query_ms", 500.0))

    def test_each_variable_is_read(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[http]\nqueries = 3\n")
        settings = load({"ZENMETRY_CONSOLE": "1", "ZENMETRY_HTTP_TIMEOUT": "2.5", "ZENMETRY_BUDGETS": str(path)})
        assert (settings.console, settings.http_timeout, settings.budgets.lookup("http", "x").checks) == (
            True,
            2.5,
            (("queries", 3), ("repeated_queries", 5), ("slow_query_ms", 500.0)),
        )

    @pytest.mark.parametrize(
        ("variables", "message"),
        [
            ({"ZENMETRY_CONSOLE": "yes"}, "ZENMETRY_CONSOLE='yes': expected 1 (print a line per unit) or 0"),
            (
                {"ZENMETRY_COMMANDS": "import orders"},
                "ZENMETRY_COMMANDS='import orders': expected off, default (every command but servers, workers and "
                "shells), or a comma-separated list of command names",
            ),
            (
                {"ZENMETRY_SERVER_TIMING": "on"},
                "ZENMETRY_SERVER_TIMING='on': expected 1 (a Server-Timing header on every response) or 0",
            ),
            ({"ZENMETRY_BUDGETS": "missing.toml"}, "ZENMETRY_BUDGETS='missing.toml': no such budget file"),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "soon"},
                "ZENMETRY_HTTP_TIMEOUT='soon': expected a positive number of seconds, such as 5",
            ),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "-2"},
                "ZENMETRY_HTTP_TIMEOUT='-2': expected a positive number of seconds, such as 5",
            ),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "0"},
                "ZENMETRY_HTTP_TIMEOUT='0': expected a positive number of seconds, such as 5",
            ),
            (
                {"ZENMETRY_HTTP_TIMEOUT": "nan"},
                "ZENMETRY_HTTP_TIMEOUT='nan': expected a positive number of seconds, such as 5",
            ),
        ],
    )
    def test_a_bad_variable_is_one_problem_naming_it(
        self, tmp_path: Path, variables: dict[str, str], message: str
    ) -> None:
        with pytest.raises(ConfigError) as raised:
            load(variables, cwd=tmp_path)
        assert raised.value.problems == [message]

    @pytest.mark.parametrize(
        ("value", "mode"), [("", "breach"), ("breach", "breach"), ("off", "off"), ("0.001", 0.001), ("1", 1.0)]
    )
    def test_memory_trace_is_breach_off_or_a_share(self, tmp_path: Path, value: str, mode: str | float) -> None:
        assert load({"ZENMETRY_MEMORY_TRACE": value}, cwd=tmp_path).memory_trace == mode

    @pytest.mark.parametrize("value", ["always", "1.5", "-0.1", "nan"])
    def test_a_bad_memory_trace_is_one_problem_naming_it(self, tmp_path: Path, value: str) -> None:
        with pytest.raises(ConfigError) as raised:
            load({"ZENMETRY_MEMORY_TRACE": value}, cwd=tmp_path)
        assert raised.value.problems == [
            f"ZENMETRY_MEMORY_TRACE={value!r}: expected breach (the default), off, or a share of units between 0 "
            "and 1, such as 0.001"
        ]

    @pytest.mark.parametrize(
        ("variables", "expected"),
        [
            ({}, ("detail", 0.01)),
            ({"ZENMETRY_DB_SPANS": "all", "ZENMETRY_DB_SPANS_RATIO": "0.5"}, ("all", 0.5)),
            ({"ZENMETRY_DB_SPANS_RATIO": "1"}, ("detail", 1.0)),
        ],
    )
    def test_db_spans_are_detail_or_all_with_a_ratio(
        self, tmp_path: Path, variables: dict[str, str], expected: tuple[str, float]
    ) -> None:
        settings = load(variables, cwd=tmp_path)
        assert (settings.db_spans, settings.db_spans_ratio) == expected

    def test_bad_db_span_settings_are_one_problem_each(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as raised:
            load({"ZENMETRY_DB_SPANS": "some", "ZENMETRY_DB_SPANS_RATIO": "2"}, cwd=tmp_path)
        assert raised.value.problems == [
            "ZENMETRY_DB_SPANS='some': expected detail (the default: DB spans of units that breached, failed or "
            "fall in the ratio) or all",
            "ZENMETRY_DB_SPANS_RATIO='2': expected a share between 0 and 1, such as 0.01",
        ]

    def test_a_broken_budget_file_names_file_entry_and_key(self, tmp_path: Path) -> None:
        path = write(tmp_path, '[http."orders/<int:pk>/"]\nquerys = 8\n')
        with pytest.raises(ConfigError) as raised:
            load({}, cwd=tmp_path)
        assert raised.value.problems == [
            f"budget file '{path}', entry [http.\"orders/<int:pk>/\"], key 'querys': unknown limit; allowed: "
            "queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms, queue_wait_ms"
        ]

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as raised:
            load({"ZENMETRY_CONSOLE": "2", "ZENMETRY_HTTP_TIMEOUT": "x"}, cwd=tmp_path)
        assert raised.value.problems == [
            "ZENMETRY_CONSOLE='2': expected 1 (print a line per unit) or 0",
            "ZENMETRY_HTTP_TIMEOUT='x': expected a positive number of seconds, such as 5",
        ]


class TestCommands:
    @pytest.mark.parametrize(
        ("value", "units", "not_units"),
        [
            ("", {"clearsessions", "import_orders", "migrate"}, {"runserver", "shell", "db_worker", "test"}),
            ("off", set(), {"clearsessions", "runserver"}),
            ("import_orders, clearsessions", {"import_orders", "clearsessions"}, {"migrate", "runserver"}),
        ],
    )
    def test_which_commands_are_units(self, value: str, units: set[str], not_units: set[str]) -> None:
        """By default every command but those that serve or consume forever; off; or a list."""
        settings = load({"ZENMETRY_COMMANDS": value})
        assert {name for name in units | not_units if is_unit_command(settings, name)} == units
