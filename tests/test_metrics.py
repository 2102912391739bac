"""The metrics are the SDK's, bound once per attribute set: what reaches every reader is exactly
what the public ``record()`` of every point gives, in both temporalities, with views, exemplars
and readers added later."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace import TracerProvider

from zenmetry import _names
from zenmetry.config._budgets import Budgets
from zenmetry.outputs import _metrics
from zenmetry.outputs._metrics import Instruments
from zenmetry.units._figures import Breach, Figures, FinishedUnit

DELTA = {Histogram: AggregationTemporality.DELTA, Counter: AggregationTemporality.DELTA}
BUDGET = Budgets().resolve("http", "x", None)


def unit(name: str, queries: int, *, status: int = 200, mongo: int = 0, breached: bool = False) -> FinishedUnit:
    systems = {"postgresql": (queries, queries * 0.7)}
    if mongo:
        systems["mongodb"] = (mongo, mongo * 0.2)
    figures = Figures(
        kind="http",
        name=name,
        queries=queries + mongo,
        db_duration_ms=queries * 0.7 + mongo * 0.2,
        systems=systems,
        repeated_max=1,
        repetitions=(),
        external_calls=queries % 3,
        external_duration_ms=1.0,
        no_timeout=queries % 2,
        rss_delta_bytes=queries * 70_000 - 100_000,
        duration_ms=queries * 1.9,
    )
    breaches = (Breach("db_queries", 10, queries),) if breached else ()
    point = {_names.HTTP_REQUEST_METHOD: "GET", _names.HTTP_RESPONSE_STATUS_CODE: status}
    return FinishedUnit(figures, point, BUDGET, breaches, 1)


UNITS = [
    unit("orders/", 5),
    unit("orders/", 13, breached=True),
    unit("orders/<int:pk>/", 2, status=500),
    unit("catalogue/", 1, mongo=3),
    unit("orders/", 5),
    unit("orders/", 0),
]


def record_every_point(meter_provider: MeterProvider) -> Callable[[FinishedUnit], None]:
    """The specification: every point through the SDK's public API, as zenmetry did at first."""
    instruments = Instruments(meter_provider)

    def record(finished: FinishedUnit) -> None:
        figures = finished.figures
        base = {_names.UNIT_KIND: figures.kind, _names.UNIT_NAME: figures.name, **finished.point}
        instruments.duration.record(figures.duration_ms / 1e3, base)
        instruments.memory_growth.record(max(figures.rss_delta_bytes, 0), base)
        instruments.external_calls.record(figures.external_calls, base)
        instruments.external_no_timeout.record(figures.no_timeout, base)
        for system, (count, duration_ms) in figures.systems.items():
            instruments.db_queries.record(count, {**base, _names.DB_SYSTEM: system})
            instruments.db_duration.record(duration_ms / 1e3, {**base, _names.DB_SYSTEM: system})
        overall = {**base, _names.DB_SYSTEM: _names.ALL_SYSTEMS}
        instruments.db_queries.record(figures.queries, overall)
        instruments.db_duration.record(figures.db_duration_ms / 1e3, overall)
        for breach in finished.breaches:
            instruments.breaches.add(1, {**base, _names.LIMIT: breach.limit})

    return record


def otlp(data: MetricsData | None) -> list[object]:
    """The OTLP request the exporter would send, with the times (which differ) zeroed."""
    assert data is not None
    request = encode_metrics(data)
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points:
                    point.start_time_unix_nano = point.time_unix_nano = 0
                    for exemplar in point.exemplars:
                        exemplar.time_unix_nano = 0
    return sorted(
        (metric.name, getattr(metric, metric.WhichOneof("data")).SerializeToString(deterministic=True))
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )


def pair(**provider: object) -> Iterator[tuple[InMemoryMetricReader, InMemoryMetricReader]]:
    yield InMemoryMetricReader(**provider), InMemoryMetricReader(**provider)  # type: ignore[arg-type]


