"""The compose stack's files: docker-compose.yml against the Compose Specification, the
collector configuration against the pinned contrib distribution and its components' documented
settings, and the addresses the services use to reach each other.

No Docker engine and no collector run here (see tests/stack.py): these checks are structural.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from support import ottl
from support.stack import (
    AGENT_CONFIG,
    ALERTMANAGER_CONFIG,
    COLLECTOR_CONFIG,
    COMPOSE,
    COMPOSE_SCHEMA,
    COMPOSE_TIER,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    ENV_EXAMPLE,
    GATEWAY_CONFIG,
    MANIFEST,
    PROMETHEUS_CONFIG,
    PROMETHEUS_TIER_CONFIG,
    ROOT,
    TEMPO_CONFIG,
    load_yaml,
)

VERSION = "0.159.0"
CORE = f"https://github.com/open-telemetry/opentelemetry-collector/blob/v{VERSION}"
CONTRIB = f"https://github.com/open-telemetry/opentelemetry-collector-contrib/blob/v{VERSION}"

# -- what each component the collector configuration uses documents for 0.159.0 --------------
#
# A key maps to None (a value the component documents, not checked further), to a dict (the
# keys allowed inside it) or to a one-item list (a list of such dicts). The shared settings
# come from the helpers the READMEs point to: configgrpc / confighttp (servers and clients),
# configtls and exporterhelper (queue, retry, timeout).
GRPC_SERVER = dict.fromkeys(
    [
        "endpoint",
        "transport",
        "tls",
        "max_recv_msg_size_mib",
        "max_concurrent_streams",
        "read_buffer_size",
        "write_buffer_size",
        "keepalive",
        "auth",
        "include_metadata",
    ]
)  # {CORE}/config/configgrpc/README.md
HTTP_SERVER = dict.fromkeys(
    [
        "endpoint",
        "tls",
        "cors",
        "auth",
        "max_request_body_size",
        "include_metadata",
        "response_headers",
        "compression_algorithms",
        "read_timeout",
        "read_header_timeout",
        "write_timeout",
        "idle_timeout",
    ]
)  # {CORE}/config/confighttp/README.md
TLS_CLIENT = dict.fromkeys(
    [
        "insecure",
        "insecure_skip_verify",
        "ca_file",
        "ca_pem",
        "cert_file",
        "cert_pem",
        "key_file",
        "key_pem",
        "server_name_override",
        "min_version",
        "max_version",
        "include_system_ca_certs_pool",
        "reload_interval",
    ]
)  # {CORE}/config/configtls/README.md
OTLP_GRPC_CLIENT = {
    "endpoint": None,
    "tls": TLS_CLIENT,
    "compression": None,
    "headers": None,
    "keepalive": None,
    "balancer_name": None,
    "authority": None,
    "auth": None,
    "read_buffer_size": None,
    "write_buffer_size": None,
    "wait_for_ready": None,
    "timeout": None,  # {CORE}/exporter/exporterhelper/README.md
    "sending_queue": None,
    "retry_on_failure": None,
}  # {CORE}/exporter/otlpexporter/README.md
POLICY = {
    "name": None,
    "type": None,
    "always_sample": None,
    "latency": None,
    "numeric_attribute": None,
    "probabilistic": dict.fromkeys(["hash_salt", "sampling_percentage"]),
    "status_code": dict.fromkeys(["status_codes"]),
    "string_attribute": None,
    "trace_state": None,
    "trace_flags": None,
    "rate_limiting": None,
    "bytes_limiting": None,
    "span_count": None,
    "boolean_attribute": None,
    "ottl_condition": dict.fromkeys(["error_mode", "span", "spanevent"]),
    "and": None,
    "drop": None,
    "composite": None,
}
POLICY_TYPES = {key for key in POLICY if key not in ("name", "type")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load_yaml(COLLECTOR_CONFIG)


@pytest.fixture(scope="module")
def tier() -> dict[str, Any]:
    return load_yaml(COMPOSE_TIER)


COMPONENTS: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {
    # (kind, type): (module in the distribution's manifest, its documentation, its settings)
    ("receivers", "otlp"): (
        "go.opentelemetry.io/collector/receiver/otlpreceiver",
        f"{CORE}/receiver/otlpreceiver/README.md",
        {
            "protocols": {
                "grpc": GRPC_SERVER,
                "http": {**HTTP_SERVER, **dict.fromkeys(["traces_url_path", "metrics_url_path", "logs_url_path"])},
            }
        },
    ),
    ("processors", "memory_limiter"): (
        "go.opentelemetry.io/collector/processor/memorylimiterprocessor",
        f"{CORE}/processor/memorylimiterprocessor/README.md",
        dict.fromkeys(["check_interval", "limit_mib", "spike_limit_mib", "limit_percentage", "spike_limit_percentage"]),
    ),
    ("processors", "batch"): (
        "go.opentelemetry.io/collector/processor/batchprocessor",
        f"{CORE}/processor/batchprocessor/README.md",
        dict.fromkeys(
            ["send_batch_size", "timeout", "send_batch_max_size", "metadata_keys", "metadata_cardinality_limit"]
        ),
    ),
    ("processors", "tail_sampling"): (
        "github.com/open-telemetry/opentelemetry-collector-contrib/processor/tailsamplingprocessor",
        f"{CONTRIB}/processor/tailsamplingprocessor/README.md",
        {
            "decision_wait": None,
            "num_traces": None,
            "expected_new_traces_per_sec": None,
            "decision_cache": dict.fromkeys(["sampled_cache_size", "non_sampled_cache_size"]),
            "policies": [POLICY],
            "sample_on_first_match": None,
            "drop_pending_traces_on_shutdown": None,
        },
    ),
    # The otlp exporter's type is otlp_grpc since v0.144.0 (`otlp` is its deprecated alias).
    ("exporters", "otlp_grpc"): (
        "go.opentelemetry.io/collector/exporter/otlpexporter",
        f"{CORE}/exporter/otlpexporter/README.md",
        OTLP_GRPC_CLIENT,
    ),
    ("exporters", "loadbalancing"): (
        "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/loadbalancingexporter",
        f"{CONTRIB}/exporter/loadbalancingexporter/README.md",
        {
            "routing_key": None,
            # "all options from the OTLP exporter are supported, except the endpoint"
            "protocol": {"otlp": {key: value for key, value in OTLP_GRPC_CLIENT.items() if key != "endpoint"}},
            "resolver": {
                "static": dict.fromkeys(["hostnames"]),
                "dns": dict.fromkeys(["hostname", "port", "interval", "timeout"]),
                "k8s": dict.fromkeys(["service", "ports", "timeout", "return_hostnames"]),
                "aws_cloud_map": None,
            },
            "timeout": None,  # exporterhelper, around the whole export
            "sending_queue": None,
            "retry_on_failure": None,
        },
    ),
    ("connectors", "routing"): (
        "github.com/open-telemetry/opentelemetry-collector-contrib/connector/routingconnector",
        f"{CONTRIB}/connector/routingconnector/README.md",
        {
            "table": [dict.fromkeys(["context", "condition", "statement", "pipelines"])],
            "default_pipelines": None,
            "error_mode": None,
        },
    ),
    ("processors", "filter"): (
        "github.com/open-telemetry/opentelemetry-collector-contrib/processor/filterprocessor",
        f"{CONTRIB}/processor/filterprocessor/README.md",
        {
            "error_mode": None,
            "traces": dict.fromkeys(["span", "spanevent"]),
            "metrics": dict.fromkeys(["metric", "datapoint"]),
            "logs": dict.fromkeys(["log_record"]),
        },
    ),
    ("exporters", "prometheus"): (
        "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusexporter",
        f"{CONTRIB}/exporter/prometheusexporter/README.md",
        {
            **HTTP_SERVER,
            "const_labels": None,
            "namespace": None,
            "send_timestamps": None,
            "metric_expiration": None,
            "resource_constant_labels": dict.fromkeys(["included", "excluded"]),
            "resource_to_telemetry_conversion": dict.fromkeys(["enabled", "exclude_service_attributes"]),
            "enable_open_metrics": None,
            "without_scope_info": None,
            "add_metric_suffixes": None,
            "translation_strategy": None,
        },
    ),
    ("extensions", "health_check"): (
        "github.com/open-telemetry/opentelemetry-collector-contrib/extension/healthcheckextension",
        f"{CONTRIB}/extension/healthcheckextension/README.md",
        {**HTTP_SERVER, "path": None, "response_body": None},
    ),
}
# The service section: https://opentelemetry.io/docs/collector/configuration/#service and
# {CORE}/docs/internal-telemetry.md (pull readers of the collector's own metrics).
SERVICE = {
    "extensions": None,
    "pipelines": None,
    "telemetry": {
        "logs": dict.fromkeys(["level", "encoding", "development", "sampling", "output_paths", "error_output_paths"]),
        "metrics": {
            "level": None,
            "readers": [{"pull": {"exporter": {"prometheus": dict.fromkeys(["host", "port"])}}}],
        },
    },
}
TRANSLATION_STRATEGIES = {
    "UnderscoreEscapingWithSuffixes",
    "UnderscoreEscapingWithoutSuffixes",
    "NoUTF8EscapingWithSuffixes",
    "NoTranslation",
}


def unknown_keys(settings: Any, allowed: Any, path: str = "") -> list[str]:
    """Keys of ``settings`` that ``allowed`` does not document, as dotted paths."""
    if allowed is None or settings is None:
        return []
    if isinstance(allowed, list):
        assert isinstance(settings, list), path
        return [found for i, item in enumerate(settings) for found in unknown_keys(item, allowed[0], f"{path}[{i}]")]
    assert isinstance(settings, dict), path
    found = []
    for key, value in settings.items():
        where = f"{path}.{key}" if path else key
        if key not in allowed:
            found.append(where)
        else:
            found.extend(unknown_keys(value, allowed[key], where))
    return found


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def manifest_modules() -> dict[str, dict[str, str]]:
    manifest = load_yaml(MANIFEST)
    assert manifest["dist"]["version"] == VERSION
    return {
        kind: dict(entry["gomod"].split() for entry in manifest.get(kind, []))
        for kind in ("receivers", "processors", "exporters", "extensions", "connectors")
    }


def compose_port(compose: dict[str, Any], service: str) -> None:
    assert service in compose["services"], service


def host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "//" in address else f"//{address}")
    assert parts.hostname is not None, address
    assert parts.port is not None, address
    return parts.hostname, parts.port


def listen_port(endpoint: str) -> int:
    return host_port(endpoint)[1]


CONFIGS = {"single": COLLECTOR_CONFIG, "agent": AGENT_CONFIG, "gateway": GATEWAY_CONFIG}
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, Any]]:
    return {name: load_yaml(path) for name, path in CONFIGS.items()}


def ottl_conditions(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Every OTTL condition of a configuration, with the context it runs in."""
    found = []
    for policy in ((config.get("processors") or {}).get("tail_sampling") or {}).get("policies", []):
        for context in ("span", "spanevent"):
            found += [(condition, context) for condition in policy.get("ottl_condition", {}).get(context, [])]
    for cid, settings in (config.get("processors") or {}).items():
        if component_type(cid) == "filter":
            found += [(condition, "span") for condition in settings["traces"].get("span", [])]
    for cid, settings in (config.get("connectors") or {}).items():
        if component_type(cid) == "routing":
            found += [(route["condition"], route["context"]) for route in settings["table"]]
    return found


