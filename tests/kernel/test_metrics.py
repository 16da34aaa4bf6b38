"""/metrics: django-prometheus's exporter, readable from loopback, allowed networks or a token."""

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings
from prometheus_client import REGISTRY

from tests.fixtures.servers import LOOPBACK, START_TIMEOUT, free_port, stop_process, wait_until

REQUESTS_BY_VIEW = "tenantapi_django_http_requests_total_by_view_transport_method_total"
CACHE_HITS = "tenantapi_django_cache_get_hits_total"
CACHE_MISSES = "tenantapi_django_cache_get_misses_total"


def assert_forbidden_problem(response) -> None:
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/permission-denied")
    assert problem["status"] == 403
    assert problem["instance"] == "/metrics"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_reads_request_metrics(client, address):
    client.get("/healthz")

    response = client.get("/metrics", REMOTE_ADDR=address)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "no-store" in response["Cache-Control"]
    text = response.content.decode()
    assert "django_http_requests_latency_seconds_by_view_method" in text
    assert 'view="healthz"' in text
    assert "django_http_responses_total_by_status" in text


def counter_total(name: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == name
    )


def test_the_instrumented_cache_counts_hits_and_misses(client):
    # django-prometheus' cache backends count them: no metric of our own is needed.
    hits, misses = CACHE_HITS, CACHE_MISSES
    key = f"metrics-test:{uuid.uuid4().hex}"
    cache.get(key)  # the backend exists, and so do its counters, from its first use
    hits_before, misses_before = counter_total(hits), counter_total(misses)

    cache.get(key)
    cache.set(key, "value")
    cache.get(key)

    assert counter_total(misses) == misses_before + 1
    assert counter_total(hits) == hits_before + 1
    text = client.get("/metrics").content.decode()
    assert hits in text
    assert misses in text
    cache.delete(key)


def test_other_addresses_get_a_forbidden_problem(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")

    assert_forbidden_problem(response)
    assert b"django_http" not in response.content


@pytest.mark.parametrize(
    ("allowed", "address", "status"),
    [
        (["203.0.113.7"], "203.0.113.7", 200),
        (["10.20.0.0/16"], "10.20.3.4", 200),
        (["10.20.0.0/16"], "10.21.3.4", 403),
        (["2001:db8::/32"], "2001:db8::5", 200),
    ],
)
def test_allowed_addresses_and_networks(client, allowed, address, status):
    with override_settings(METRICS_ALLOWED_IPS=allowed):
        response = client.get("/metrics", REMOTE_ADDR=address)

    assert response.status_code == status


@pytest.mark.parametrize(
    ("configured", "header", "status"),
    [
        ("metrics-token-5d1e", "Bearer metrics-token-5d1e", 200),
        ("metrics-token-5d1e", "bearer metrics-token-5d1e", 200),
        ("metrics-token-5d1e", "Bearer metrics-token-5d1f", 403),
        ("metrics-token-5d1e", "Bearer ", 403),
        ("metrics-token-5d1e", "Basic metrics-token-5d1e", 403),
        # No token configured: an empty bearer must not match the empty setting.
        ("", "Bearer ", 403),
    ],
)
def test_bearer_token(client, configured, header, status):
    with override_settings(METRICS_TOKEN=configured):
        response = client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION=header)

    assert response.status_code == status
    if status == 403:
        assert_forbidden_problem(response)


# --- Multiprocess mode under gunicorn -------------------------------------------------------------


def run_gunicorn(multiproc_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
    }
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--config", "python:kernel.metrics",
        "--bind", f"{LOOPBACK}:{port}",
        "--workers", "2",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=environment, stdout=log, stderr=log
        )
    url = f"http://{LOOPBACK}:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/metrics", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_until(answers, process, START_TIMEOUT):
        stop_process(process)
        pytest.fail(f"gunicorn did not start:\n{log_path.read_text()[-3000:]}")
    return process, url


def healthz_count(metrics_text: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(REQUESTS_BY_VIEW + "{") and 'view="healthz"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def serve_and_count(multiproc_dir: Path, log_path: Path, requests: int) -> float:
    process, url = run_gunicorn(multiproc_dir, log_path)
    try:
        # Concurrent requests, so that both workers serve some of them.
        with httpx.Client(base_url=url, timeout=10.0) as http, ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: http.get("/healthz").status_code, range(requests)))
            assert statuses == [200] * requests
            return healthz_count(http.get("/metrics").text)
    finally:
        stop_process(process)


def test_multiprocess_mode_sums_every_gunicorn_worker(tmp_path):
    multiproc_dir = tmp_path / "prometheus"
    log_path = tmp_path / "gunicorn.log"

    # One scrape reaches one worker, yet it counts the requests that every worker served.
    assert serve_and_count(multiproc_dir, log_path, requests=40) == 40
    # A restart starts from zero: the hook drops the previous run's files.
    assert serve_and_count(multiproc_dir, log_path, requests=12) == 12
