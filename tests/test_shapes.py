"""Statement shapes never carry a literal, and equal statements share a key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zenmetry.units import _shapes
from zenmetry.units._shapes import MAX_TEXT, normalize_sql, sql_shape


class TestNormalizeSql:
    @pytest.mark.parametrize(
        ("statement", "expected"),
        [
            ("SELECT * FROM t WHERE a = 'x' AND b IN (1, 2, 3) -- note", "SELECT * FROM t WHERE a = ? AND b IN (?)"),
            (
                'SELECT "t"."a1" FROM "t" WHERE "t"."id" = %s LIMIT 21',
                'SELECT "t"."a1" FROM "t" WHERE "t"."id" = ? LIMIT ?',
            ),
            (
                "UPDATE t SET a = %(a)s WHERE b = :b AND c = $1 AND d = ?",
                "UPDATE t SET a = ? WHERE b = ? AND c = ? AND d = ?",
            ),
            ("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s)", "INSERT INTO t (a, b) VALUES (?)"),
            ("SELECT 1.5e10, .5, 0xFF, -4", "SELECT ?, ?, ?, -?"),
            ("SELECT E'it\\'s', 'it''s', $$dollar$$, $tag$tagged$tag$", "SELECT ?, ?, ?, ?"),
            ("SELECT a /* secret 42 */ FROM t", "SELECT a FROM t"),
            ("SELECT a FROM t /*traceparent='00-abc-01'*/", "SELECT a FROM t"),
            ('SAVEPOINT "s140_x1"', 'SAVEPOINT "s140_x1"'),
            ("SELECT 'unterminated secret", "SELECT ?"),
            ("SELECT 'C:\\' AS path, 'x'", "SELECT ? AS path, ?"),
            ('SELECT "unterminated secret', "SELECT ?"),
            ("SELECT a::int FROM t2 WHERE ARRAY[1, 2] && b", "SELECT a::int FROM t2 WHERE ARRAY[?, ?] && b"),
        ],
    )
    def test_literals_placeholders_and_comments_are_removed(self, statement: str, expected: str) -> None:
        assert normalize_sql(statement) == expected

    @pytest.mark.parametrize(
        ("statement", "expected"),
        [
            ("SELECT * FROM t WHERE a = 'it\\'s secret' AND b = 1", "SELECT * FROM t WHERE a = ? AND b = ?"),
            ('SELECT * FROM t WHERE a = "double quoted secret"', "SELECT * FROM t WHERE a = ?"),
        ],
    )
    def test_mysql_strings_have_backslash_escapes_and_double_quotes(self, statement: str, expected: str) -> None:
        assert normalize_sql(statement, "mysql") == expected

    @pytest.mark.parametrize(
        ("statement", "expected"),
        [
            (
                'SELECT "t"."id" FROM "t" WHERE "name" = "alice@example.com"',
                'SELECT "t"."id" FROM "t" WHERE "name" = ?',
            ),
            ('SELECT "a b" FROM t', "SELECT ? FROM t"),
        ],
    )
    def test_sqlite_double_quoted_strings_are_literals_unless_they_look_like_identifiers(
        self, statement: str, expected: str
    ) -> None:
        assert normalize_sql(statement, "sqlite") == expected

    def test_numbers_with_underscores_are_literals(self) -> None:
        assert normalize_sql("SELECT 1_000_999, 0x_FF, 1_0.5_0") == "SELECT ?, ?, ?"

    def test_binary_and_octal_numbers_are_literals(self) -> None:
        """PostgreSQL 16 reads ``0b1010`` and ``0o777``: found by the fuzzer, which saw ``?b1010``."""
        assert normalize_sql("SELECT 0b1010, 0o777, 0B_1") == "SELECT ?, ?, ?"

    def test_a_nested_block_comment_is_removed_whole(self) -> None:
        """PostgreSQL nests block comments: what follows the inner one's end is still comment
        (found by the fuzzer: the secret after ``inner */`` was kept)."""
        statement = "SELECT a /* outer /* inner */ secret-42 */ FROM t"
        assert normalize_sql(statement, "postgresql") == "SELECT a"

    def test_a_mysql_hash_comment_is_removed(self) -> None:
        """Found by the fuzzer: MySQL's ``#`` comments were kept."""
        assert normalize_sql("SELECT a FROM t # secret-42\nWHERE b = 1", "mysql") == "SELECT a FROM t WHERE b = ?"

    def test_undecodable_text_is_exportable(self) -> None:
        """Lone surrogates (bytes kept with ``surrogateescape``) become ``?``: the OTLP encoder
        would otherwise drop the attribute with an error."""
        assert normalize_sql('SELECT "col\udcff" FROM t', "postgresql") == 'SELECT "col?" FROM t'

    def test_text_is_at_most_1000_characters(self) -> None:
        statement = "SELECT " + ", ".join(f"column_{i}" for i in range(500)) + " FROM t"
        assert len(normalize_sql(statement)) == MAX_TEXT