def trace_keeping(config: dict[str, Any]) -> dict[str, Any]:
    """What decides which traces are kept, and where they and the metrics go."""
    return {
        "connectors": config["connectors"],
        "processors": config["processors"],
        "exporters": config["exporters"],
        "pipelines": config["service"]["pipelines"],
    }


@pytest.mark.parametrize("name", CONFIGS)
class TestCollectorConfigs:
    """The single collector, the agent and the gateway, each against otelcol-contrib 0.159.0."""

    def test_every_component_is_built_into_the_pinned_distribution(
        self, configs: dict[str, dict[str, Any]], name: str
    ) -> None:
        """Each component the configuration defines is in otelcol-contrib 0.159.0's manifest."""
        modules = manifest_modules()
        defined = {(kind, component_type(cid)) for kind in KINDS for cid in configs[name].get(kind) or {}}
        assert defined <= set(COMPONENTS), defined - set(COMPONENTS)
        for kind, ctype in defined:
            module, _, _ = COMPONENTS[(kind, ctype)]
            assert modules[kind].get(module) == f"v{VERSION}", (kind, ctype)

    def test_every_setting_is_one_the_component_documents(self, configs: dict[str, dict[str, Any]], name: str) -> None:
        """No key outside each component's documented settings (see COMPONENTS for the links)."""
        config = configs[name]
        for (kind, ctype), (_, _, allowed) in COMPONENTS.items():
            for cid, settings in (config.get(kind) or {}).items():
                if component_type(cid) == ctype:
                    assert unknown_keys(settings or {}, allowed) == [], (name, cid)
        assert unknown_keys(config["service"], SERVICE) == []
        assert set(config) <= {*KINDS, "service"}

    def test_pipelines_use_defined_components_and_every_component_is_used(
        self, configs: dict[str, dict[str, Any]], name: str
    ) -> None:
        """Each pipeline names defined components (a connector is an exporter of one pipeline and a
        receiver of another); nothing is defined for nothing."""
        config = configs[name]
        connectors = set(config.get("connectors") or {})
        used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
        for pipeline in config["service"]["pipelines"].values():
            assert set(pipeline) == {"receivers", "processors", "exporters"}
            for kind, ids in pipeline.items():
                assert set(ids) <= set(config[kind]) | (connectors if kind != "processors" else set()), (kind, ids)
                used[kind].update(ids)
        for kind, ids in used.items():
            assert ids - connectors == set(config[kind]), kind
        assert connectors <= used["receivers"] & used["exporters"]
        assert set(config["service"]["extensions"]) == set(config["extensions"])

    def test_every_ottl_condition_parses_in_its_context(self, configs: dict[str, dict[str, Any]], name: str) -> None:
        """The conditions of tail sampling, the filter and the router, by OTTL's grammar and the
        paths their contexts offer (support/ottl.py says what only a collector proves)."""
        conditions = ottl_conditions(configs[name])
        for condition, context in conditions:
            ottl.check(condition, context)
        expected = [] if name == "agent" else [('attributes["zen.unit.kept"] == true', "span")] * 3
        assert sorted(conditions) == expected


