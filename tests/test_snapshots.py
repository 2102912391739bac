"""The snapshot format and its comparison, directly (the plugin's use of them is in test_pytest_plugin.py)."""

from __future__ import annotations

import pytest

from zenmetry import ConfigError
from zenmetry.testing._snapshots import Unit, diff, from_data, parse, render, sort_key, stable_text, to_data, unit

SELECT_BY_ID = 'SELECT "shop_customer"."id" FROM "shop_customer" WHERE "shop_customer"."id" = ?'
ORDERS = 'SELECT "shop_order"."id" FROM "shop_order"'


def _page(count: int = 12) -> Unit:
    return Unit(
        "http", "orders/", ((1, "postgresql", ORDERS), (count, "postgresql", SELECT_BY_ID)), ((2, "api.example.com"),)
    )


class TestUnit:
    def test_statements_are_counted_by_shape_in_order_of_first_execution(self) -> None:
        """Shapes keep the order they first ran in; hosts likewise."""
        found = unit(
            "http",
            "orders/",
            [("postgresql", ORDERS), ("postgresql", SELECT_BY_ID), ("postgresql", SELECT_BY_ID), ("redis", "GET")],
            ["b.example", "a.example", "b.example"],
        )
        assert found == Unit(
            "http",
            "orders/",
            ((1, "postgresql", ORDERS), (2, "postgresql", SELECT_BY_ID), (1, "redis", "GET")),
            ((2, "b.example"), (1, "a.example")),
        )
        assert found.queries == 4

    @pytest.mark.parametrize(
        ("text", "stable"),
        [
            ('SAVEPOINT "s140213971_x1"', "SAVEPOINT ?"),
            ('RELEASE SAVEPOINT "s1_x12"', "RELEASE SAVEPOINT ?"),
            ('FETCH FORWARD ? FROM "_django_curs_140213_sync_1"', "FETCH FORWARD ? FROM ?"),
            ("SELECT\n  1", "SELECT 1"),
            ("", "(no statement)"),
            ('SELECT "s1_x1_table"."id" FROM "s1_x1_table"', 'SELECT "s1_x1_table"."id" FROM "s1_x1_table"'),
        ],
    )
    def test_names_that_change_per_run_are_replaced(self, text: str, stable: str) -> None:
        """Django's savepoint and cursor names carry a thread id; a table named alike is kept."""
        assert stable_text(text) == stable


class TestFile:
    def test_render_then_parse_gives_the_snapshots_back_with_their_lines(self) -> None:
        entries = {"test_b[10]": (_page(),), "test_b[9]": (Unit("task", "shop.tasks.invoice"),), "TestX::test_a": ()}
        text = render("tests/test_shop.py", {k: v for k, v in entries.items() if v})
        assert text == (
            "# zenmetry snapshots of tests/test_shop.py: each test's units, with their statement shapes in order\n"
            "# of first execution and their counts. Compared by pytest --zenmetry-snapshot, rewritten by\n"
            "# --zenmetry-snapshot-update; review its changes like code.\n"
            "\n"
            "test_b[9]\n"
            "  task shop.tasks.invoice\n"
            "\n"
            "test_b[10]\n"
            "  http orders/\n"
            f"    1x postgresql {ORDERS}\n"
            f"    12x postgresql {SELECT_BY_ID}\n"
            "    2x external api.example.com\n"
        )
        parsed = parse(text, "tests/test_shop.zenmetry")
        assert {test: (entry.snapshot, entry.line) for test, entry in parsed.items()} == {
            "test_b[9]": ((Unit("task", "shop.tasks.invoice"),), 5),
            "test_b[10]": ((_page(),), 8),
        }

    def test_tests_sort_by_name_with_numbers_as_numbers(self) -> None:
        assert sorted(["t[10]", "t[9]", "T::a", "t[1-2]"], key=sort_key) == ["T::a", "t[1-2]", "t[9]", "t[10]"]

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("  http one/\n", "line 1: 'http one/' comes before the first test's name"),
            (
                "test_a\n    1x postgresql SELECT 1\n",
                "line 2 (test test_a): '1x postgresql SELECT 1' comes before the first unit of the test",
            ),
            (
                "test_a\n  http one/\n    x postgresql SELECT 1\n",
                "line 3 (test test_a): expected 'COUNTx SYSTEM STATEMENT' or 'COUNTx external HOST', got 'x postgresql SELECT 1'",
            ),
            (
                "test_a\n  http one/\n    1x external\n",
                "line 3 (test test_a): an external call needs its host, got '1x external'",
            ),
            (
                "test_a\n  http one/\n    1x external a\n    1x postgresql SELECT 1\n",
                "line 4 (test test_a): statement '1x postgresql SELECT 1' after the unit's external calls; they come last",
            ),
            (
                "test_a\n  http one/\ntest_a\n",
                "line 3 (test test_a): test 'test_a' has a second section; each test has one",
            ),
            (
                "test_a\n\thttp one/\n",
                "line 2 (test test_a): '\\thttp one/' is indented by neither 2 spaces (a unit) nor 4 (a statement or external call)",
            ),
        ],
    )
    def test_a_bad_file_names_the_file_line_and_test(self, text: str, problem: str) -> None:
        with pytest.raises(ConfigError) as raised:
            parse(text, "t.zenmetry")
        assert raised.value.problems == [f"snapshot file 't.zenmetry', {problem}"]

    def test_the_data_sent_between_processes_round_trips(self) -> None:
        snapshot = (_page(), Unit("task", "t"))
        assert from_data(to_data(snapshot)) == snapshot


class TestDiff:
    def test_counts_additions_and_removals_read_at_a_glance(self) -> None:
        after = Unit(
            "http",
            "orders/",
            ((13, "postgresql", SELECT_BY_ID), (1, "postgresql", "SELECT 1")),
            ((1, "api.example.com"),),
        )
        assert diff((_page(),), (after,)) == [
            "http orders/",
            f"  12x -> 13x postgresql {SELECT_BY_ID}",
            "  + 1x postgresql SELECT 1",
            f"  - 1x postgresql {ORDERS}",
            "  2x -> 1x external api.example.com",
        ]

    def test_units_added_and_removed_show_their_statements(self) -> None:
        task = Unit("task", "shop.tasks.invoice", ((3, "postgresql", ORDERS),))
        assert diff((_page(),), (task,)) == [
            "- http orders/",
            f"-   1x postgresql {ORDERS}",
            f"-   12x postgresql {SELECT_BY_ID}",
            "-   2x external api.example.com",
            "+ task shop.tasks.invoice",
            f"+   3x postgresql {ORDERS}",
        ]

    def test_an_order_change_alone_is_a_change_too(self) -> None:
        reordered = Unit(
            "http", "orders/", ((12, "postgresql", SELECT_BY_ID), (1, "postgresql", ORDERS)), _page().calls
        )
        assert diff((_page(),), (reordered,)) == [
            "http orders/",
            "  the same shapes, first executed in another order:",
            f"    12x postgresql {SELECT_BY_ID}",
            f"    1x postgresql {ORDERS}",
            "    2x external api.example.com",
        ]
        task = Unit("task", "t")
        assert diff((_page(), task), (task, _page())) == ["+ task t", "- task t"]

    def test_equal_snapshots_have_no_diff(self) -> None:
        assert diff((_page(),), (_page(),)) == []
