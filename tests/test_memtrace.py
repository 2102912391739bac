"""Memory growth explained: after a ``memory_mb`` breach, the next unit of the name is traced."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.test import Client

from support.budgets import write
from support.harness import Harness
from support.otlp import Receiver
from support.processes import TESTS, gunicorn
from support.source import VIEWS, line_of
from zenmetry.config._budgets import Budgets
from zenmetry.config._settings import Settings

MIB = 2**20
KEEPING_LINE = line_of(VIEWS, '_kept.append(b"x" * (mib * 1024 * 1024))')


@pytest.fixture
def kept() -> Iterator[None]:
    """What ``grow/`` keeps is released after the test."""
    from zentestapp import views

    yield
    views._kept.clear()


def allocations(harness: Harness) -> list[list[dict[str, object]]]:
    """Per unit, in the order they finished: its ``zen.memory.allocations`` events."""
    return [
        [dict(event.attributes or {}) for event in unit.events if event.name == "zen.memory.allocations"]
        for unit in harness.units()
    ]


@pytest.mark.usefixtures("kept")
class TestInProcess:
    def test_the_next_unit_of_a_breaching_name_says_where_its_memory_went(self, zen: Harness, tmp_path: Path) -> None:
        zen.reset(Settings(budgets=Budgets.from_file(write(tmp_path, "[http]\nmemory_mb = 20\n"))))
        for path in ("/grow/40/", "/grow/40/", "/grow/40/", "/queries/1/"):
            assert Client().get(path).status_code == 200
        breached = [unit.attributes.get("zen.budget.breached") for unit in zen.units()]
        assert breached == [("memory_mb",), ("memory_mb",), ("memory_mb",), None]
        found = allocations(zen)
        assert [len(events) for events in found] == [0, 1, 0, 0]  # once a minute per name, and that name only
        (event,) = found[1]
        sites = event["zen.memory.sites"]
        assert isinstance(sites, tuple)
        assert 1 <= len(sites) <= 10
        place, size, _count = sites[0].rsplit(" ", 2)
        # The 40 MiB string, and the kept list growing by a pointer or two on the same line.
        assert (place, (int(size) - sys.getsizeof(b"") - 40 * MIB) // 1024) == (
            f"tests/zentestapp/views.py:{KEEPING_LINE}",
            0,
        )
        assert int(size) <= event["zen.memory.traced_bytes"] < int(size) + MIB  # type: ignore[operator]

    def test_off_traces_nothing(self, zen: Harness, tmp_path: Path) -> None:
        budgets = Budgets.from_file(write(tmp_path, "[http]\nmemory_mb = 20\n"))
        zen.reset(Settings(budgets=budgets, memory_trace="off"))
        for _ in range(2):
            Client().get("/grow/30/")
        assert allocations(zen) == [[], []]

    def test_a_share_of_one_traces_the_first_unit_of_each_name(self, zen: Harness) -> None:
        zen.reset(Settings(memory_trace=1.0))
        for path in ("/grow/2/", "/grow/2/", "/queries/1/"):
            Client().get(path)
        found = allocations(zen)
        assert [len(events) for events in found] == [1, 0, 1]
        place, size, _count = found[0][0]["zen.memory.sites"][0].rsplit(" ", 2)  # type: ignore[index]
        # The 2 MiB string, and the kept list growing by a pointer on the same line.
        assert (place, (int(size) - sys.getsizeof(b"") - 2 * MIB) // 1024) == (
            f"tests/zentestapp/views.py:{KEEPING_LINE}",
            0,
        )

    def test_the_console_line_says_what_a_traced_unit_held(
        self, zen: Harness, capfd: pytest.CaptureFixture[str]
    ) -> None:
        zen.reset(Settings(console=True, memory_trace=1.0))
        Client().get("/grow/3/")
        (line,) = capfd.readouterr().err.splitlines()
        assert f" (traced: 3.0 MiB held, most at tests/zentestapp/views.py:{KEEPING_LINE} 3.0 MiB) | ext 0 | " in line


@pytest.mark.usefixtures("postgres_db")
class TestThreads:
    def test_no_unit_is_traced_while_another_is_in_flight(self, receiver: Receiver, tmp_path: Path) -> None:
        """gthread with two requests at once: neither is traced (one heap, two units); the next
        request alone is."""
        path = write(tmp_path, "[http]\nmemory_mb = 20\n")
        server = gunicorn(
            receiver, "--workers", "1", "--worker-class", "gthread", "--threads", "4", ZENMETRY_BUDGETS=str(path)
        )
        assert server.get("/grow/30/")[0] == 200
        receiver.wait(lambda r: len(r.units()) == 1)
        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(lambda _: server.get("/grow/30/?sleep=1")[0], range(2)))
        assert statuses == [200, 200]
        receiver.wait(lambda r: len(r.units()) == 3)
        assert server.get("/grow/30/")[0] == 200
        receiver.wait(lambda r: len(r.units()) == 4)
        server.stop()
        units = receiver.units()
        assert [len(unit.events_named("zen.memory.allocations")) for unit in units] == [0, 0, 0, 1]
        (event,) = units[3].events_named("zen.memory.allocations")
        place, size, _count = event["zen.memory.sites"][0].rsplit(" ", 2)
        assert (place, int(size) >= 30 * MIB) == (f"zentestapp/views.py:{KEEPING_LINE}", True)
        assert str(TESTS) not in str(event)
