"""Budget files for the tests: a valid example and the bad ones, with the message each gives."""

from __future__ import annotations

import textwrap
from pathlib import Path

EXAMPLE = """
[http]                       # every HTTP request
queries = 30
db_time_ms = 150
duration_ms = 800
external_calls = 0
repeated_queries = 5

[http."orders/<int:pk>/"]
queries = 8

[http."api/*"]
queries = 12

[http."api/v1/*"]
queries = 10

[task]
duration_ms = 30000
memory_mb = 50

[task."shop.tasks.sync_stock"]
external_calls = 100

[task."shop.tasks.*"]
duration_ms = 5000
"""


# Every kind of bad budget file, with the problem zenmetry reports after "budget file '<path>'".
BAD_FILES = [
    (
        "[http]\nquerys = 3\n",
        "entry [http], key 'querys': unknown limit; allowed: queries, db_time_ms, memory_mb, duration_ms, external_calls, repeated_queries, slow_query_ms, queue_wait_ms",
    ),
    (
        '[http."a/"]\nqueries = "8"\n',
        "entry [http.\"a/\"], key 'queries': expected a non-negative integer, got '8' (str)",
    ),
    ("[http]\nqueries = 2.5\n", "entry [http], key 'queries': expected a non-negative integer, got 2.5 (float)"),
    ("[http]\nqueries = true\n", "entry [http], key 'queries': expected a non-negative integer, got True (bool)"),
    ("[task]\nduration_ms = -1\n", "entry [task], key 'duration_ms': expected a non-negative number, got -1"),
    ("[task]\nmemory_mb = inf\n", "entry [task], key 'memory_mb': expected a non-negative number, got inf"),
    ("[task]\ndb_time_ms = nan\n", "entry [task], key 'db_time_ms': expected a non-negative number, got nan"),
    (
        "[htp]\nqueries = 3\n",
        'table [htp]: unknown table; allowed: [http], [task], [command], [http."<route>"], [task."<task name>"] and [command."<command name>"]',
    ),
    (
        "queries = 3\n",
        'top-level key \'queries\': limits go in a table; allowed: [http], [task], [command], [http."<route>"], [task."<task name>"] and [command."<command name>"]',
    ),
    ("[http\nqueries = 3\n", "not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 6)"),
    # Found by the fuzzer: each raised something else than ConfigError.
    ("a = " + "[" * 100_000, "not valid TOML: arrays or tables nested too deeply"),
    ("[http]\nqueries = " + "9" * 5_000 + "\n", "not valid TOML: a number has too many digits"),
    (
        "[http]\nqueries = 1" + "0" * 400 + "\n",
        "entry [http], key 'queries': expected a non-negative integer up to 1e300, got a larger one",
    ),
]


def expected_problem(path: Path, problem: str) -> str:
    separator = ": " if problem.startswith(("not valid", "not UTF-8")) else ", "
    return f"budget file '{path}'{separator}{problem}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zenmetry.toml"
    path.write_text(textwrap.dedent(text))
    return path
