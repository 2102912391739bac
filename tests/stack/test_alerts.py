"""Prometheus configuration and alert rules, checked and unit-tested by the real promtool; the
Alertmanager configuration by the real amtool (Debian's prometheus and prometheus-alertmanager).

What the rules select on the example shop's real metrics is in tests/test_dashboards.py.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.stack import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    PROMETHEUS_TIER_CONFIG,
    ROOT,
    RULE_TESTS,
    RULES,
    STACK_DOC,
    load_yaml,
    rule_alerts,
    rule_records,
    run,
    tool,
)

ALERTS = {
    "ZenmetryBudgetBreaches",
    "ZenmetryQueriesP95High",
    "ZenmetryForegroundExternalCalls",
    "ZenmetryCallsWithoutTimeout",
    "ZenmetryMemoryGrowthP95High",
    "ZenmetrySlowQueries",
    "ZenmetryNoUnits",
    "ZenmetryQueueWaitOverBudget",
}
THRESHOLDS = {
    "zenmetry:threshold:breach_ratio": 0.10,
    "zenmetry:threshold:min_units": 5,
    "zenmetry:threshold:queries_p95": 10,
    "zenmetry:threshold:foreground_external_calls": 0,
    "zenmetry:threshold:calls_without_timeout": 0,
    "zenmetry:threshold:slow_query_units": 0,
    "zenmetry:threshold:memory_growth_p95_bytes": 32 * 1024 * 1024,
    "zenmetry:threshold:queue_wait_over_budget_share": 0.05,
}


def rule_cases() -> list[dict[str, Any]]:
    return [case for test in load_yaml(RULE_TESTS)["tests"] for case in test.get("alert_rule_test", [])]


class TestPromtool:
    @pytest.mark.parametrize("config", [PROMETHEUS_CONFIG, PROMETHEUS_TIER_CONFIG], ids=lambda path: path.name)
    def test_configuration_is_valid(self, config: Path) -> None:
        """promtool check config accepts prometheus.yml (and the two tiers' prometheus.tier.yml) and
        finds the rule file it loads."""
        result = run(tool("promtool"), "check", "config", str(config))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 1 rule files found" in result.stdout

    def test_rules_are_valid(self) -> None:
        """promtool check rules accepts the rule file: 8 thresholds and 8 alerts."""
        result = run(tool("promtool"), "check", "rules", str(RULES))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 16 rules found" in result.stdout

    def test_rule_unit_tests_pass(self) -> None:
        """promtool test rules runs every alert's unit tests and they pass."""
        result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith("SUCCESS")

    @pytest.mark.parametrize(
        ("threshold", "value"),
        [
            ("zenmetry:threshold:breach_ratio", "vector(1)"),
            ("zenmetry:threshold:min_units", "vector(1000)"),
            ("zenmetry:threshold:queries_p95", "vector(15)"),
            ("zenmetry:threshold:foreground_external_calls", "vector(100)"),
            ("zenmetry:threshold:calls_without_timeout", "vector(100)"),
            ("zenmetry:threshold:slow_query_units", "vector(100)"),
            ("zenmetry:threshold:memory_growth_p95_bytes", "vector(64 * 1024 * 1024)"),
            ("zenmetry:threshold:queue_wait_over_budget_share", "vector(0.5)"),
        ],
    )
    def test_rule_unit_tests_fail_when_a_threshold_moves(self, tmp_path: Path, threshold: str, value: str) -> None:
        """Raising any one threshold makes the unit tests fail: each threshold is exercised."""
        rules = load_yaml(RULES)
        (record,) = (rule for rule in rules["groups"][0]["rules"] if rule.get("record") == threshold)
        record["expr"] = value
        (tmp_path / "rules").mkdir()
        (tmp_path / "tests").mkdir()
        (tmp_path / "rules" / RULES.name).write_text(yaml.safe_dump(rules))
        shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
        result = run(tool("promtool"), "test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
        assert result.returncode == 1, result.stdout
        assert "FAILED" in result.stderr


class TestRules:
    def test_the_alerts_are_the_ones_documented(self) -> None:
        """Eight alerts, each named in docs/stack.md."""
        assert {alert["alert"] for alert in rule_alerts()} == ALERTS
        doc = STACK_DOC.read_text()
        for name in ALERTS:
            assert f"`{name}`" in doc, name

    def test_every_alert_is_tested_firing_and_silent(self) -> None:
        """Each alert has a unit test where it fires and one where it stays silent."""
        firing = {case["alertname"] for case in rule_cases() if case["exp_alerts"]}
        silent = {case["alertname"] for case in rule_cases() if not case["exp_alerts"]}
        assert firing == ALERTS
        assert silent == ALERTS

    def test_thresholds_are_recorded_series_with_the_documented_values(self) -> None:
        """Every threshold is a zenmetry:threshold:* recording rule, with the value docs/stack.md gives."""
        records = {rule["record"]: rule["expr"] for rule in rule_records()}
        assert set(records) == set(THRESHOLDS)
        doc = STACK_DOC.read_text()
        for name, expr in records.items():
            found = re.fullmatch(r"vector\(([\d.* ]+)\)", expr)
            assert found is not None, expr
            assert math.prod(float(factor) for factor in found.group(1).split("*")) == THRESHOLDS[name], name
            assert f"`{name}`" in doc, name

    def test_alerts_compare_against_thresholds_not_numbers(self) -> None:
        """No alert compares with a literal number (beyond "> 0" for "any"); every threshold is used."""
        used = set()
        for alert in rule_alerts():
            expr = alert["expr"]
            used.update(re.findall(r"scalar\((zenmetry:threshold:[a-z0-9_]+)\)", expr))
            literal = re.findall(r"(?:>|<|>=|<=|==|!=)\s*(\d+(?:\.\d+)?)", expr)
            assert set(literal) <= {"0"}, (alert["alert"], literal)
        assert used == set(THRESHOLDS)

    def test_alerts_are_documented_and_linked(self) -> None:
        """Each alert has a severity, a summary and a description; unit alerts link to the drill-down."""
        for alert in rule_alerts():
            assert alert["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= set(alert["annotations"])
            assert ("dashboard" in alert["annotations"]) == (alert["alert"] != "ZenmetryNoUnits")


class TestAlertmanager:
    def test_configuration_is_valid(self) -> None:
        """amtool check-config accepts alertmanager.yml."""
        result = run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout

    def test_every_route_has_a_receiver(self) -> None:
        """The routes name defined receivers; a silent service has its own route."""
        config = load_yaml(ALERTMANAGER_CONFIG)
        receivers = {receiver["name"] for receiver in config["receivers"]}
        routes = [config["route"], *config["route"].get("routes", [])]
        assert {route["receiver"] for route in routes} <= receivers
        assert config["route"]["routes"][0]["matchers"] == ["alertname = ZenmetryNoUnits"]

    def test_prometheus_sends_alerts_to_alertmanager(self) -> None:
        """prometheus.yml points its alerting at the alertmanager service."""
        config = load_yaml(PROMETHEUS_CONFIG)
        assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]
        assert config["rule_files"] == ["rules/*.rules.yml"]
        assert (PROMETHEUS_CONFIG.parent / "rules" / RULES.name).resolve() == RULES.resolve()


def test_the_test_command_installs_the_prometheus_tools() -> None:
    """``make test`` (README's test command, which CI runs) installs Debian's prometheus and
    prometheus-alertmanager first when promtool or amtool is missing."""
    makefile = (ROOT / "Makefile").read_text()
    assert "test: $(BIN)/.installed tools" in makefile
    tools = makefile[makefile.index("\ntools:") :]
    assert "apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager" in tools
    assert "make test" in (ROOT / ".ci" / "run").read_text()
