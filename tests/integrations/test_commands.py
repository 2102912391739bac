"""Management commands as units: ``python -m django <command>`` under ``opentelemetry-instrument``,
exporting OTLP/HTTP to the test receiver, on real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.otlp import Receiver
from support.processes import instrumented_command


@pytest.mark.usefixtures("postgres_db")
class TestCommands:
    def test_a_run_is_a_unit_with_its_figures_and_metrics(self, receiver: Receiver) -> None:
        """A command of 3 queries is one unit of kind command, named by the command, exported
        before the process exits, with its metric points."""
        result = instrumented_command(receiver, "three_queries")
        assert (result.returncode, result.stdout) == (0, "done\n"), result.stderr
        receiver.wait(lambda r: len(r.units()) == 1)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.unit.kind"], unit.attributes["zen.unit.name"]) == ("command", "three_queries")
        assert (unit.attributes["zen.db.queries"], unit.attributes["zen.budget"]) == (3, "default")
        assert unit.status_code == 0
        receiver.wait(lambda r: r.total("zen.unit.db.queries", zen__unit__kind="command", db__system="all").count == 1)
        total = receiver.total("zen.unit.db.queries", zen__unit__name="three_queries", db__system="all")
        assert (total.count, total.sum) == (1, 3)
        assert (
            receiver.total("zen.unit.duration", zen__unit__name="three_queries", zen__command__status="OK").count == 1
        )

    def test_a_command_over_its_budget_breaches_it(self, receiver: Receiver, tmp_path: Path) -> None:
        """[command."three_queries"] queries = 2: a breach event, the limit on the span, the counter."""
        budgets = tmp_path / "zenmetry.toml"
        budgets.write_text('[command]\nqueries = 10\n\n[command."three_queries"]\nqueries = 2\n')
        assert instrumented_command(receiver, "three_queries", ZENMETRY_BUDGETS=str(budgets)).returncode == 0
        receiver.wait(lambda r: len(r.units()) == 1)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.budget"], unit.attributes["zen.budget.breached"]) == (
            "three_queries",
            ["queries"],
        )
        assert unit.events_named("zen.budget.breach") == [
            {"zen.limit": "queries", "zen.limit.value": 2, "zen.actual": 3, "zen.budget": "three_queries"}
        ]
        receiver.wait(lambda r: r.total("zen.budget.breaches", zen__unit__name="three_queries").value == 1)

    @pytest.mark.parametrize(("flag", "returncode"), [("--fail", 1), ("--exit", 1)])
    def test_a_command_that_raises_or_exits_non_zero_is_an_error(
        self, receiver: Receiver, flag: str, returncode: int
    ) -> None:
        """The command fails as it would without zenmetry; its unit has status ERROR and its points
        zen.command.status ERROR."""
        result = instrumented_command(receiver, "three_queries", flag)
        assert result.returncode == returncode
        if flag == "--fail":
            assert "RuntimeError: the command fails on purpose" in result.stderr
        receiver.wait(lambda r: len(r.units()) == 1)
        (unit,) = receiver.units()
        assert (unit.attributes["zen.db.queries"], unit.status_code) == (3, 2)  # STATUS_CODE_ERROR
        receiver.wait(lambda r: r.total("zen.unit.duration", zen__command__status="ERROR").count == 1)

    def test_commands_can_be_turned_off(self, receiver: Receiver) -> None:
        """ZENMETRY_COMMANDS=off: the command runs, and is no unit (the process exported all it had
        before it exited)."""
        assert instrumented_command(receiver, "three_queries", ZENMETRY_COMMANDS="off").returncode == 0
        assert receiver.units() == []
        assert [span.name for span in receiver.spans() if span.kind == "CLIENT"] == ["SELECT"] * 3
