"""A real Prometheus (Debian's binary) scrapes a live API process with the deployment's scrape
job and rules, and a recording rule answers through Prometheus's HTTP API: the rules' names and
labels are the ones the application really exports."""

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from kernel.tenancy.models import Plan
from tests.factories import DEFAULT_PASSWORD, make_tenant
from tests.fixtures.servers import LOOPBACK, START_TIMEOUT, free_port, stop_process, wait_until
from tests.helpers import TOKEN, outcome, owner_of

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
API_JOB = "tenantapi-api"
# How long the rule may take to have a value: two scrapes a second apart, then an evaluation.
RULE_DEADLINE_SECONDS = 15.0

pytestmark = pytest.mark.django_db(transaction=True)  # the live server reads the tenant


def sign_in_over_http(server_url: str, user, tenant) -> str:
    response = httpx.post(
        f"{server_url}{TOKEN}",
        json={"email": user.email, "password": DEFAULT_PASSWORD, "tenant": tenant.slug},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["access"]


def prometheus_config(target: str, directory: Path) -> Path:
    """deploy/prometheus/prometheus.yml with its API job pointed at `target`, scraped and
    evaluated every second. Without the token: the target is on loopback, which /metrics admits."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == API_JOB]
    job.pop("authorization")
    job["static_configs"] = [{"targets": [target]}]
    config["scrape_configs"] = [job]
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(PROMETHEUS / path) for path in config["rule_files"]]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_prometheus(config: Path, directory: Path) -> tuple[subprocess.Popen, str]:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is missing: install Debian's prometheus package (scripts/test)")
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(ready, process, START_TIMEOUT):
        stop_process(process)
        pytest.fail(f"prometheus did not start:\n{(directory / 'prometheus.log').read_text()}")
    return process, url


def query(prometheus_url: str, promql: str) -> list[dict]:
    response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


def test_prometheus_scrapes_the_api_and_records_red_by_plan_and_route(
    live_wsgi_server_factory, tmp_path
):
    # Given the API as deployed (gunicorn, multiprocess metrics), a tenant on a plan of its own,
    # and Prometheus scraping the API with the deployment's job and rules
    with outcome():
        plan = Plan.objects.create(code=f"obs-{uuid.uuid4().hex[:10]}", name="Observed")
    tenant = make_tenant(plan_code=plan.code)
    server = live_wsgi_server_factory(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "multiproc"))
    token = sign_in_over_http(server.url, owner_of(tenant), tenant)
    process, prometheus = start_prometheus(
        prometheus_config(f"{LOOPBACK}:{server.port}", tmp_path), tmp_path
    )
    by_plan = f'plan:tenantapi_requests:rate5m{{plan="{plan.code}"}}'
    by_route = 'view_method:tenantapi_http_requests:rate5m{view="tenant",method="GET"}'
    try:
        # When the tenant keeps calling the API while Prometheus scrapes
        found: dict[str, list[dict]] = {by_plan: [], by_route: []}
        deadline = time.monotonic() + RULE_DEADLINE_SECONDS
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
            while time.monotonic() < deadline and not all(found.values()):
                response = http.get("/api/v1/tenant/")
                assert response.status_code == 200, response.text
                for promql in found:
                    answer = query(prometheus, promql)
                    found[promql] = [r for r in answer if float(r["value"][1]) > 0]
                time.sleep(0.2)
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
    finally:
        stop_process(process)

    # Then the recording rules have a rate for the tenant's plan and for the route it called
    assert found[by_plan], f"no {by_plan}; targets: {targets['activeTargets']}"
    assert found[by_route], f"no {by_route}; targets: {targets['activeTargets']}"
    (target,) = targets["activeTargets"]
    assert (target["labels"]["job"], target["health"]) == (API_JOB, "up")
