"""What /metrics adds to django-prometheus for operators: API requests by tenant plan, the
dependencies' readiness, and the broker's queues (depth and oldest message's age), read from the
real Redis broker with no worker consuming."""

import re
import time
import uuid

import httpx
import pytest
import redis
from django.conf import settings as django_settings
from django.http import HttpRequest

from config.celery import app as celery_app
from kernel import metrics
from kernel.principals import Principal
from kernel.tenancy.models import Plan, Tenant
from tests.factories import make_tenant
from tests.helpers import outcome, owner_of, sent_through_the_broker, sign_in

TASK = "tests.never_consumed"


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of `name` with exactly these labels (in any order), or None."""
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if found == labels:
            return float(match.group(2))
    return None


# --- requests by plan ----------------------------------------------------------------------------


def new_plan(**limits: int) -> Plan:
    with outcome():
        return Plan.objects.create(code=f"metrics-{uuid.uuid4().hex[:10]}", name="M", **limits)


@pytest.mark.django_db
def test_api_requests_are_counted_and_timed_by_their_tenants_plan(client, api_client):
    # Given a member of a tenant on a plan of its own, whose burst is soon spent
    plan = new_plan(burst=2, requests_per_minute=1)
    tenant = make_tenant(plan_code=plan.code)
    sign_in(api_client, owner_of(tenant), tenant)  # takes no token from the tenant's bucket

    # When the member makes three requests, the last ones past the burst
    statuses = [api_client.get("/api/v1/tenant/").status_code for _ in range(3)]

    # Then each is counted under the plan with the status that left, and timed
    assert statuses[0] == 200
    assert statuses[-1] == 429
    text = scrape(client)
    name = "tenantapi_tenant_requests_total"
    assert sample(text, name, plan=plan.code, status="200") == statuses.count(200)
    assert sample(text, name, plan=plan.code, status="429") == statuses.count(429)
    count = "tenantapi_tenant_request_duration_seconds_count"
    assert sample(text, count, plan=plan.code) == 3


@pytest.mark.django_db
def test_requests_without_a_tenant_credential_are_anonymous_and_probes_are_not_counted(client):
    name = "tenantapi_tenant_requests_total"
    before = scrape(client)
    refused_before = sample(before, name, plan="anonymous", status="401") or 0

    client.get("/api/v1/tenant/")
    client.get("/healthz")

    after = scrape(client)
    assert sample(after, name, plan="anonymous", status="401") == refused_before + 1
    assert "healthz" not in "".join(
        line for line in after.splitlines() if line.startswith("tenantapi_tenant_")
    )


def test_plan_labels_are_bounded_per_process(monkeypatch):
    def request_on_plan(code: str) -> HttpRequest:
        # What DRF leaves on Django's request: the principal, its tenant's plan loaded.
        request = HttpRequest()
        request.auth = Principal(tenant=Tenant(plan=Plan(code=code)), permissions=frozenset())
        return request

    monkeypatch.setattr(metrics, "_plans_seen", set())
    codes = [f"plan-{n}" for n in range(metrics.MAX_PLAN_LABELS + 5)]
    labels = [metrics.plan_label(request_on_plan(code)) for code in codes]

    assert labels[: metrics.MAX_PLAN_LABELS] == codes[: metrics.MAX_PLAN_LABELS]
    assert set(labels[metrics.MAX_PLAN_LABELS :]) == {"other"}
    assert metrics.plan_label(request_on_plan("plan-0")) == "plan-0"  # seen before: kept
    assert metrics.plan_label(HttpRequest()) == "anonymous"


# --- dependencies --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_each_dependency_s_readiness_is_a_gauge(client):
    text = scrape(client)

    for dependency in ("database", "cache", "broker", "channel_layer"):
        assert sample(text, "tenantapi_dependency_up", dependency=dependency) == 1, dependency


@pytest.mark.django_db
def test_a_scrape_may_ask_for_some_metrics_by_name(client):
    response = client.get("/metrics", {"name[]": ["tenantapi_dependency_up"]})

    names = {
        line.split("{")[0] for line in response.content.decode().splitlines() if line[0] != "#"
    }
    assert names == {"tenantapi_dependency_up"}


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_stops_shows_as_down_while_the_database_stays_up(
    live_asgi_server_factory, throwaway_redis
):
    server = live_asgi_server_factory(REDIS_URL=throwaway_redis.url(0))
    throwaway_redis.stop()

    text = httpx.get(f"{server.url}/metrics", timeout=30).text

    assert sample(text, "tenantapi_dependency_up", dependency="cache") == 0
    assert sample(text, "tenantapi_dependency_up", dependency="channel_layer") == 0
    assert sample(text, "tenantapi_dependency_up", dependency="database") == 1


# --- broker queues -------------------------------------------------------------------------------


@pytest.fixture
def queue(settings):
    """A queue of this test's own on the real broker, which no worker consumes; /metrics
    measures it. Its Redis lists are deleted afterwards."""
    name = f"tests-queue-{uuid.uuid4().hex[:12]}"
    settings.METRICS_QUEUES = [name]
    yield name
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    keys = list(client.scan_iter(match=f"*{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_broker_queue_depth_and_oldest_age_are_on_metrics(client, queue):
    depth, age = (
        "tenantapi_celery_queue_length",
        "tenantapi_celery_queue_oldest_message_age_seconds",
    )
    assert celery_app.conf.broker_url.startswith("redis://")
    empty = scrape(client)
    assert sample(empty, depth, queue=queue) == 0
    assert sample(empty, age, queue=queue) == 0

    # When tasks are sent, one of them with a priority (kombu keeps it in another list), and no
    # worker takes them
    sent_from = time.time()
    with sent_through_the_broker():
        for _ in range(4):
            celery_app.send_task(TASK, queue=queue)
        celery_app.send_task(TASK, queue=queue, priority=9)
    sent_until = time.time()
    scraped_from = time.time()
    text = scrape(client)
    scraped_until = time.time()

    # Then /metrics counts every waiting message, and the oldest one's age is the time since the
    # first was sent, as far as the clock can tell
    assert sample(text, depth, queue=queue) == 5
    oldest = sample(text, age, queue=queue)
    assert scraped_from - sent_until <= oldest <= scraped_until - sent_from
    # and the age grows while nothing consumes the queue
    later = sample(scrape(client), age, queue=queue)
    assert later >= oldest
