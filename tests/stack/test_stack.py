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

from support.stack import (
    ALERTMANAGER_CONFIG,
    COLLECTOR_CONFIG,
    COMPOSE,
    COMPOSE_SCHEMA,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    ENV_EXAMPLE,
    MANIFEST,
    PROMETHEUS_CONFIG,
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
        {
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


class TestCollectorConfig:
    def test_every_component_is_built_into_the_pinned_distribution(self, collector: dict[str, Any]) -> None:
        """Each component the configuration defines is in otelcol-contrib 0.159.0's manifest."""
        modules = manifest_modules()
        defined = {(kind, component_type(cid)) for kind in modules for cid in collector.get(kind) or {}}
        assert defined == set(COMPONENTS)
        for kind, ctype in defined:
            module, _, _ = COMPONENTS[(kind, ctype)]
            assert modules[kind].get(module) == f"v{VERSION}", (kind, ctype)

    def test_every_setting_is_one_the_component_documents(self, collector: dict[str, Any]) -> None:
        """No key outside each component's documented settings (see COMPONENTS for the links)."""
        for (kind, ctype), (_, _, allowed) in COMPONENTS.items():
            for cid, settings in collector[kind].items():
                if component_type(cid) == ctype:
                    assert unknown_keys(settings or {}, allowed) == [], cid
        assert unknown_keys(collector["service"], SERVICE) == []
        assert set(collector) == {"extensions", "receivers", "processors", "exporters", "service"}

    def test_an_undocumented_setting_is_caught(self, collector: dict[str, Any]) -> None:
        """The check above fails on a misspelt key, nested or not."""
        broken = copy.deepcopy(collector)
        broken["processors"]["tail_sampling"]["policies"][0]["ottl_condition"]["spanevents"] = []
        broken["processors"]["batch"]["send_batch"] = 1
        _, _, tail = COMPONENTS[("processors", "tail_sampling")]
        _, _, batch = COMPONENTS[("processors", "batch")]
        assert unknown_keys(broken["processors"]["tail_sampling"], tail) == ["policies[0].ottl_condition.spanevents"]
        assert unknown_keys(broken["processors"]["batch"], batch) == ["send_batch"]

    def test_pipelines_use_defined_components_and_every_component_is_used(self, collector: dict[str, Any]) -> None:
        """Each pipeline names defined receivers, processors and exporters; nothing is defined for nothing."""
        pipelines = collector["service"]["pipelines"]
        assert set(pipelines) == {"traces", "metrics"}
        used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
        for pipeline in pipelines.values():
            assert set(pipeline) == {"receivers", "processors", "exporters"}
            for kind, ids in pipeline.items():
                assert set(ids) <= set(collector[kind]), (kind, ids)
                used[kind].update(ids)
        for kind, ids in used.items():
            assert ids == set(collector[kind]), kind
        assert set(collector["service"]["extensions"]) == set(collector["extensions"])

    def test_processors_run_in_the_documented_order(self, collector: dict[str, Any]) -> None:
        """memory_limiter first, batch last, tail sampling before batching; metrics are never sampled."""
        pipelines = collector["service"]["pipelines"]
        assert pipelines["traces"]["processors"] == ["memory_limiter", "tail_sampling", "batch"]
        assert pipelines["metrics"]["processors"] == ["memory_limiter", "batch"]
        assert pipelines["traces"]["exporters"] == ["otlp_grpc/tempo"]
        assert pipelines["metrics"]["exporters"] == ["prometheus"]

    def test_tail_sampling_keeps_breaches_errors_and_a_share(self, collector: dict[str, Any]) -> None:
        """Policies select the zen.budget.breach event and ERROR status, plus ZEN_TRACES_SAMPLE_PERCENT percent."""
        policies = {policy["name"]: policy for policy in collector["processors"]["tail_sampling"]["policies"]}
        assert {policy["type"] for policy in policies.values()} <= POLICY_TYPES
        assert policies["budget-breaches"] == {
            "name": "budget-breaches",
            "type": "ottl_condition",
            "ottl_condition": {"error_mode": "ignore", "spanevent": ['name == "zen.budget.breach"']},
        }
        assert policies["errors"] == {
            "name": "errors",
            "type": "status_code",
            "status_code": {"status_codes": ["ERROR"]},
        }
        share = policies["share-of-the-rest"]
        assert share["type"] == "probabilistic"
        assert share["probabilistic"] == {"sampling_percentage": "${env:ZEN_TRACES_SAMPLE_PERCENT:-10}"}
        assert len(policies) == 3

    def test_metrics_are_named_with_suffixes(self, collector: dict[str, Any]) -> None:
        """The Prometheus exporter's strategy is the one tests/test_dashboards.py proves the names of."""
        exporter = collector["exporters"]["prometheus"]
        assert exporter["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
        assert exporter["translation_strategy"] in TRANSLATION_STRATEGIES
        assert "namespace" not in exporter
        assert "add_metric_suffixes" not in exporter

    def test_documentation_links_point_at_the_pinned_version(self) -> None:
        """Every component's documentation link names v0.159.0."""
        for _, link, _ in COMPONENTS.values():
            assert f"/blob/v{VERSION}/" in link, link
            assert link.endswith("/README.md"), link


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