class TestTraceKeeping:
    def test_the_gateway_keeps_traces_as_the_single_collector_does(self, configs: dict[str, dict[str, Any]]) -> None:
        """Router, sampler, filter, exporters and pipelines are the same in both files."""
        assert trace_keeping(configs["gateway"]) == trace_keeping(configs["single"])

    def test_processors_run_in_the_documented_order(self, configs: dict[str, dict[str, Any]]) -> None:
        """memory_limiter first, batch last; the sampler, then the filter of what went on already;
        metrics are never sampled; the agent only batches."""
        for name in ("single", "gateway"):
            pipelines = {
                key: (p["processors"], p["exporters"]) for key, p in configs[name]["service"]["pipelines"].items()
            }
            assert pipelines == {
                "traces": (["memory_limiter"], ["routing/kept"]),
                "traces/kept": (["batch"], ["otlp_grpc/tempo"]),
                "traces/sampled": (["tail_sampling", "filter/kept", "batch"], ["otlp_grpc/tempo"]),
                "metrics": (["memory_limiter", "batch"], ["prometheus"]),
            }
        agent = {key: (p["processors"], p["exporters"]) for key, p in configs["agent"]["service"]["pipelines"].items()}
        assert agent == {
            "traces": (["memory_limiter", "batch"], ["loadbalancing"]),
            "metrics": (["memory_limiter", "batch"], ["loadbalancing/metrics"]),
        }

    def test_a_kept_units_spans_go_on_and_to_the_sampler(self, configs: dict[str, dict[str, Any]]) -> None:
        """The router sends zen.unit.kept spans to Tempo and to the sampler, the rest to the sampler."""
        router = configs["single"]["connectors"]["routing/kept"]
        assert router == {
            "default_pipelines": ["traces/sampled"],
            "error_mode": "ignore",
            "table": [
                {
                    "context": "span",
                    "condition": 'attributes["zen.unit.kept"] == true',
                    "pipelines": ["traces/kept", "traces/sampled"],
                }
            ],
        }
        assert configs["single"]["processors"]["filter/kept"] == {
            "error_mode": "ignore",
            "traces": {"span": ['attributes["zen.unit.kept"] == true']},
        }

    def test_tail_sampling_keeps_kept_units_errors_and_a_share(self, configs: dict[str, dict[str, Any]]) -> None:
        """Policies select zenmetry's kept units and ERROR status, plus ZEN_TRACES_SAMPLE_PERCENT percent."""
        sampling = configs["single"]["processors"]["tail_sampling"]
        policies = {policy["name"]: policy for policy in sampling["policies"]}
        assert {policy["type"] for policy in policies.values()} <= POLICY_TYPES
        assert policies == {
            "kept-units": {
                "name": "kept-units",
                "type": "ottl_condition",
                "ottl_condition": {"error_mode": "ignore", "span": ['attributes["zen.unit.kept"] == true']},
            },
            "errors": {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            "share-of-the-rest": {
                "name": "share-of-the-rest",
                "type": "probabilistic",
                "probabilistic": {"sampling_percentage": "${env:ZEN_TRACES_SAMPLE_PERCENT:-10}"},
            },
        }
        assert sampling["decision_cache"] == {"sampled_cache_size": 200000}

    def test_the_sizing_in_the_docs_is_the_configurations(self, configs: dict[str, dict[str, Any]]) -> None:
        """docs/stack.md's arithmetic holds, and its numbers are the ones the configuration runs with."""
        figures = sizing_table()
        wait = figures["longest unit decided whole (s)"] + figures["export delay (s)"]
        sampling = configs["single"]["processors"]["tail_sampling"]
        limiter = configs["single"]["processors"]["memory_limiter"]
        assert figures["`decision_wait` (s)"] == wait == int(sampling["decision_wait"].removesuffix("s"))
        load = figures["stated load (units/s)"]
        assert figures["`expected_new_traces_per_sec`"] == load == sampling["expected_new_traces_per_sec"]
        assert figures["traces arriving in one wait"] == load * wait
        assert figures["`num_traces`"] == 2 * load * wait == sampling["num_traces"]
        held = figures["bytes held per unit in the collector"]
        assert held == 4 * figures["bytes on the wire per unit"]
        in_flight = figures["memory of the traces in flight (MiB)"]
        assert in_flight == round(sampling["num_traces"] * held / 2**20)
        assert figures["`sampled_cache_size`"] == sampling["decision_cache"]["sampled_cache_size"]
        assert (figures["`memory_limiter` `limit_mib`"], figures["`memory_limiter` `spike_limit_mib`"]) == (
            limiter["limit_mib"],
            limiter["spike_limit_mib"],
        )
        assert limiter["limit_mib"] - limiter["spike_limit_mib"] > in_flight  # the soft limit holds them
        # The SDK's schedule and the agent's batch are inside the export delay.
        assert configs["agent"]["processors"]["batch"]["timeout"] == "1s"
        assert figures["export delay (s)"] >= 5 + 1

    def test_the_agent_routes_traces_by_trace_id_and_metrics_by_resource_to_the_gateways(
        self, configs: dict[str, dict[str, Any]], tier: dict[str, Any]
    ) -> None:
        """Both exporters list the same gateways, each a service of the tier's compose file that
        listens on the port named, over gRPC as gateway.yaml does."""
        exporters = configs["agent"]["exporters"]
        assert (exporters["loadbalancing"]["routing_key"], exporters["loadbalancing/metrics"]["routing_key"]) == (
            "traceID",
            "resource",
        )
        lists = [exporter["resolver"]["static"]["hostnames"] for exporter in exporters.values()]
        assert lists[0] == lists[1] == ["otel-gateway-1:4317", "otel-gateway-2:4317"]
        grpc = configs["gateway"]["receivers"]["otlp"]["protocols"]
        assert set(grpc) == {"grpc"}
        for host, port in map(host_port, lists[0]):
            assert host in tier["services"]
            assert port == listen_port(grpc["grpc"]["endpoint"])
            assert tier["services"][host]["command"] == ["--config=/etc/otelcol-contrib/gateway.yaml"]


def sizing_table() -> dict[str, int]:
    """The figures of docs/stack.md's sizing table, by their first column."""
    text = (ROOT / "docs" / "stack.md").read_text()
    table = text.split("| figure | value | from |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[1:]]
    return {label.strip(): int(value.strip()) for label, value in rows}


class TestCollectorComponents:
    def test_an_undocumented_setting_is_caught(self, collector: dict[str, Any]) -> None:
        """The settings check fails on a misspelt key, nested or not."""
        broken = copy.deepcopy(collector)
        broken["processors"]["tail_sampling"]["policies"][0]["ottl_condition"]["spans"] = []
        broken["processors"]["batch"]["send_batch"] = 1
        broken["connectors"]["routing/kept"]["table"][0]["contexts"] = "span"
        _, _, tail = COMPONENTS[("processors", "tail_sampling")]
        _, _, batch = COMPONENTS[("processors", "batch")]
        _, _, routing = COMPONENTS[("connectors", "routing")]
        assert unknown_keys(broken["processors"]["tail_sampling"], tail) == ["policies[0].ottl_condition.spans"]
        assert unknown_keys(broken["processors"]["batch"], batch) == ["send_batch"]
        assert unknown_keys(broken["connectors"]["routing/kept"], routing) == ["table[0].contexts"]

    def test_the_ottl_check_catches_a_broken_condition(self) -> None:
        """A misspelt path, field or enum, ``=`` for ``==``, an unclosed key, a dangling ``or``."""
        broken = [
            'atributes["zen.unit.kept"] == true',
            'attributes["zen.unit.kept"] = true',
            'attributes["zen.unit.kept" == true',
            "status.cod == STATUS_CODE_ERROR",
            "status.code == STATUS_CODE_ERR",
            'name == "zen.budget.breach" or',
        ]
        for condition in broken:
            with pytest.raises(ottl.OttlError):
                ottl.check(condition, "span")
        ottl.check('status.code == STATUS_CODE_ERROR and not (attributes["a"] != nil)', "span")
        with pytest.raises(ottl.OttlError):
            ottl.check('span.name == "x"', "span")  # the span context has no span path; span events do
        ottl.check('span.name == "x"', "spanevent")

    def test_metrics_are_named_with_suffixes(self, collector: dict[str, Any]) -> None:
        """The Prometheus exporter's strategy is the one tests/test_dashboards.py proves the names of."""
        exporter = collector["exporters"]["prometheus"]
        assert exporter["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
        assert exporter["translation_strategy"] in TRANSLATION_STRATEGIES
        assert "namespace" not in exporter
        assert "add_metric_suffixes" not in exporter

    def test_every_documented_component_is_used(self, configs: dict[str, dict[str, Any]]) -> None:
        """COMPONENTS lists nothing the configurations do not use."""
        used = {
            (kind, component_type(cid))
            for config in configs.values()
            for kind in KINDS
            for cid in config.get(kind) or {}
        }
        assert used == set(COMPONENTS)

    def test_documentation_links_point_at_the_pinned_version(self) -> None:
        """Every component's documentation link names v0.159.0."""
        for _, link, _ in COMPONENTS.values():
            assert f"/blob/v{VERSION}/" in link, link
            assert link.endswith("/README.md"), link


# What each image can run, from its published Dockerfile at the tag compose pins.
IMAGE_BINARIES: dict[str, tuple[set[str], str]] = {
    "postgres": (
        {"sh", "pg_isready", "psql"},
        "https://github.com/docker-library/postgres/blob/master/18/trixie/Dockerfile",
    ),
    "mongo": ({"sh", "mongosh", "mongod"}, "https://github.com/docker-library/mongo/blob/master/8.0/Dockerfile"),
    "redis": (
        {"sh", "redis-cli", "redis-server"},
        "https://github.com/docker-library/redis/blob/master/8.6/debian/Dockerfile",
    ),
    # python:3.11 slim (Debian) with zenmetry and the shop's requirements, celery among them.
    "zenmetry-shop": ({"sh", "python", "celery", "gunicorn", "opentelemetry-instrument"}, "examples/Dockerfile"),
    # FROM quay.io/prometheus/busybox: busybox's sh and wget.
    "prom/prometheus": ({"sh", "wget"}, "https://github.com/prometheus/prometheus/blob/v2.42.0/Dockerfile"),
    "prom/alertmanager": ({"sh", "wget"}, "https://github.com/prometheus/alertmanager/blob/v0.25.0/Dockerfile"),
    # Alpine (busybox's sh and wget) with curl added.
    "grafana/grafana": ({"sh", "wget", "curl"}, "https://github.com/grafana/grafana/blob/v13.2.0/Dockerfile"),
    # Distroless: the binary alone.
    "otel/opentelemetry-collector-contrib": (
        set(),
        "https://github.com/open-telemetry/opentelemetry-collector-releases/blob/v0.159.0/distributions/otelcol-contrib/Dockerfile",
    ),
    "grafana/tempo": (set(), "https://github.com/grafana/tempo/blob/v2.10.7/cmd/tempo/Dockerfile"),
}


def image_of(service: dict[str, Any]) -> str:
    return str(service["image"]).split(":")[0]


def version_of(tool_name: str) -> str:
    """The version the installed promtool or amtool reports (Debian's package: the tests' own)."""
    import shutil
    import subprocess

    path = shutil.which(tool_name)
    assert path is not None, f"{tool_name} is missing: `make tools` installs it"
    output = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version (\d+\.\d+\.\d+)", output.stdout + output.stderr)
    assert found is not None, output
    return found.group(1)


class TestComposeFiles:
    def test_no_health_check_runs_a_binary_its_image_lacks(self, compose: dict[str, Any], tier: dict[str, Any]) -> None:
        """Every health check's command is one its image has (IMAGE_BINARIES, from the images'
        Dockerfiles); a CMD-SHELL needs a shell and one of its alternatives."""
        checked = []
        added = {name: service for name, service in tier["services"].items() if name not in compose["services"]}
        for name, service in {**compose["services"], **added}.items():
            test = (service.get("healthcheck") or {}).get("test")
            if test is None:
                continue
            image = image_of(service if "image" in service else compose["services"][name])
            binaries, _ = IMAGE_BINARIES[image]
            if test[0] == "CMD":
                assert test[1] in binaries, (name, test)
            else:
                assert test[0] == "CMD-SHELL", (name, test)
                assert "sh" in binaries, (name, test)
                alternatives = [part.split()[0] for part in test[1].split("||")]
                assert set(alternatives) & binaries, (name, test)
            checked.append(name)
        assert len(checked) == 10
        assert {
            image_of(s) for s in [*compose["services"].values(), *tier["services"].values()] if "image" in s
        } <= set(IMAGE_BINARIES)

    def test_prometheus_and_alertmanager_are_the_releases_the_tests_run(self, compose: dict[str, Any]) -> None:
        """Compose pins the Prometheus and Alertmanager that promtool and amtool check the rules and
        configuration with here (Debian's packages; newer releases are in no registry this
        machine reaches, so compose runs these)."""
        assert compose["services"]["prometheus"]["image"] == f"prom/prometheus:v{version_of('promtool')}"
        assert compose["services"]["alertmanager"]["image"] == f"prom/alertmanager:v{version_of('amtool')}"

    def test_the_tier_file_validates_and_adds_an_agent_and_two_gateways(
        self, compose: dict[str, Any], tier: dict[str, Any]
    ) -> None:
        """docker-compose.tier.yml is valid Compose on its own; it adds the agent and two gateways,
        points every process of the shop at the agent, and Prometheus at prometheus.tier.yml, which
        scrapes both gateways."""
        schema = json.loads(COMPOSE_SCHEMA.read_text())
        assert list(jsonschema.Draft7Validator(schema).iter_errors(tier)) == []
        added = set(tier["services"]) - set(compose["services"])
        assert added == {"otel-agent", "otel-gateway-1", "otel-gateway-2"}
        for name in ("shop", "worker", "tasks"):
            assert tier["services"][name]["environment"] == {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-agent:4318"}
        mounts = {name: tier["services"][name]["volumes"] for name in sorted(added)}
        assert mounts == {
            "otel-agent": ["./collector-config/agent.yaml:/etc/otelcol-contrib/agent.yaml:ro"],
            "otel-gateway-1": ["./collector-config/gateway.yaml:/etc/otelcol-contrib/gateway.yaml:ro"],
            "otel-gateway-2": ["./collector-config/gateway.yaml:/etc/otelcol-contrib/gateway.yaml:ro"],
        }
        assert tier["services"]["prometheus"]["volumes"] == [
            "./prometheus/prometheus.tier.yml:/etc/prometheus/prometheus.yml:ro"
        ]
        jobs = {
            job["job_name"]: job["static_configs"][0]["targets"]
            for job in load_yaml(PROMETHEUS_TIER_CONFIG)["scrape_configs"]
        }
        assert jobs["applications"] == ["otel-gateway-1:8889", "otel-gateway-2:8889"]
        assert jobs["otel-collector"] == ["otel-agent:8888", "otel-gateway-1:8888", "otel-gateway-2:8888"]
        agent = load_yaml(AGENT_CONFIG)["receivers"]["otlp"]["protocols"]
        assert listen_port(agent["http"]["endpoint"]) == 4318


class TestCompose:
    def test_validates_against_the_compose_specification(self, compose: dict[str, Any]) -> None:
        """docker-compose.yml is valid under the Compose Specification's JSON schema."""
        schema = json.loads(COMPOSE_SCHEMA.read_text())
        errors = [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(compose)]
        assert errors == []

    def test_the_schema_catches_a_misspelt_key(self, compose: dict[str, Any]) -> None:
        """The validation above can fail: an unknown service key is an error."""
        schema = json.loads(COMPOSE_SCHEMA.read_text())
        broken = copy.deepcopy(compose)
        broken["services"]["shop"]["helthcheck"] = {}
        assert [error.message for error in jsonschema.Draft7Validator(schema).iter_errors(broken)] == [
            "'helthcheck' does not match any of the regexes: '^x-'"
        ]

    def test_has_every_service_of_the_stack(self, compose: dict[str, Any]) -> None:
        """Databases, broker, the shop and its workers (Celery, Django tasks), the payment stand-in and the telemetry backends."""
        assert set(compose["services"]) == {
            "postgres",
            "mongo",
            "redis",
            "payments",
            "shop-migrate",
            "shop",
            "worker",
            "tasks",
            "otel-collector",
            "tempo",
            "prometheus",
            "alertmanager",
            "grafana",
        }

    def test_every_mounted_file_exists(self, compose: dict[str, Any]) -> None:
        """Bind mounts, the build context and its Dockerfile are in the repository."""
        checked = []
        for name, service in compose["services"].items():
            for volume in service.get("volumes", []):
                source = volume.split(":", 1)[0]
                if source.startswith((".", "/")):
                    path = (ROOT / source).resolve()
                    assert path.exists(), (name, source)
                    assert path.is_relative_to(ROOT), (name, source)
                    checked.append(source)
            if "build" in service:
                context = ROOT / service["build"]["context"]
                assert (context / service["build"]["dockerfile"]).is_file(), name
        assert len(checked) == 8

    def test_images_are_pinned_to_exact_versions(self, compose: dict[str, Any]) -> None:
        """Every image names an exact release (PostgreSQL's are major.minor); the collector is the manifest's."""
        images = {name: service["image"] for name, service in compose["services"].items() if "build" not in service}
        for name, image in images.items():
            exact = r"\d+\.\d+" if name == "postgres" else r"v?\d+\.\d+\.\d+"
            assert re.fullmatch(r"[a-z0-9./-]+:" + exact, image), (name, image)
        assert images["otel-collector"] == f"otel/opentelemetry-collector-contrib:{VERSION}"
        dockerfile = (ROOT / "examples" / "Dockerfile").read_text()
        assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.MULTILINE)

    def test_published_ports_are_bound_to_localhost(self, compose: dict[str, Any]) -> None:
        """Every published port listens on 127.0.0.1 only."""
        published = [(name, port) for name, service in compose["services"].items() for port in service.get("ports", [])]
        assert {name for name, _ in published} == {
            "shop",
            "otel-collector",
            "tempo",
            "prometheus",
            "alertmanager",
            "grafana",
        }
        for name, port in published:
            assert isinstance(port, str), (name, port)
            assert port.startswith("127.0.0.1:"), (name, port)

    def test_services_have_health_checks(self, compose: dict[str, Any]) -> None:
        """Every long-running service has one, but the collector and Tempo, whose images have no
        shell and no client to ask with (Tempo 2.10's image is distroless without busybox: its
        CHANGELOG, "Remove busybox from Tempo image"); Prometheus scrapes Tempo instead, and
        nothing waits for either to be healthy."""
        without = {name for name, service in compose["services"].items() if "healthcheck" not in service}
        assert without == {"otel-collector", "shop-migrate", "tempo"}
        waited_on = {
            dependency
            for service in compose["services"].values()
            for dependency, condition in (service.get("depends_on") or {}).items()
            if isinstance(condition, dict) and condition.get("condition") == "service_healthy"
        }
        assert waited_on.isdisjoint({"otel-collector", "tempo"})
        scraped = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
        assert "tempo" in scraped
        assert compose["services"]["shop-migrate"]["restart"] == "no"

    def test_data_lives_in_named_volumes(self, compose: dict[str, Any]) -> None:
        """Each stateful service keeps its data in a declared named volume, and each volume is used."""
        named = {
            name: volume.split(":")[0]
            for name, service in compose["services"].items()
            for volume in service.get("volumes", [])
            if not volume.startswith((".", "/"))
        }
        assert named == {
            "postgres": "postgres-data",
            "mongo": "mongo-data",
            "redis": "redis-data",
            "tempo": "tempo-data",
            "prometheus": "prometheus-data",
            "alertmanager": "alertmanager-data",
            "grafana": "grafana-data",
        }
        assert set(compose["volumes"]) == set(named.values())

    def test_no_default_passwords(self, compose: dict[str, Any]) -> None:
        """Passwords come from .env and compose refuses to start without them; .env.example leaves them empty."""
        text = COMPOSE.read_text()
        variables = set(re.findall(r"\$\{([A-Z_]+)", text))
        for variable in {v for v in variables if "PASSWORD" in v}:
            uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
            assert uses, variable
            assert all(use.startswith(":?") for use in uses), variable
        example = dict(
            line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
        )
        assert set(example) == variables
        assert {key: value for key, value in example.items() if "PASSWORD" in key} == {
            "GRAFANA_ADMIN_PASSWORD": "",
            "POSTGRES_PASSWORD": "",
            "MONGO_PASSWORD": "",
        }
        grafana = compose["services"]["grafana"]["environment"]
        assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
        assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
        assert ".env" in (ROOT / ".gitignore").read_text().splitlines()

    def test_shop_and_workers_run_under_the_launcher(self, compose: dict[str, Any]) -> None:
        """gunicorn, the Celery worker and the Django tasks' db_worker start through
        opentelemetry-instrument, each its own service."""
        shop, worker, tasks = (compose["services"][name] for name in ("shop", "worker", "tasks"))
        assert shop["command"][:3] == ["opentelemetry-instrument", "gunicorn", "shop.wsgi"]
        assert worker["command"][:4] == ["opentelemetry-instrument", "celery", "--app=shop", "worker"]
        assert tasks["command"][:4] == ["opentelemetry-instrument", "python", "manage.py", "db_worker"]
        assert [service["environment"]["OTEL_SERVICE_NAME"] for service in (shop, worker, tasks)] == [
            "shop-web",
            "shop-worker",
            "shop-tasks",
        ]
        for service in (shop, worker, tasks):
            env = service["environment"]
            assert {"DATABASE_URL", "MONGO_URL", "CELERY_BROKER_URL", "PAYMENTS_URL", "ZENMETRY_BUDGETS"} <= set(env)
            assert env["ZENMETRY_BUDGETS"] == "/app/examples/shop/zenmetry.toml"


class TestAddresses:
    """Each address one service uses to reach another names a compose service and a port it listens on."""

    def test_the_shop_exports_to_the_collectors_otlp_http_receiver(
        self, compose: dict[str, Any], collector: dict[str, Any]
    ) -> None:
        """OTEL_EXPORTER_OTLP_ENDPOINT is the collector's OTLP/HTTP endpoint."""
        host, port = host_port(compose["services"]["shop"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert host in compose["services"]
        assert port == listen_port(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]) == 4318

    def test_the_collector_sends_traces_to_tempos_otlp_receiver(
        self, compose: dict[str, Any], collector: dict[str, Any]
    ) -> None:
        """The otlp_grpc exporter reaches Tempo's distributor."""
        host, port = host_port(collector["exporters"]["otlp_grpc/tempo"]["endpoint"])
        tempo = load_yaml(TEMPO_CONFIG)
        assert host == "tempo"
        assert host in compose["services"]
        assert port == listen_port(tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])

    def test_prometheus_scrapes_the_collector_and_alerts_alertmanager(
        self, compose: dict[str, Any], collector: dict[str, Any]
    ) -> None:
        """Scrape targets and the Alertmanager target are services on the ports they serve."""
        config = load_yaml(PROMETHEUS_CONFIG)
        targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in config["scrape_configs"]}
        applications = host_port(targets["applications"])
        assert applications == ("otel-collector", listen_port(collector["exporters"]["prometheus"]["endpoint"]))
        own = collector["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]
        assert host_port(targets["otel-collector"]) == ("otel-collector", own["port"])
        assert (
            next(job for job in config["scrape_configs"] if job["job_name"] == "applications")["honor_labels"] is True
        )
        (alertmanager,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
        assert host_port(alertmanager) == ("alertmanager", 9093)
        for host, _ in map(host_port, targets.values()):
            assert host in compose["services"] or host == "localhost"

    def test_grafana_reaches_its_data_sources(self, compose: dict[str, Any]) -> None:
        """Prometheus, Tempo and Alertmanager, by the uids the dashboards use."""
        sources = {source["uid"]: source for source in load_yaml(DATASOURCES)["datasources"]}
        assert {uid: (s["type"], host_port(s["url"])) for uid, s in sources.items()} == {
            "prometheus": ("prometheus", ("prometheus", 9090)),
            "tempo": ("tempo", ("tempo", 3200)),
            "alertmanager": ("alertmanager", ("alertmanager", 9093)),
        }
        assert load_yaml(TEMPO_CONFIG)["server"]["http_listen_port"] == 3200

    def test_grafana_loads_the_dashboards_from_where_compose_mounts_them(self, compose: dict[str, Any]) -> None:
        """The provider's path is the mount target of grafana-dashboards/dashboards."""
        (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
        mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
        assert mounts["./grafana-dashboards/dashboards"] == provider["options"]["path"]
        home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert Path(home).parent == Path(provider["options"]["path"])
        assert (ROOT / "grafana-dashboards" / "dashboards" / Path(home).name).is_file()

    def test_alertmanager_groups_by_labels_the_alerts_carry(self) -> None:
        """The route groups by the labels zenmetry's alerts keep."""
        route = load_yaml(ALERTMANAGER_CONFIG)["route"]
        assert route["group_by"] == ["alertname", "job", "zen_unit_kind", "zen_unit_name"]

    def test_the_collector_reads_the_sample_share_from_the_environment(self, compose: dict[str, Any]) -> None:
        """ZEN_TRACES_SAMPLE_PERCENT reaches the collector, with the same default as its configuration."""
        env = compose["services"]["otel-collector"]["environment"]
        assert env["ZEN_TRACES_SAMPLE_PERCENT"] == "${ZEN_TRACES_SAMPLE_PERCENT:-10}"
        mounts = compose["services"]["otel-collector"]["volumes"]
        assert mounts == ["./collector-config/config.yaml:/etc/otelcol-contrib/config.yaml:ro"]
        assert compose["services"]["otel-collector"]["command"] == ["--config=/etc/otelcol-contrib/config.yaml"]
