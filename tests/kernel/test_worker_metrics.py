"""A Celery worker's metrics: every task counted and timed in the pool's processes, and the sum
served by the worker itself on WORKER_METRICS_PORT, under the same rule as /metrics."""

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from config.celery import app as celery_app
from kernel.metrics import guarded_exporter
from kernel.tasks import outbox_relay_task
from tests.celery_tasks import fail_task, log_context_task
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.fixtures.servers import LOOPBACK, free_port
from tests.helpers import sent_through_the_broker

TASKS = "tenantapi_celery_tasks_total"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly these labels, from the exposition text."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.django_db(transaction=True)  # the worker reads the test database
def test_a_worker_serves_what_its_pool_processes_measured(tmp_path):
    # Given a prefork worker of two processes, serving its metrics on a port of its own
    queue = f"tests-metrics-{uuid.uuid4().hex[:12]}"
    port = free_port()
    environment = {
        **worker_environment(),
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "WORKER_METRICS_PORT": str(port),
        "WORKER_METRICS_ADDRESS": LOOPBACK,
    }
    worker = CeleryWorker(queue=queue, env=environment, pool="prefork", concurrency=2)
    worker.start()
    url = f"http://{LOOPBACK}:{port}/metrics"
    try:
        # When it runs tasks that succeed, one that fails, and the outbox relay
        with sent_through_the_broker():
            for n in range(6):
                celery_app.send_task(log_context_task.name, args=[f"metrics-{n}"], queue=queue)
            celery_app.send_task(fail_task.name, queue=queue)
            celery_app.send_task(outbox_relay_task.name, queue=queue)

        expected = [
            ((log_context_task.name, "success"), 6),
            ((fail_task.name, "failure"), 1),
            ((outbox_relay_task.name, "success"), 1),
        ]
        deadline = time.monotonic() + 30
        while True:  # the two pool processes finish in any order
            text = httpx.get(url, timeout=5).text
            counted = [
                sample(text, TASKS, task=task, outcome=outcome) == n
                for (task, outcome), n in expected
            ]
            if all(counted):
                break
            assert time.monotonic() < deadline, f"the worker did not count its tasks:\n{text}"
            time.sleep(0.1)
    finally:
        worker.stop()

    # Then a scrape of the worker has them all, whichever pool process ran each, timed too
    timed = sample(text, "tenantapi_celery_task_duration_seconds_count", task=log_context_task.name)
    assert timed == 6
    # ... and the outbox's gauges, which only the worker's relay sets
    assert sample(text, "tenantapi_outbox_pending") == 0
    assert sample(text, "tenantapi_outbox_stuck") == 0


def test_a_worker_metrics_port_without_a_multiprocess_directory_stops_start_up():
    environment = {**worker_environment(), "WORKER_METRICS_PORT": str(free_port())}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    queue = f"tests-metrics-{uuid.uuid4().hex[:12]}"
    finished = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", queue],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR" in finished.stdout + finished.stderr


@pytest.mark.parametrize(
    ("address", "authorization", "status"),
    [
        ("127.0.0.1", "", 200),
        ("10.1.2.3", "", 200),  # in METRICS_ALLOWED_IPS
        ("203.0.113.9", "Bearer worker-scrape-token", 200),
        ("203.0.113.9", "", 403),
        ("203.0.113.9", "Bearer a-wrong-token", 403),
        ("", "", 403),
    ],
)
def test_the_worker_admits_whom_the_apis_metrics_admit(settings, address, authorization, status):
    # The WSGI app the worker serves, called as its server calls it, with the peer's address.
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    settings.METRICS_TOKEN = "worker-scrape-token"
    registry = CollectorRegistry()
    Counter("tenantapi_probe_total", "A sample to export.", registry=registry).inc()
    started = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/metrics",
        "QUERY_STRING": "",
        "REMOTE_ADDR": address,
        "HTTP_AUTHORIZATION": authorization,
    }

    body = b"".join(guarded_exporter(registry)(environ, lambda s, h: started.append((s, h))))

    (status_line, headers) = started[0]
    assert int(status_line.split()[0]) == status
    if status == 200:
        assert b"tenantapi_probe_total 1.0" in body
    else:
        assert dict(headers)["Content-Type"] == "application/problem+json"
        problem = json.loads(body)
        assert problem["type"].endswith("/permission-denied")
        assert problem["status"] == 403
        assert b"tenantapi_probe_total" not in body