class TestSqlShape:
    def test_postgresql_statements_differing_in_literals_and_list_lengths_share_a_key(self) -> None:
        one = sql_shape("SELECT * FROM t WHERE a = 1 AND b IN (1, 2)", "postgresql")
        two = sql_shape("SELECT * FROM t WHERE a = %s AND b IN (%s, %s, %s)", "postgresql")
        assert one[0] == two[0]
        assert len(one[0]) == 16  # libpg_query's 64-bit fingerprint, in hex
        assert one[1] == "SELECT * FROM t WHERE a = ? AND b IN (?)"

    def test_postgresql_savepoint_names_share_a_key(self) -> None:
        assert sql_shape('SAVEPOINT "s1_x1"', "postgresql")[0] == sql_shape('SAVEPOINT "s2_x9"', "postgresql")[0]

    def test_unparsable_postgresql_falls_back_to_the_tokenizer(self) -> None:
        assert sql_shape("SELEKT nonsense 'x'", "postgresql") == ("SELEKT nonsense ?", "SELEKT nonsense ?")

    def test_other_dialects_are_keyed_by_their_normalized_text(self) -> None:
        assert sql_shape("SELECT a FROM t WHERE b = 7", "sqlite") == (
            "SELECT a FROM t WHERE b = ?",
            "SELECT a FROM t WHERE b = ?",
        )


_TEMPLATES = [
    "SELECT * FROM orders WHERE customer = {} AND note = {}",
    "UPDATE stock SET qty = {} WHERE sku = {}",
    "INSERT INTO log (a, b) VALUES ({}, {})",
    "DELETE FROM t WHERE id IN ({}, {})",
]
# PostgreSQL text cannot hold NUL (the driver refuses it), so no statement carries one.
_SECRETS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
    min_size=6,
    max_size=30,
)


def _sql_literal(text: str, system: str = "postgresql") -> str:
    """Quote ``text`` as a driver would for ``system``."""
    if system == "mysql":
        text = text.replace("\\", "\\\\")
    return "'" + text.replace("'", "''") + "'"


class TestNoLiteralEverLeaks:
    @given(
        st.sampled_from(_TEMPLATES),
        _SECRETS,
        st.integers(min_value=100_000, max_value=10**12),
        st.sampled_from(["postgresql", "sqlite", "mysql"]),
    )
    def test_string_and_number_literals_never_appear_in_a_shape(
        self, template: str, secret: str, number: int, system: str
    ) -> None:
        """Whatever the literal, the shape neither contains it nor depends on it."""
        statement = template.format(_sql_literal(secret, system), number)
        key, text = sql_shape(statement, system)
        reference = sql_shape(template.format("'x'", 1), system)
        assert (key, text) == reference
        assert str(number) not in text
        assert secret.strip() not in text or secret.strip() in template

    @given(st.text(max_size=300), st.sampled_from(["postgresql", "sqlite"]))
    def test_any_input_gives_a_shape_without_raising(self, statement: str, system: str) -> None:
        key, text = sql_shape(statement, system)
        assert len(text) <= MAX_TEXT
        assert isinstance(key, str)

    @given(_SECRETS)
    def test_a_quoted_secret_inside_any_statement_is_removed(self, secret: str) -> None:
        statement = f"SELECT a FROM t WHERE b = {_sql_literal('zz' + secret)} OR c = 1"
        assert "zz" not in normalize_sql(statement)


class TestFingerprint:
    """The fingerprint zenmetry takes from libpg_query's C function is pglast's, exactly."""

    STATEMENTS = (
        "SELECT 1",
        'SELECT "t"."a" FROM "t" WHERE "t"."id" = $1 AND "t"."b" IN ($2, $3, $4) LIMIT 21',
        "SELECT a FROM t WHERE b = 'x' /* a comment */",
        "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) RETURNING id",
        "UPDATE t SET a = a + 1 WHERE id = ANY($1)",
        'SAVEPOINT "s140_x1"',
        "WITH x AS (SELECT * FROM t) SELECT count(*) FROM x JOIN u USING (id)",
        "SELECT 'café', 'naïve' || $1",
        "SELECT 1\x00; DROP TABLE t",  # C reads up to the NUL, in both
        "SELEC 1",  # not PostgreSQL: no fingerprint
        "SELECT (",
        "",
    )

    @pytest.mark.parametrize("statement", STATEMENTS)
    def test_same_as_pglast(self, statement: str) -> None:
        import pglast.parser

        try:
            expected: str | None = pglast.parser.fingerprint(statement)
        except pglast.parser.ParseError:
            expected = None
        via_c = _shapes._libpg_query()
        assert via_c is not None  # the extension pglast ships answers the known fingerprint
        assert via_c(statement) == expected

    def test_a_wrong_answer_falls_back_to_pglast(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(_shapes, "_KNOWN", ("SELECT 1", "0000000000000000"))
        assert _shapes._libpg_query() is None
        monkeypatch.setattr(_shapes, "_fingerprint", None)
        assert _shapes.fingerprint("SELECT 1") == "50fde20626009aba"  # pglast's own function
        assert _shapes._fingerprint is not None
        assert _shapes._fingerprint.__qualname__ == "_pglast.<locals>.fingerprint"

    def test_not_importing_pglast(self) -> None:
        """The point of the C call: shaping PostgreSQL statements leaves pglast's Python modules unloaded."""
        script = (
            "import sys; from zenmetry.units._shapes import sql_shape;"
            "print(sql_shape('SELECT a FROM t WHERE b = %s', 'postgresql'), 'pglast' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        assert out == "('f5ccd2dc9a65d441', 'SELECT a FROM t WHERE b = ?') False\n"
