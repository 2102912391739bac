"""``zenmetry.testing`` measures requests with its own Django middleware and psycopg tracing
(lean spans, no instrumentation loaded), and loads the threading and urllib instrumentations at
their first call: the units it finishes are the ones the instrumentations give in production,
statement by statement (the test project's pages and count blocks, run in a process of each
kind, ``support/parity.py``, against real PostgreSQL)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import types

import django
import wrapt
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from support.processes import TESTS, project_env
from zenmetry.units._processor import UnitProcessor

# zenmetry.testing is imported inside the tests that use it: imported by a test module, the
# plugin would instrument this process with it before the first test (as it does a user's).

SAVEPOINT_IDS = re.compile(r"\bs\d{5,}_x(\d+)\b")
"""Django names a savepoint after its thread's id: the one part of a statement that differs
between two processes."""


def _units(mode: str, database: str) -> list[list[object]]:
    result = subprocess.run(
        [sys.executable, "-m", "support.parity", mode],
        env=project_env(ZEN_TEST_DB="postgresql", ZEN_TEST_PG_DB=database),
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(SAVEPOINT_IDS.sub(r"s_x\1", line)) for line in result.stdout.splitlines()]


def test_the_test_suites_units_are_productions(postgres_db: str) -> None:
    testing, harness = _units("testing", postgres_db), _units("harness", postgres_db)
    assert testing == harness
    # One unit per page, named by its route, with the status the client saw.
    assert [(kind, name, point["http.response.status_code"]) for kind, name, point, *_ in testing] == [  # type: ignore[index]
        ("http", "queries/<int:n>/", 200),
        ("http", "orm/", 200),
        ("http", "nplusone/", 200),
        ("http", "cbv/", 200),
        ("http", "decorated/<int:n>/", 200),
        ("http", "decorated/<int:n>/", 200),
        ("http", "api/v1/customers/<int:n>/", 200),
        ("http", "boom/", 500),
        ("http", "unmatched", 404),
        ("http", "stream/<int:before>/<int:during>/", 200),
        ("http", "threads/<int:n>/", 200),
        ("http", "fanout/<int:n>/", 200),
        *[("http", "count/block/<str:name>/", 200)] * 6,
        *[("http", "external/<str:library>/<str:path>/", 200)] * 3,
        ("http", "async/<int:n>/", 200),  # through ASGI
        ("http", "queries/<int:n>/", 200),
        ("http", "unmatched", 404),
        ("http", "queries/<int:n>/", 200),  # through WSGI again
    ]
    # Queries as Django counts them (the view's, the streamed body's, the threads'), then round
    # trips: the server-side cursors' DESCRIBE, FETCH and CLOSE, the driver's BEGIN and COMMIT for
    # Django's, and none for an empty atomic() Django logs as BEGIN and COMMIT.
    # The iterator block's bulk_create of one batch: in a transaction of its own before Django 6.
    bulk = 2 if django.VERSION < (6,) else 0
    queries = [3, 17, 12, 1, 2, 3, 2, 1, 0, 3, 2, 3, 3, 10, 10, 3 + bulk, 18, 2, 0, 0, 0, 2, 1, 0, 3]
    round_trips = [3, 22, 12, 1, 2, 3, 2, 1, 0, 3, 2, 3, 3, 10, 10, 9 + bulk, 18, 0, 0, 0, 0, 2, 1, 0, 3]
    assert [unit[3] for unit in testing] == [list(pair) for pair in zip(queries, round_trips, strict=True)]
    # External calls, and those made without a timeout: urllib's first call loads its instrumentation.
    assert [unit[5] for unit in testing[18:21]] == [[1, 0], [1, 1], [1, 0]]
    # The largest repetition, and the limits breached (the default budget; @budget(queries=2)).
    checked = [[3, []], [2, []], [12, ["repeated_queries"]], [1, []], [2, []], [3, ["queries"]]]
    assert [unit[6] for unit in testing[:6]] == checked
    # q: a query, r: a round trip. Django logs BEGIN as atomic() opens; the driver sends it with
    # the first statement; COMMIT is both, named by its command.
    assert testing[12][4] == [
        ["postgresql", "BEGIN", "q"],
        ["postgresql", "BEGIN", "r"],
        ["postgresql", 'INSERT INTO "zencountapp_shop" ("name") VALUES (?) RETURNING "zencountapp_shop"."id"', "qr"],
        ["postgresql", "COMMIT", "q"],
        ["postgresql", "COMMIT", "r"],
    ]


def _module_with_greeter(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec("class Greeter:\n    def greet(self, who):\n        return 'hello ' + who\n", module.__dict__)
    sys.modules[name] = module
    return module


class TestFirstCall:
    def test_the_first_call_loads_the_instrumentation_once_and_goes_through_it(self) -> None:
        module = _module_with_greeter("zen_first_call_a")
        loads = []

        def load() -> None:  # an instrumentation: wraps the method it instruments
            loads.append(module.Greeter.greet)
            wrapt.wrap_function_wrapper(
                module.Greeter, "greet", lambda wrapped, _, args, kw: "traced " + wrapped(*args)
            )

        from zenmetry.testing._api import _FirstCall

        _FirstCall(load, (("zen_first_call_a", "Greeter", "greet"),)).install()
        assert isinstance(vars(module.Greeter)["greet"], wrapt.FunctionWrapper)  # waiting for its first call

        class Polite(module.Greeter):  # type: ignore[name-defined,misc]
            def greet(self, who: str) -> str:
                return super().greet(who) + "!"

        assert Polite().greet("a") == "traced hello a!"  # the first call, through the instrumentation
        assert module.Greeter().greet("b") == "traced hello b"
        assert Polite().greet("c") == "traced hello c!"
        assert len(loads) == 1
        assert not isinstance(loads[0], wrapt.FunctionWrapper)  # the method as it was, given back first

    def test_a_failed_load_leaves_the_method_as_it_was(self, swallowed: list[logging.LogRecord]) -> None:
        module = _module_with_greeter("zen_first_call_b")

        def load() -> None:
            raise RuntimeError("the instrumentation is broken")

        from zenmetry.testing._api import _FirstCall

        _FirstCall(load, (("zen_first_call_b", "Greeter", "greet"),)).install()
        assert module.Greeter().greet("a") == "hello a"
        assert module.Greeter().greet("b") == "hello b"
        assert not isinstance(vars(module.Greeter)["greet"], wrapt.FunctionWrapper)
        assert len(swallowed) == 1
        swallowed.clear()  # expected here: the guard reported it

    def test_what_loading_took_is_not_the_open_units(self) -> None:
        """``UnitProcessor.discount``, which the first call uses: the open units start later by
        the time it took and with the memory it grew by."""
        processor = UnitProcessor()
        provider = TracerProvider()
        provider.add_span_processor(processor)
        span = provider.get_tracer("test").start_span("GET", kind=SpanKind.SERVER)
        unit = processor.unit(span)
        assert unit is not None
        start_ns, rss_start = unit.start_ns, unit.rss_start
        processor.discount(7_000_000, 11 * 2**20)
        assert (unit.start_ns - start_ns, unit.rss_start - rss_start) == (7_000_000, 11 * 2**20)
        span.end()


def test_the_report_shows_the_cache_beside_the_queries() -> None:
    """A unit over its query budget: the report gives its cache calls and misses after its queries."""
    from zenmetry.config._budgets import Budget
    from zenmetry.config._limits import Limits
    from zenmetry.testing import report
    from zenmetry.units._figures import Breach, Figures, FinishedUnit

    figures = Figures(
        kind="http",
        name="products/",
        queries=3,
        db_duration_ms=1.0,
        systems={"postgresql": (3, 1.0)},
        repeated_max=1,
        repetitions=(),
        external_calls=0,
        external_duration_ms=0.0,
        no_timeout=0,
        rss_delta_bytes=0,
        duration_ms=4.0,
        round_trips=3,
        cache_calls=4,
        cache_misses=2,
    )
    unit = FinishedUnit(
        figures, {"http.request.method": "GET"}, Budget("http", Limits(queries=2)), (Breach("queries", 2, 3),), 1
    )
    assert report([unit]).splitlines() == [
        "zenmetry: 1 unit over budget",
        "http GET products/  (budget: http)",
        "  3 > 2  queries",
        "  and the cache: 4 calls, 2 misses",
    ]
