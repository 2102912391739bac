"""Hostile input, fuzzed: statements, MongoDB commands, budget files and ``ZENMETRY_*`` values
built to break a parser never raise into the application, never hang, and never put a literal
of theirs in what is exported; bad configuration is one ``ConfigError`` of clear lines."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from support.hostile import (
    BOUND_SECONDS,
    DOCUMENTS,
    ENV_VALUES,
    HOSTILE_TEXT,
    MARK,
    NUMBERS,
    REPEAT,
    SYSTEMS,
    TEMPLATES,
    Pipeline,
    Timed,
    budget_texts,
    deep_parentheses,
    exported_texts,
    fuzz_settings,
    literal_statements,
    mongo_commands,
    nested,
    unit_of,
)
from zenmetry._errors import ConfigError
from zenmetry.config import _limits
from zenmetry.config._budgets import Budgets
from zenmetry.config._settings import load
from zenmetry.integrations.pymongo import mongo_shape
from zenmetry.units._shapes import MAX_TEXT

# Spans started by other threads of this process in earlier tests (the SDK's id generator draws
# from the global ``random``) change its state while Hypothesis draws, which Hypothesis takes
# for a strategy using ``random``; these strategies use none.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)

PIPELINE = Pipeline()
TIMED = Timed()
MEGABYTE = "SELECT '" + "x" * 1_000_000 + "' FROM t"


def _assert_exportable(texts: list[str]) -> None:
    for text in texts:
        assert len(text) <= MAX_TEXT
        text.encode("utf-8")  # no lone surrogate: the OTLP encoder would drop the attribute


class TestStatements:
    @fuzz_settings(1_000)
    @given(literal_statements())
    def test_no_literal_reaches_an_exported_statement_or_shape(self, statement_and_system: tuple[str, str]) -> None:
        """A secret in any dialect's strings, escapes, dollar quotes or comments is in neither
        the exported ``db.statement`` nor the ``zen.db.repeated_query`` shape."""
        statement, system = statement_and_system
        spans = TIMED(lambda: PIPELINE.unit(statement, system))
        texts = exported_texts(spans)
        assert len(texts) == REPEAT + 1  # every DB span's statement, and the unit's repeated shape
        assert [text for text in texts if MARK in text] == []
        _assert_exportable(texts)

    @fuzz_settings(500)
    @given(NUMBERS, st.sampled_from(TEMPLATES[:4]), st.sampled_from(SYSTEMS))
    def test_no_number_literal_reaches_an_exported_statement(self, number: str, template: str, system: str) -> None:
        spans = TIMED(lambda: PIPELINE.unit(template.format(number, ""), system))
        digits = number.lstrip("0xob").split(".")[0]
        assert [text for text in exported_texts(spans) if digits in text] == []

    @fuzz_settings(500)
    @given(st.one_of(HOSTILE_TEXT, st.binary(max_size=2_000)), st.sampled_from(SYSTEMS))
    @example(MEGABYTE, "postgresql")
    @example(deep_parentheses(100_000), "postgresql")
    @example(deep_parentheses(9_990), "postgresql")  # short enough for pglast to parse
    @example("SELECT '\x00secret\x00' \x00 FROM t", "postgresql")
    @example("SELECT '\udcff\udc80' FROM \"\udcfe\"", "sqlite")
    @example(b"SELECT '\xff\xfe secret' FROM t", "postgresql")
    @example(b"SELECT 'ZQX-bytes-ZQX' FROM t", "mysql")
    def test_any_statement_is_counted_without_raising_or_hanging(self, statement: str | bytes, system: str) -> None:
        """Any text or bytes value, 1 MB long, NUL-laden, undecodable or nested 100,000 deep:
        every call counts, the unit's figures are written, and what is exported encodes."""
        spans = TIMED(lambda: PIPELINE.unit(statement, system))
        unit = unit_of(spans)
        shaped = REPEAT if statement else 0  # an empty statement has no shape to repeat
        assert (unit.attributes["zen.db.queries"], unit.attributes["zen.db.repeated_max"]) == (REPEAT, shaped)
        texts = exported_texts(spans)
        _assert_exportable(texts)
        assert [text for text in texts if MARK in text] == []

    def test_the_slowest_call_is_within_the_bound(self) -> None:
        """The 1 MB statement and the 100,000 nested parentheses, once more, timed alone."""
        for statement in (MEGABYTE, deep_parentheses(100_000), deep_parentheses(9_990)):
            timed = Timed()
            timed(lambda statement=statement: PIPELINE.unit(statement, "postgresql"))
            assert timed.slowest < BOUND_SECONDS


