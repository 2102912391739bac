"""The stack's configuration files, a real Prometheus for the tests, and the OTel -> Prometheus
name translation the collector documents.

Prometheus and promtool come from Debian's ``prometheus`` package (``.ci/run`` installs it);
amtool from ``prometheus-alertmanager``. No collector, Tempo, Grafana or Alertmanager server
runs here: their files are checked structurally by tests/stack/test_stack.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.processes import ROOT, free_port

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COLLECTOR_CONFIG = ROOT / "collector-config" / "config.yaml"
AGENT_CONFIG = ROOT / "collector-config" / "agent.yaml"
GATEWAY_CONFIG = ROOT / "collector-config" / "gateway.yaml"
COMPOSE_TIER = ROOT / "docker-compose.tier.yml"
PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"
PROMETHEUS_TIER_CONFIG = ROOT / "prometheus" / "prometheus.tier.yml"
RULES = ROOT / "prometheus" / "rules" / "zenmetry.rules.yml"
RULE_TESTS = ROOT / "prometheus" / "tests" / "zenmetry.test.yml"
ALERTMANAGER_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
TEMPO_CONFIG = ROOT / "tempo" / "tempo.yaml"
GRAFANA = ROOT / "grafana-dashboards"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "zenmetry.yaml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "zenmetry.yaml"
STACK_DOC = ROOT / "docs" / "stack.md"
DATA = Path(__file__).parent.parent / "data"  # reference data, see tests/data/README.md
MANIFEST = DATA / "otelcol-contrib-0.159.0-manifest.yaml"
COMPOSE_SCHEMA = DATA / "compose-spec.json"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def tool(name: str) -> str:
    """The path of a Prometheus tool; its absence is a failure (CI installs the Debian packages)."""
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: apt-get install prometheus prometheus-alertmanager")
    return found


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# -- the instruments of CONTRACT.md ------------------------------------------------------------


@dataclass(frozen=True)
class Instrument:
    name: str
    unit: str
    kind: str  # "histogram" or "counter" (monotonic sum)
    extra: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("http", "task")
    """The unit kinds whose points it has."""


INSTRUMENTS = (
    Instrument("zen.unit.duration", "s", "histogram"),
    Instrument("zen.unit.db.queries", "{query}", "histogram", ("db.system",)),
    Instrument("zen.unit.db.duration", "s", "histogram", ("db.system",)),
    Instrument("zen.unit.memory.growth", "By", "histogram"),
    Instrument("zen.unit.external.calls", "{call}", "histogram"),
    # Not in CONTRACT.md's table: calls without a timeout as a metric, for the dashboards and
    # the ZenmetryCallsWithoutTimeout alert (the unit span's zen.external.no_timeout, summed).
    Instrument("zen.unit.external.no_timeout", "{call}", "histogram"),
    Instrument("zen.budget.breaches", "{breach}", "counter", ("zen.limit",)),
    Instrument("zen.unit.queue_wait", "s", "histogram", kinds=("task",)),
    # Not in CONTRACT.md's table either: the unit span's cache figures, for units that called the
    # cache (in the shop, the catalogue).
    Instrument("zen.unit.cache.calls", "{call}", "histogram", kinds=("http",)),
    Instrument("zen.unit.cache.misses", "{call}", "histogram", kinds=("http",)),
)
POINT_ATTRIBUTES = {
    "http": (("zen.unit.kind", "zen.unit.name", "http.request.method", "http.response.status_code"),),
    # A Celery task's points, and a Django task's.
    "task": (
        ("zen.unit.kind", "zen.unit.name", "celery.state"),
        ("zen.unit.kind", "zen.unit.name", "django.task.status"),
    ),
    # A management command's process exits before any scrape: its labels are checked by name.
    "command": (("zen.unit.kind", "zen.unit.name", "zen.command.status"),),
}


# -- the collector's documented OTel -> Prometheus translation ---------------------------------
#
# prometheusexporter with translation_strategy UnderscoreEscapingWithSuffixes (set in
# collector-config/config.yaml) names metrics as the Prometheus translator documents:
# https://github.com/open-telemetry/opentelemetry-collector-contrib/blob/v0.159.0/pkg/translator/prometheus/README.md
# (now implemented by https://github.com/prometheus/otlptranslator, MetricNamer with
# WithMetricSuffixes and no UTF-8): characters outside [a-zA-Z0-9:] split the name into tokens
# joined by "_"; a {annotation} unit is dropped; a UCUM unit is mapped (s -> seconds, By ->
# bytes, ...) and appended unless already a token; "a/b" becomes a_per_b; monotonic counters
# get _total; unit-"1" gauges get _ratio. Histograms are exposed as <name>_bucket, _sum and
# _count. Attribute keys become labels with every character outside [a-zA-Z0-9_] replaced by
# "_", prefixed with "key_" when they do not start with a letter or "__".

_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_TOKEN = re.compile(r"[a-zA-Z0-9:]+")


def _clean_unit(unit: str) -> str:
    return re.sub(r"__+", "_", re.sub(r"[^a-zA-Z0-9:_]", "_", unit)).strip("_")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """The main and "per" suffixes of a unit; a part holding a {annotation} gives none."""
    main, _, per = (part.strip() for part in unit.partition("/"))
    main_suffix = _UNITS.get(main, main) if main and not set("{}") & set(main) else ""
    per_suffix = ""
    if per and not set("{}") & set(per):
        per_suffix = "per_" + _PER_UNITS.get(per, per)
    return _clean_unit(main_suffix), _clean_unit(per_suffix)


def collector_metric_name(name: str, unit: str, kind: str) -> str:
    """The Prometheus name the collector's exporter gives a metric (kind: histogram, counter, gauge)."""
    tokens = _TOKEN.findall(name)
    main, per = _unit_suffixes(unit)
    if main and main not in tokens:
        tokens.append(main)
    if per and per != "per" and per not in tokens:
        tokens.append(per)
    if kind == "counter":
        tokens = [token for token in tokens if token != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [token for token in tokens if token != "ratio"] + ["ratio"]
    built = "_".join(tokens)
    return "_" + built if built[:1].isdigit() else built


def collector_label_name(key: str) -> str:
    """The Prometheus label the collector's exporter gives an attribute key."""
    label = re.sub(r"[^a-zA-Z0-9_]", "_", key)
    if label.startswith("__") or label[:1].isalpha():
        return label
    return "key" + label if label.startswith("_") else "key_" + label


def exposed_names(instrument: Instrument) -> set[str]:
    base = collector_metric_name(instrument.name, instrument.unit, instrument.kind)
    if instrument.kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    return {base}


# -- PromQL: the metric and label names an expression uses --------------------------------------

_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_METRIC = re.compile(r"\b(zen_[a-z0-9_]+|zenmetry:[a-z0-9_:]+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$")


def promql_metrics(expr: str) -> set[str]:
    """zenmetry's metric names (``zen_*``) and recording rules (``zenmetry:*``) in an expression,
    or in Grafana's ``label_values(selector, label)``."""
    expr = _LABEL_VALUES.sub(r"\1", expr)
    expr = _MATCHERS.sub("", re.sub(r'"[^"]*"', '""', expr))
    return set(_METRIC.findall(_GROUPING.sub("", expr)))


def promql_labels(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    labels: set[str] = set()
    for group in _GROUPING.findall(expr):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    for block in _MATCHERS.findall(expr):
        for matcher in re.split(r',(?=(?:[^"]*"[^"]*")*[^"]*$)', block):
            found = _MATCHER.match(matcher)
            if found:
                labels.add(found.group(1))
    return labels


# -- a real Prometheus -------------------------------------------------------------------------


class Prometheus:
    """Debian's Prometheus on a free port, with the given configuration, in a temporary folder."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = folder / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log = (folder / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait(self._ready, "Prometheus did not become ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{(self.folder / 'prometheus.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time: its result vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    @staticmethod
    def wait(
        condition: Callable[[], bool], message: str, timeout: float = 90, describe: Callable[[], object] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{message}: {describe()}" if describe else message)
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@contextmanager
def prometheus(folder: Path, config: dict[str, Any]) -> Iterator[Prometheus]:
    server = Prometheus(folder, config)
    try:
        yield server
    finally:
        server.stop()


# -- the dashboards ----------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in DASHBOARDS}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


PROMETHEUS_SOURCE = {"type": "prometheus", "uid": "prometheus"}
TEMPO_SOURCE = {"type": "tempo", "uid": "tempo"}


def prometheus_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query Prometheus (the others query Tempo)."""
    return [panel for panel in panels(dashboard) if panel["datasource"] != TEMPO_SOURCE]


def tempo_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query Tempo with TraceQL."""
    return [panel for panel in panels(dashboard) if panel["datasource"] == TEMPO_SOURCE]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    return {
        variable["name"]: variable["definition"]
        for variable in dashboard["templating"]["list"]
        if variable.get("type") == "query"
    }


def rule_alerts() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def rule_records() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"] if "record" in rule]
