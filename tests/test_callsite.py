"""Call sites: the line of the application that made a call over a limit, taken only then."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from django.test import Client

from support.budgets import write
from support.harness import Harness
from support.source import MODELS, TASKS, TEMPLATES, VIEWS, line_of, site
from zenmetry.config._budgets import Budgets
from zenmetry.config._settings import Settings
from zenmetry.units import _callsite

CUSTOMER_BY_ID = (
    'SELECT "zentestapp_customer"."id", "zentestapp_customer"."name" FROM "zentestapp_customer" '
    'WHERE "zentestapp_customer"."id" = ? LIMIT ?'
)


def events(harness: Harness, name: str, kind: str = "http") -> list[dict[str, object]]:
    (unit,) = [u for u in harness.units() if u.attributes["zen.unit.kind"] == kind]
    return [dict(event.attributes or {}) for event in unit.events if event.name == name]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many stack walks and memory traces start (the real functions, counted)."""
    calls = {"walks": 0, "traces": 0}
    take, start = _callsite.take, tracemalloc.start

    def counting_take(*args: object) -> object:
        calls["walks"] += 1
        return take(*args)  # type: ignore[arg-type]

    def counting_start(*args: int) -> None:
        calls["traces"] += 1
        start(*args)

    monkeypatch.setattr(_callsite, "take", counting_take)
    monkeypatch.setattr(tracemalloc, "start", counting_start)
    return calls


class TestRepeatedQueries:
    def test_an_n_plus_one_in_a_view_names_the_line_that_runs_it(self, zen: Harness) -> None:
        Client().get("/nplusone/")
        assert events(zen, "zen.db.repeated_query") == [
            {
                "zen.statement.fingerprint": CUSTOMER_BY_ID,
                "zen.count": 12,
                "db.system": "postgresql",
                **site(VIEWS, "names = [Customer.objects.get(pk=pk).name", "n_plus_one"),
            }
        ]

    def test_an_n_plus_one_in_a_template_names_the_template_line_and_the_view(self, zen: Harness) -> None:
        """The view's ``render`` line, and the template line that asked for each count."""
        Client().get("/template-nplusone/")
        (event,) = events(zen, "zen.db.repeated_query")
        assert event == {
            "zen.statement.fingerprint": 'SELECT COUNT(*) AS "__count" FROM "zentestapp_order" '
            'WHERE "zentestapp_order"."customer_id" = ?',
            "zen.count": 12,
            "db.system": "postgresql",
            **site(VIEWS, 'return render(request, "zentestapp/orders.html"', "template_n_plus_one"),
            "zen.template.name": "zentestapp/orders.html",
            "zen.template.line": line_of(TEMPLATES / "orders.html", "customer.order_set.count"),
        }

    def test_a_model_method_a_template_calls_names_the_method_line_and_the_template_line(self, zen: Harness) -> None:
        """The N+1 is made in application code the template calls: the method's line, and the
        template line that called it."""
        Client().get("/template-method-nplusone/")
        (event,) = events(zen, "zen.db.repeated_query")
        assert event == {
            "zen.statement.fingerprint": 'SELECT COUNT(*) AS "__count" FROM "zentestapp_order" '
            'WHERE "zentestapp_order"."customer_id" = ?',
            "zen.count": 12,
            "db.system": "postgresql",
            **site(MODELS, "return self.order_set.count()", "Customer.orders"),
            "zen.template.name": "zentestapp/orders_by_method.html",
            "zen.template.line": line_of(TEMPLATES / "orders_by_method.html", "customer.orders"),
        }

    def test_the_call_that_crossed_the_limit_is_the_one_named(self, zen: Harness, tmp_path: Path) -> None:
        """With repeated_queries = 2 the third run of the shape is the one walked, once."""
        zen.reset(Settings(budgets=Budgets.from_file(write(tmp_path, "[http]\nrepeated_queries = 2\n"))))
        Client().get("/queries/4/")
        assert events(zen, "zen.db.repeated_query") == [
            {
                "zen.statement.fingerprint": CUSTOMER_BY_ID.replace(" LIMIT ?", ""),
                "zen.count": 4,
                "db.system": "postgresql",
                **site(VIEWS, "list(Customer.objects.filter(pk=i + 1))", "queries"),
            }
        ]

    @pytest.mark.usefixtures("eager")
    def test_a_tasks_repeated_query_names_the_tasks_line(self, zen: Harness) -> None:
        """An eager task of 7 queries inside a request: both units name the task's line."""
        Client().get("/eager/7/")
        expected = {
            "zen.statement.fingerprint": CUSTOMER_BY_ID.replace(" LIMIT ?", ""),
            "db.system": "postgresql",
            **site(TASKS, "list(Customer.objects.filter(pk=pk + 1))", "queries"),
        }
        assert events(zen, "zen.db.repeated_query", "task") == [{**expected, "zen.count": 7}]
        assert events(zen, "zen.db.repeated_query", "http") == [{**expected, "zen.count": 8}]

    def test_the_console_line_names_the_call_site_of_the_breach(
        self, zen: Harness, capfd: pytest.CaptureFixture[str]
    ) -> None:
        zen.reset(Settings(console=True))
        Client().get("/nplusone/")
        (line,) = capfd.readouterr().err.splitlines()
        where = site(VIEWS, "names = [Customer.objects.get(pk=pk).name", "n_plus_one")
        assert line.endswith(
            f" | BREACH repeated_queries 12>5 at {where['code.file.path']}:{where['code.line.number']} n_plus_one"
        )