class TestMongoCommands:
    @fuzz_settings(200)
    @given(mongo_commands())
    @example({"find": "products", "filter": {1: {b"k": [{"k": "ZQX-ZQX"}], 2.5: None}}})
    @example({"update": "products", "updates": "not a list"})
    @example({"delete": "products", "deletes": [None]})
    @example({})
    def test_a_shape_holds_no_value_and_costs_little(self, command: dict[object, object]) -> None:
        """Any command, non-string keys included: the shape holds no value, and the unit it
        belongs to counts it as one statement run ``REPEAT`` times."""
        self._check(command)

    @pytest.mark.parametrize(
        "command",
        [
            {"find": "products", "filter": nested(100_000, "ZQX-deep-ZQX")},
            {"find": "products", "filter": {f"k{i}": "ZQX-wide-ZQX" for i in range(100_000)}},
            {"aggregate": "products", "pipeline": [{"$match": {"a": "ZQX-ZQX"}}] * 100_000},
        ],
        ids=["100,000 deep", "100,000 keys", "100,000 stages"],
    )
    def test_huge_and_deep_documents_are_shaped_quickly(self, command: dict[object, object]) -> None:
        self._check(command)

    @staticmethod
    def _check(command: dict[object, object]) -> None:
        key, text = TIMED(lambda: mongo_shape(command))
        assert (MARK in text, len(text) <= MAX_TEXT) == (False, True)
        text.encode("utf-8")
        spans = PIPELINE.unit("find", "mongodb", (key, text))
        assert unit_of(spans).attributes["zen.db.repeated_max"] == (REPEAT if key else 0)

    @fuzz_settings(200)
    @given(DOCUMENTS)
    def test_any_filter_value_is_shaped_as_a_question_mark(self, value: object) -> None:
        _key, text = mongo_shape({"find": "c", "filter": {"field": value}})
        assert MARK not in text


def _budget_file(content: str | bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="zen-budget-"))
    path = folder / "zenmetry.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


class TestBudgetFiles:
    @fuzz_settings(500)
    @given(st.one_of(budget_texts(), st.binary(max_size=300)))
    @example("a = " + "[" * 100_000)
    @example("[http]\nqueries = " + "9" * 5_000 + "\n")
    @example("[http]\nqueries = " + "9" * 400 + "\n")
    @example("[http]\ndb_time_ms = 1e308\n")
    @example(b"[http]\nqueries = 3 # \xff\xfe\n")
    @example('[http."' + "*a" * 2_000 + 'b"]\nqueries = 1\n')
    def test_a_budget_file_loads_or_is_one_config_error_of_clear_lines(self, content: str | bytes) -> None:
        """Any file either loads, and then every entry resolves, or raises one ``ConfigError``
        whose problems are single lines naming the file."""
        path = _budget_file(content)
        try:
            budgets = TIMED(lambda: Budgets.from_file(path))
        except ConfigError as error:
            problems = error.problems
        else:
            problems = []
        for problem in problems:
            assert problem.startswith(f"budget file {str(path)!r}")
            assert "\n" not in problem
            assert "\r" not in problem
        if problems:
            return
        for kind in ("http", "task"):
            TIMED(lambda kind=kind: budgets.resolve(kind, "a" * 4_000, None).checks)
        assert all(isinstance(budget.checks, tuple) for _, budget in budgets.entries())

    @fuzz_settings(300)
    @given(
        st.sampled_from(sorted(_limits.BY_NAME)),
        st.one_of(st.integers(), st.floats(), st.text(), st.none(), st.lists(st.integers())),
    )
    @example("queries", 10**400)
    @example("db_time_ms", 10**5_000)
    def test_a_budget_decorator_value_is_accepted_or_one_clear_problem(self, limit: str, value: object) -> None:
        try:
            limits = _limits.parse({limit: value}, "@budget")
        except ConfigError as error:
            problems = error.problems
        else:
            problems = []
        assert [problem.startswith(f"@budget, key {limit!r}: expected a non-negative ") for problem in problems] in (
            [],
            [True],
        )
        if problems:
            return
        assert [name for name, _ in _limits.checks(limits)].count(limit) == (
            1 if value or _limits.BY_NAME[limit].default is None else 0  # a defaulted limit at 0 is off
        )


class TestVariables:
    @fuzz_settings(300)
    @given(
        st.dictionaries(st.sampled_from(["ZENMETRY_CONSOLE", "ZENMETRY_HTTP_TIMEOUT", "ZENMETRY_BUDGETS"]), ENV_VALUES)
    )
    @example({"ZENMETRY_BUDGETS": "/proc/self/stat"})  # found by the long run: a file, but not TOML
    def test_variables_load_or_give_one_problem_per_bad_variable(self, environ: dict[str, str]) -> None:
        """Each bad value is exactly one problem line, naming its variable and showing the value;
        a budget file that exists but is bad gives lines naming the file."""
        cwd = Path(tempfile.mkdtemp(prefix="zen-cwd-"))
        try:
            settings = load(environ, cwd=cwd)
        except ConfigError as error:
            problems = error.problems
        else:
            problems = []
        in_file = [problem for problem in problems if problem.startswith("budget file ")]
        for problem in in_file:
            assert problem.startswith(f"budget file {str(Path(environ['ZENMETRY_BUDGETS'].strip()))!r}")
            assert "\n" not in problem
        problems = [problem for problem in problems if problem not in in_file]
        named = [problem.split("=", 1)[0] for problem in problems]
        assert len(named) == len(set(named))
        assert set(named) <= set(environ)
        for problem in problems:
            variable, _, rest = problem.partition("=")
            assert rest.startswith(repr(environ[variable].strip()) + ": ")
            assert "\n" not in problem
        if problems or in_file:
            return
        assert settings.console == (environ.get("ZENMETRY_CONSOLE", "").strip() == "1")
