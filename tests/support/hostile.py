"""Hostile input for the fuzz tests: zenmetry's whole span path on the real SDK, and the
strategies that build statements, MongoDB commands, budget files and variables to break it.

``Pipeline`` is what a process runs: the unit processor on a real ``TracerProvider`` with the
always-record sampler, and the export guard (``ScrubbingExporter``) in front of an in-memory
exporter; every exported batch is also encoded to OTLP protobuf, as the OTLP exporter would.

Secrets are wrapped in ``MARK`` so that any fragment of one that reaches an exported shape or
statement shows the mark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind

from zenmetry import outputs
from zenmetry.config._settings import Settings
from zenmetry.export._sampler import AlwaysRecordSampler
from zenmetry.export._scrub import ScrubbingExporter
from zenmetry.units._processor import UnitProcessor

MARK = "ZQX"
SYSTEMS = ("postgresql", "mysql", "sqlite", "mssql", "oracle")
GET = {"http.request.method": "GET", "http.response.status_code": 200}
REPEAT = 6
"""DB calls per unit: one more than the default ``repeated_queries``, so the unit span carries
a ``zen.db.repeated_query`` event with the statement's shape."""

BOUND_SECONDS = 1.0
"""Every call, even on 1 MB of input, returns within this much CPU time (generous: it proves
"never hangs"; CPU time, not wall time, so that a machine busy with other work cannot fail it)."""


def fuzz_settings(examples: int) -> settings:
    """A fuzz test's example budget: ``examples``, derandomized, in CI (the suite's time
    budget); the loaded profile's when it asks for more (``HYPOTHESIS_PROFILE=explore``)."""
    return settings(settings.default, max_examples=max(examples, settings.default.max_examples))


@dataclass
class Timed:
    """The slowest call seen so far, for the bound and the report."""

    slowest: float = 0.0

    def __call__(self, call: Callable[[], Any]) -> Any:
        start = time.process_time()
        result = call()
        seconds = time.process_time() - start
        self.slowest = max(self.slowest, seconds)
        assert seconds < BOUND_SECONDS, f"{seconds:.2f} s"
        return result


@dataclass
class Pipeline:
    """zenmetry's span path as a process runs it; see the module docstring."""

    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    processor: UnitProcessor = field(
        default_factory=lambda: UnitProcessor(
            listeners=outputs.listeners(Settings(), MeterProvider(metric_readers=[InMemoryMetricReader()]))
        )
    )
    provider: TracerProvider = field(
        default_factory=lambda: TracerProvider(sampler=AlwaysRecordSampler(ParentBased(ALWAYS_ON)))
    )

    def __post_init__(self) -> None:
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(self.exporter)))

    def unit(self, statement: object, system: str, shape: tuple[str, str] | None = None) -> list[ReadableSpan]:
        """One request making ``REPEAT`` DB calls with ``statement`` (or MongoDB calls of
        ``shape``): the spans exported, after checking they encode to OTLP."""
        tracer = self.provider.get_tracer("hostile")
        with tracer.start_as_current_span("GET /h/", kind=SpanKind.SERVER) as request:
            for _ in range(REPEAT):
                attributes = {"db.system": system, "db.statement": statement}
                with tracer.start_as_current_span("db", kind=SpanKind.CLIENT, attributes=attributes) as call:
                    if shape is not None:
                        self.processor.note_shape(call, shape)
            self.processor.finish(request, "h/", GET)
        spans = list(self.exporter.get_finished_spans())
        self.exporter.clear()
        assert self.processor.tracked_spans() == 0
        encode_spans(spans).SerializeToString()
        return spans


def exported_texts(spans: list[ReadableSpan]) -> list[str]:
    """Every statement and statement shape the spans export."""
    texts = []
    for span in spans:
        for key in ("db.statement", "db.query.text"):
            value = (span.attributes or {}).get(key)
            if value is not None:
                texts.append(value)
        for event in span.events:
            if event.name == "zen.db.repeated_query":
                texts.append((event.attributes or {})["zen.statement.fingerprint"])
    return texts


def unit_of(spans: list[ReadableSpan]) -> ReadableSpan:
    (unit,) = [span for span in spans if "zen.unit.kind" in (span.attributes or {})]
    return unit


# -- statements ------------------------------------------------------------------------------

# Text that a literal may hold: every character SQL quotes, escapes or comments with, and any
# other character, lone surrogates included (undecodable bytes kept with surrogateescape).
_CHARACTERS = st.one_of(
    st.sampled_from(list("'\"`\\$*/-#\n\r\t ;(),.?:%@&{}[]0123456789eExXbB")),
    st.characters(codec=None),
)
SECRET = st.text(_CHARACTERS, max_size=40).map(lambda text: f"{MARK}{text}{MARK}")


def _standard(secret: str) -> str:
    return "'" + secret.replace("'", "''") + "'"


def _backslashed(secret: str, quote: str = "'") -> str:
    return quote + secret.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


