"""``zenmetry.testing`` measures requests with its own Django middleware and psycopg tracing
(lean spans, no instrumentation loaded): the units it finishes are the ones the instrumentations
give in production, statement by statement. The test project's pages and count blocks, run in
a process of each kind (``support/parity.py``) against real PostgreSQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from support.processes import TESTS, project_env

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
        ("http", "api/v1/customers/<int:n>/", 200),
        ("http", "boom/", 500),
        ("http", "unmatched", 404),
        ("http", "stream/<int:before>/<int:during>/", 200),
        ("http", "threads/<int:n>/", 200),
        ("http", "fanout/<int:n>/", 200),
        *[("http", "count/block/<str:name>/", 200)] * 6,
        *[("http", "external/<str:library>/<str:path>/", 200)] * 3,
    ]
    # Queries counted: the view's, the streamed body's, the threads' and the driver's own round trips.
    assert [queries for _, _, _, queries, *_ in testing] == [3, 21, 12, 1, 2, 2, 1, 0, 3, 2, 3, 3, 10, 10, 10, 18, 0, 0, 0, 0]
    # External calls, and those made without a timeout: urllib's first call loads its instrumentation.
    assert [calls for *_, calls in testing[-3:]] == [[1, 0], [1, 1], [1, 0]]
    assert testing[11][4] == [
        ["postgresql", ""],  # BEGIN: a round trip of the driver's own, no statement shape
        ["postgresql", 'INSERT INTO "zencountapp_shop" ("name") VALUES (?) RETURNING "zencountapp_shop"."id"'],
        ["postgresql", ""],  # COMMIT
    ]
