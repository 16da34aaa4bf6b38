"""docker-compose.yml's observability profile, checked as compose would wire it (no Docker engine
runs here): Prometheus and Grafana are in the profile only, mount deploy/'s folders where their
configuration expects them, and Prometheus's scrape targets are the compose services and ports
that serve metrics, with the token the processes accept."""

import re
from pathlib import Path

import yaml

from kernel import telemetry

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
SERVICES = COMPOSE["services"]
OBSERVABILITY = {"prometheus", "grafana", "jaeger"}
TRACED_SERVICES = ["api", "ws", "worker"]
# What docs/operations.md tells an operator to put in .env, with the profile up.
JAEGER_ENDPOINT = "http://jaeger:4318"
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolated(value: str, dotenv: dict[str, str]) -> str:
    """A compose value as compose fills it in from `.env` (`${NAME}`, `${NAME:-default}`)."""
    return _VARIABLE.sub(lambda m: dotenv.get(m.group(1)) or m.group(2) or "", value)


def mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts from the repository."""
    found = {}
    for volume in SERVICES[service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source
    return found


def test_prometheus_grafana_and_jaeger_run_in_the_observability_profile_only():
    for name in OBSERVABILITY:
        assert SERVICES[name]["profiles"] == ["observability"], name
    others = [name for name in SERVICES if name not in OBSERVABILITY]
    assert all("profiles" not in SERVICES[name] for name in others)


def test_their_configuration_is_mounted_where_they_read_it():
    prometheus = mounts("prometheus")
    assert prometheus == {"/etc/prometheus": "./deploy/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in SERVICES["prometheus"]["command"]
    for rule_file in PROMETHEUS["rule_files"]:
        assert (ROOT / "deploy" / "prometheus" / rule_file).is_file(), rule_file

    grafana = mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/tenantapi.yml").read_text()
    )["providers"][0]
    dashboards = grafana[provider["options"]["path"]]
    assert list((ROOT / dashboards).glob("*.json"))
    for host_path in {**prometheus, **grafana}.values():
        assert (ROOT / host_path).is_dir(), host_path


def test_prometheus_scrapes_the_services_that_serve_metrics_with_the_token():
    targets = {
        job["job_name"]: target
        for job in PROMETHEUS["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    app_environment = COMPOSE["x-app"]["environment"]
    assert app_environment["METRICS_TOKEN"] == "${METRICS_TOKEN:-}"
    for job, service, port in [
        ("tenantapi-api", "api", "8000"),
        ("tenantapi-ws", "ws", "8001"),
        ("tenantapi-worker", "worker", "9808"),
    ]:
        assert targets[job] == f"{service}:{port}"
        command = " ".join(SERVICES[service]["command"])
        environment = SERVICES[service].get("environment", {})
        assert port in command or environment.get("WORKER_METRICS_PORT") == port, service
        (job_config,) = [j for j in PROMETHEUS["scrape_configs"] if j["job_name"] == job]
        secret = "metrics_token"
        assert job_config["authorization"]["credentials_file"] == f"/run/secrets/{secret}"
    assert SERVICES["prometheus"]["secrets"] == ["metrics_token"]
    assert COMPOSE["secrets"]["metrics_token"] == {"environment": "METRICS_TOKEN"}


def test_grafana_s_datasource_is_the_prometheus_service_the_dashboards_name():
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    (datasource,) = datasources
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"] == "prometheus"
    assert "9090:9090" in SERVICES["prometheus"]["ports"][0]


# --- Traces -------------------------------------------------------------------------------------


def test_without_the_endpoint_in_env_the_app_exports_no_traces():
    """Out of the box (nothing about tracing in .env), the processes that trace see an empty
    endpoint, which is tracing off: nothing depends on the profile's Jaeger being up."""
    for service in TRACED_SERVICES:
        environment = {
            name: interpolated(str(value), {})
            for name, value in SERVICES[service]["environment"].items()
        }
        otel = {name: value for name, value in environment.items() if name.startswith("OTEL_")}
        assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == "", service
        assert not telemetry.configured(otel), service


def test_with_the_endpoint_in_env_the_app_sends_its_spans_to_jaeger_over_otlp_http():
    dotenv = {"OTEL_EXPORTER_OTLP_ENDPOINT": JAEGER_ENDPOINT}
    for service in TRACED_SERVICES:
        environment = {
            name: interpolated(str(value), dotenv)
            for name, value in SERVICES[service]["environment"].items()
        }
        otel = {name: value for name, value in environment.items() if name.startswith("OTEL_")}
        assert telemetry.configured(otel), service
        assert otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == JAEGER_ENDPOINT
        assert otel["OTEL_EXPORTER_OTLP_PROTOCOL"] == telemetry.SUPPORTED_PROTOCOL
        assert 0 < float(otel["OTEL_TRACES_SAMPLER_ARG"]) <= 1
        # Each process names its own service (kernel/telemetry.py), so none is set here.
        assert "OTEL_SERVICE_NAME" not in otel

    # The endpoint is the jaeger service, on the port where it takes OTLP over HTTP
    jaeger = SERVICES["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "4318" in jaeger["expose"]
    # Its UI on loopback only, as Prometheus's and Grafana's
    assert jaeger["ports"] == ["127.0.0.1:16686:16686"]


def test_the_operations_guide_says_how_to_switch_traces_on():
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT={JAEGER_ENDPOINT}" in guide
    assert "http://localhost:16686" in guide