@pytest.mark.parametrize("temporality", [None, DELTA], ids=["cumulative", "delta"])
def test_every_reader_gets_what_the_public_api_gives(temporality: dict[type, AggregationTemporality] | None) -> None:
    options = {"preferred_temporality": temporality} if temporality else {}
    expected, actual = InMemoryMetricReader(**options), InMemoryMetricReader(**options)  # type: ignore[arg-type]
    reference = record_every_point(MeterProvider(metric_readers=[expected]))
    bound = Instruments(MeterProvider(metric_readers=[actual]))
    # A sampled span is current, as when the Django hook finishes a unit: the exemplars are its.
    tracer = TracerProvider().get_tracer("tests")
    for collection in range(3):
        with tracer.start_as_current_span("GET orders/"):
            for finished in UNITS[collection:]:
                reference(finished)
                bound.record(finished)
        last = actual.get_metrics_data()
        assert otlp(last) == otlp(expected.get_metrics_data())
    # 3 unit attribute sets x (4 + 2 for postgresql + 2 for all) + 2 for mongodb + 1 breach
    assert len(bound._bound) == 27
    points = {
        (metric.name, tuple(sorted(point.attributes.items()))): point
        for rm in last.resource_metrics  # type: ignore[union-attr]
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    }
    orders = tuple(sorted({**UNITS[0].point, _names.UNIT_KIND: "http", _names.UNIT_NAME: "orders/"}.items()))
    if temporality:  # the last collection holds UNITS[2:] only
        assert points[(_names.METRIC_DURATION, orders)].count == 2
    else:
        assert points[(_names.METRIC_DURATION, orders)].count == 4 + 3 + 2


def test_views_and_several_readers_are_honoured() -> None:
    def readers() -> list[InMemoryMetricReader]:
        return [InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=DELTA)]

    views = [
        View(instrument_name=_names.METRIC_DB_QUERIES, attribute_keys={_names.UNIT_NAME, _names.DB_SYSTEM}),
        View(instrument_name=_names.METRIC_DURATION, name="renamed_duration"),
    ]
    expected, actual = readers(), readers()
    reference = record_every_point(MeterProvider(metric_readers=expected, views=views))
    bound = Instruments(MeterProvider(metric_readers=actual, views=views))
    for finished in UNITS * 2:
        reference(finished)
        bound.record(finished)
    for mine, theirs in zip(actual, expected, strict=True):
        found = otlp(mine.get_metrics_data())
        assert found == otlp(theirs.get_metrics_data())
        assert [name for name, _ in found].count("renamed_duration") == 1


def test_a_reader_added_later_gets_the_points_from_then_on() -> None:
    first, later = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[first])
    bound = Instruments(provider)
    for finished in UNITS:
        bound.record(finished)
    provider.add_metric_reader(later)
    bound.record(UNITS[0])
    bound.record(UNITS[0])

    def orders_count(reader: InMemoryMetricReader) -> int:
        data = reader.get_metrics_data()
        assert data is not None
        (metric,) = [m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name == _names.METRIC_DURATION]
        return sum(p.count for p in metric.data.data_points if p.attributes[_names.UNIT_NAME] == "orders/")

    assert (orders_count(first), orders_count(later)) == (6, 2)


def test_without_the_sdk_internals_every_point_takes_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_metrics, "_sdk_internals", lambda: (None, None))
    expected, actual = InMemoryMetricReader(), InMemoryMetricReader()
    reference = record_every_point(MeterProvider(metric_readers=[expected]))
    bound = Instruments(MeterProvider(metric_readers=[actual]))
    for finished in UNITS:
        reference(finished)
        bound.record(finished)
    assert set(bound._bound.values()) == {None}
    assert otlp(actual.get_metrics_data()) == otlp(expected.get_metrics_data())


def test_the_metrics_sdk_is_not_imported_by_zenmetry_until_a_unit_records_its_points() -> None:
    """The test suite's processor records no metric: it never pays the metrics SDK's import."""
    code = (
        "import sys; from zenmetry.units import _processor; from zenmetry.outputs import _metrics; from zenmetry.testing import _api; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk.metrics')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_value_the_sdk_refuses_is_refused_the_same_way() -> None:
    expected, actual = InMemoryMetricReader(), InMemoryMetricReader()
    reference = record_every_point(MeterProvider(metric_readers=[expected]))
    bound = Instruments(MeterProvider(metric_readers=[actual]))
    backwards = unit("orders/", 5)
    object.__setattr__(backwards.figures, "duration_ms", -3.0)  # a clock stepped back
    for finished in (UNITS[0], backwards, UNITS[0]):
        reference(finished)
        bound.record(finished)
    assert otlp(actual.get_metrics_data()) == otlp(expected.get_metrics_data())