# Literal forms, each as a driver (or a hand-written statement) would spell the secret, with
# the dialects that read it that way. Comments hold secrets too: sqlcommenter puts values there.
LITERALS: dict[str, tuple[tuple[str, ...], Callable[[str], str]]] = {
    "string": (("postgresql", "sqlite", "mssql", "oracle"), _standard),
    "mysql string": (("mysql",), _backslashed),
    "mysql double-quoted string": (("mysql",), lambda secret: _backslashed(secret, '"')),
    "escape string": (("postgresql",), lambda secret: "E" + _backslashed(secret)),
    "national string": (("postgresql", "mssql", "mysql"), lambda secret: "N" + _standard(secret.replace("\\", ""))),
    "unicode string": (("postgresql",), lambda secret: "U&" + _standard(secret)),
    "dollar-quoted": (("postgresql",), lambda secret: "$z$" + secret.replace("$", "") + "$z$"),
    "block comment": (SYSTEMS, lambda secret: "/*" + secret.replace("*/", "") + "*/"),
    "nested block comment": (
        ("postgresql",),
        lambda secret: "/* outer /* inner */ " + secret.replace("*/", "").replace("/*", "") + " */",
    ),
    "line comment": (SYSTEMS, lambda secret: "--" + secret.replace("\n", "") + "\n"),
    "hash comment": (("mysql",), lambda secret: "#" + secret.replace("\n", "") + "\n"),
}

TEMPLATES = (
    "SELECT * FROM orders WHERE note = {} AND id = 7",
    "UPDATE stock SET label = {} WHERE sku IN (1, 2, 3)",
    'INSERT INTO "log" (a, b) VALUES ({}, 5), (6, 7)',
    "DELETE FROM t WHERE a = {}{}",
    "SELECT a FROM t WHERE b = ({})::text -- trailing",
    "WITH x AS (SELECT {} AS c) SELECT c FROM x /* done */",
    "{}",
)


@st.composite
def literal_statements(draw: st.DrawFn) -> tuple[str, str]:
    """``(statement, system)``: a template with one or two secrets in literal forms of the system."""
    form = draw(st.sampled_from(sorted(LITERALS)))
    systems, spell = LITERALS[form]
    system = draw(st.sampled_from(systems))
    template = draw(st.sampled_from(TEMPLATES))
    literals = [spell(draw(SECRET)) for _ in range(template.count("{}"))]
    return template.format(*literals), system


NUMBERS = st.one_of(
    st.integers(min_value=10**9, max_value=10**30).map(str),
    st.integers(min_value=10**9, max_value=10**30).map(hex),
    st.integers(min_value=10**9, max_value=10**30).map(bin),
    st.integers(min_value=10**9, max_value=10**30).map(oct),
    st.floats(min_value=1e9, max_value=1e30).map(repr),
)
"""Number literals of ten digits or more, in every base SQL spells."""

HOSTILE_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=2_000),
    st.text(st.sampled_from(list("()[]'\"`$/*-#\\\x00;, ")), max_size=2_000),
    st.builds(lambda depth, secret: deep_parentheses(depth, _standard(secret)), st.integers(0, 9_000), SECRET),
)
"""Any text at all: lone surrogates, NUL, unbalanced quotes, comments and parentheses."""


def deep_parentheses(depth: int, inner: str = "1") -> str:
    return "SELECT " + "(" * depth + inner + ")" * depth


# -- MongoDB commands ------------------------------------------------------------------------

MONGO_VALUES = st.one_of(SECRET, st.integers(), st.floats(), st.binary(max_size=20), st.none(), st.booleans())
KEYS = st.one_of(
    st.text("abcdefgh$._", min_size=1, max_size=8),
    st.integers(),
    st.lists(st.integers(0, 15), max_size=4).map(bytes),
)
"""Field names: strings, and (as Python code may build them) integers and bytes; never a secret."""
DOCUMENTS = st.recursive(
    MONGO_VALUES,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=15,
)


@st.composite
def mongo_commands(draw: st.DrawFn) -> dict[Any, Any]:
    """A command as the driver's listener sees it: its name and collection first."""
    name = draw(st.sampled_from(["find", "aggregate", "update", "delete", "count", "insert", "distinct"]))
    document = draw(st.dictionaries(KEYS, DOCUMENTS, max_size=4))
    command: dict[Any, Any] = {name: "products"}
    if name == "aggregate":
        command["pipeline"] = [{"$match": document}, {"$group": draw(st.dictionaries(KEYS, DOCUMENTS, max_size=3))}]
    elif name in ("update", "delete"):
        command["updates" if name == "update" else "deletes"] = [{"q": document, "u": {"$set": document}}]
    elif name == "insert":
        command["documents"] = [document]
    else:
        command[draw(st.sampled_from(["filter", "query"]))] = document
    return command


def nested(depth: int, leaf: object) -> dict[str, Any]:
    """``{"a": {"a": ... leaf}}``, ``depth`` levels deep, built without recursion."""
    document: dict[str, Any] = {"a": leaf}
    for _ in range(depth - 1):
        document = {"a": document}
    return document


# -- configuration ---------------------------------------------------------------------------

TOML_VALUES = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.datetimes(),
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


TABLE_NAMES = st.one_of(
    st.sampled_from(["http", "task", "htp", 'http."orders/<int:pk>/"', 'task."shop.*"', 'http."api/[v1]/*"']),
    st.text("abc.*[]\"'/", min_size=1, max_size=10),
)
LIMIT_NAMES = st.one_of(
    st.sampled_from(["queries", "db_time_ms", "memory_mb", "duration_ms", "external_calls", "repeated_queries"]),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
)


@st.composite
def budget_texts(draw: st.DrawFn) -> str:
    """Budget files: well-formed TOML of any tables, keys and values, or any text at all."""
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    lines = []
    for table in draw(st.lists(TABLE_NAMES, max_size=4)):
        lines.append(f"[{table}]")
        for key, value in draw(st.dictionaries(LIMIT_NAMES, TOML_VALUES, max_size=4)).items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


ENV_VALUES = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
    st.sampled_from(["1", "0", " 1 ", "5", "0.001", "1e309", "-0", "inf", "nan", "1_000", "0x10", "", "   "]),
)
"""Values of environment variables (which cannot hold NUL)."""