class TestSlowQueries:
    def test_a_statement_over_slow_query_ms_breaches_and_names_its_line(self, zen: Harness) -> None:
        """``SELECT pg_sleep(0.6)`` against the default slow_query_ms of 500."""
        Client().get("/slow/")
        (unit,) = zen.units()
        slowest = unit.attributes["zen.db.slowest_ms"]
        assert 600 <= slowest < 5000
        (slow,) = events(zen, "zen.db.slow_query")
        assert slow == {
            "zen.statement.fingerprint": "SELECT pg_sleep(?)",
            "zen.duration_ms": slowest,
            "db.system": "postgresql",
            **site(VIEWS, 'cursor.execute("SELECT pg_sleep(0.6)")', "slow"),
        }
        assert events(zen, "zen.budget.breach") == [
            {"zen.limit": "slow_query_ms", "zen.limit.value": 500.0, "zen.actual": slowest, "zen.budget": "default"}
        ]
        assert unit.attributes["zen.budget.breached"] == ("slow_query_ms",)
        assert {dict(key)["zen.limit"]: value for key, (value, _) in zen.metric("zen.budget.breaches").items()} == {
            "slow_query_ms": 1
        }

    def test_slow_query_ms_zero_turns_the_check_off(self, zen: Harness, tmp_path: Path) -> None:
        zen.reset(Settings(budgets=Budgets.from_file(write(tmp_path, "[http]\nslow_query_ms = 0\n"))))
        Client().get("/slow/")
        (unit,) = zen.units()
        assert unit.attributes["zen.db.slowest_ms"] >= 600
        assert (events(zen, "zen.db.slow_query"), events(zen, "zen.budget.breach")) == ([], [])

    def test_every_unit_carries_its_slowest_call(self, zen: Harness) -> None:
        Client().get("/queries/3/")
        Client(raise_request_exception=False).get("/boom/")
        slowest = [unit.attributes["zen.db.slowest_ms"] for unit in zen.units()]
        assert [type(value) for value in slowest] == [float, float]
        assert all(0 < value < 500 for value in slowest)


class TestOnlyWhenALimitIsCrossed:
    def test_a_unit_within_every_limit_walks_no_stack_and_traces_no_memory(
        self, zen: Harness, counted: dict[str, int]
    ) -> None:
        for path in ("/queries/5/", "/cbv/", "/raw/", "/grow/1/", "/api/v1/customers/2/"):
            assert Client().get(path).status_code == 200
        assert counted == {"walks": 0, "traces": 0}

    def test_an_n_plus_one_walks_the_stack_once(self, zen: Harness, counted: dict[str, int]) -> None:
        """Twelve runs of a shape over a limit of 5: the sixth is walked, no other."""
        Client().get("/nplusone/")
        assert counted == {"walks": 1, "traces": 0}

    def test_a_deep_stack_costs_a_bounded_walk(self) -> None:
        """Frames of library code deeper than MAX_FRAMES: the walk gives up; shallower, it finds the caller."""
        source = "def down(n, at_bottom):\n    return at_bottom() if n == 0 else down(n - 1, at_bottom)\n"
        library: dict[str, object] = {}
        exec(compile(source, str(Path(tracemalloc.__file__).parent / "zen_library.py"), "exec"), library)
        down = library["down"]
        assert down(_callsite.MAX_FRAMES + 10, _callsite.take) is None  # type: ignore[operator]
        found = down(_callsite.MAX_FRAMES - 10, _callsite.take)  # type: ignore[operator]
        assert (found.path, found.function) == (
            "tests/test_callsite.py",
            self.test_a_deep_stack_costs_a_bounded_walk.__qualname__,
        )
