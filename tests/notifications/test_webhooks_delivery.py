"""Webhook deliveries against a real HTTP receiver on 127.0.0.1: signatures that the documented
receiver snippet verifies, fan-out to the right endpoints only, retries with backoff, the circuit
breaker, dead letters and redelivery, redirects, the SSRF check at delivery time, and a delivery
that survives a worker killed in the middle of it (real Celery workers)."""

import base64
import datetime
import json
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from config.celery import app as celery_app
from kernel import outbound
from kernel.context import tenant_context
from kernel.events import Event, publish
from kernel.tasks import event_dispatch_task
from tests.factories import make_tenant
from tests.fixtures.brokers import Broker
from tests.fixtures.celery_worker import CeleryWorker, redelivering_transport, worker_environment
from tests.fixtures.webhook_receiver import Answer, ReceivedRequest, WebhookReceiver
from tests.helpers import API, client_for, member_with_role, outcome, sent_through_the_broker
from webhooks import delivery, services
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.tasks import webhook_deliver_task, webhook_fan_out_task

WEBHOOKS = f"{API}/webhooks/"
DOC = Path(django_settings.BASE_DIR) / "docs" / "webhooks.md"
Status = WebhookDelivery.Status


# --- the receiver's verification snippet, as documented ---------------------------------------


def documented_verifier() -> Callable[[str, dict[str, str], bytes], bool]:
    """`verify_webhook` from docs/webhooks.md, run as a receiver would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "def verify_webhook" in block]
    namespace: dict = {}
    exec(compile(snippet, str(DOC), "exec"), namespace)  # noqa: S102  (our own documentation)
    return namespace["verify_webhook"]


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def local_targets(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    return settings


def create_endpoint(tenant, url: str, topics=("*",)) -> WebhookEndpoint:
    with tenant_context(tenant.id):
        return services.webhook_endpoint_create(url=url, topics=list(topics))


def make_event(tenant, topic: str = "catalog.product.updated", data: dict | None = None) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        topic=topic,
        data=data if data is not None else {"id": str(uuid.uuid4()), "changed": ["price"]},
        tenant_id=str(tenant.id),
        actor={"user_id": None, "api_key_id": None},
        request_id=None,
        occurred_at=datetime.datetime.now(tz=datetime.UTC).isoformat(),
    )


def deliveries_of(endpoint_or_id) -> list[WebhookDelivery]:
    endpoint_id = getattr(endpoint_or_id, "pk", endpoint_or_id)
    with outcome():
        return list(WebhookDelivery.objects.filter(endpoint_id=endpoint_id).order_by("created_at"))


def endpoint_row(endpoint) -> WebhookEndpoint:
    with outcome():
        return WebhookEndpoint.objects.get(pk=endpoint.pk)


def let_breaker_reset(endpoint) -> None:
    """As if WEBHOOK_BREAKER_RESET_SECONDS had passed since the breaker opened."""
    with outcome():
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            circuit_open_until=timezone.now() - datetime.timedelta(seconds=1)
        )


def attempt(tenant, delivery_row: WebhookDelivery, **kwargs) -> delivery.Outcome:
    """One run of the delivery task's body, as a worker would run it, in the tenant."""
    with tenant_context(tenant.id):
        return delivery.attempt(str(delivery_row.pk), **kwargs)


# --- signed deliveries, through the real publishing path --------------------------------------


@pytest.mark.django_db
def test_a_published_event_is_delivered_signed_as_documented(
    receiver, local_targets, django_capture_on_commit_callbacks
):
    # Given an endpoint created through the API, whose secret the receiver keeps
    tenant = make_tenant(name="Acme")
    client = client_for(member_with_role(tenant, "admin"), tenant)
    created = client.post(
        WEBHOOKS, {"url": f"{receiver.url}/hooks", "topics": ["catalog.product.*"]}, format="json"
    ).json()
    secret = created["secret"]

    # When a service publishes an event in the tenant and its transaction commits
    with tenant_context(tenant.id), django_capture_on_commit_callbacks(execute=True):
        event = publish(
            topic="catalog.product.updated", data={"id": "p-1", "price": "19.99"}, actor=None
        )

    # Then the receiver got one POST, signed, which the documented snippet verifies
    (request,) = receiver.wait_for(1)
    verify = documented_verifier()
    assert request.method == "POST"
    assert request.path == "/hooks"
    assert verify(secret, request.headers, request.body) is True
    assert request.headers["webhook-id"] == event.id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert json.loads(request.body) == {
        "type": "catalog.product.updated",
        "timestamp": event.occurred_at.replace("+00:00", "Z"),
        "data": {"id": "p-1", "price": "19.99"},
    }
    # ...and refuses what was not signed with that secret, or was changed on the way
    assert verify(secret, request.headers, request.body.replace(b"19.99", b"0.01")) is False
    other_secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert verify(other_secret, request.headers, request.body) is False
    stale = {
        **request.headers,
        "webhook-timestamp": str(int(request.headers["webhook-timestamp"]) - 600),
    }
    assert verify(secret, stale, request.body) is False
    # And the delivery is recorded as succeeded, with the exact body that was sent
    (row,) = deliveries_of(uuid.UUID(created["id"]))
    assert (row.status, row.attempts, row.last_status_code) == (Status.SUCCEEDED, 1, 200)
    assert row.delivered_at is not None
    assert row.payload.encode() == request.body
    # The receiver's response body is not kept anywhere
    assert "secret internal detail" not in row.last_error


@pytest.mark.django_db
def test_only_the_events_tenant_and_matching_topics_are_delivered(
    receiver, local_targets, django_capture_on_commit_callbacks
):
    # Given endpoints in two tenants, on different topics
    acme, globex = make_tenant(name="Acme"), make_tenant(name="Globex")
    products = create_endpoint(acme, f"{receiver.url}/acme/products", ["catalog.product.*"])
    exact = create_endpoint(acme, f"{receiver.url}/acme/exact", ["catalog.product.updated"])
    members = create_endpoint(acme, f"{receiver.url}/acme/members", ["members.*"])
    everything = create_endpoint(globex, f"{receiver.url}/globex/all", ["*"])
    disabled = create_endpoint(acme, f"{receiver.url}/acme/disabled", ["*"])
    with tenant_context(acme.id):
        services.webhook_endpoint_update(endpoint=disabled, is_active=False)

    # When Acme publishes a product update
    with tenant_context(acme.id), django_capture_on_commit_callbacks(execute=True):
        event = publish(topic="catalog.product.updated", data={"id": "p-1"})

    # Then the two matching, active endpoints of Acme get it, and nobody else
    received = receiver.wait_for(2)
    assert sorted(r.path for r in received) == ["/acme/exact", "/acme/products"]
    assert {r.headers["webhook-id"] for r in received} == {event.id}
    assert len(receiver.requests) == 2
    assert [len(deliveries_of(e)) for e in (products, exact, members, everything, disabled)] == [
        1,
        1,
        0,
        0,
        0,
    ]


@pytest.mark.django_db
def test_the_fan_out_runs_twice_and_delivers_once(receiver, local_targets):
    # Given an endpoint, and an event whose fan-out already ran (its tasks not sent yet)
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, receiver.url)
    event = make_event(tenant)
    with tenant_context(tenant.id):
        (first,) = services.webhook_deliveries_create_for_event(event=event)
        attempt(tenant, first)

        # When it runs again (a retried task)
        again = services.webhook_deliveries_create_for_event(event=event)

    # Then nothing new is created or queued, and the receiver got it once
    assert again == []
    assert [d.pk for d in deliveries_of(endpoint)] == [first.pk]
    assert len(receiver.requests) == 1


# --- retries, the breaker, the dead letter, redelivery ----------------------------------------


def test_backoff_ceilings_double_up_to_the_cap_and_countdowns_stay_under_them(settings):
    settings.WEBHOOK_RETRY_BASE_DELAY = 30
    settings.WEBHOOK_RETRY_MAX_DELAY = 1800

    ceilings = [delivery.backoff_ceiling(n) for n in range(1, 9)]
    countdowns = [[delivery.backoff_countdown(n) for _ in range(200)] for n in range(1, 9)]

    assert ceilings == [30, 60, 120, 240, 480, 960, 1800, 1800]
    for ceiling, samples in zip(ceilings, countdowns, strict=True):
        assert all(0 <= sample <= ceiling for sample in samples)
        # Full jitter: spread over the whole range, not bunched at the top
        assert min(samples) < ceiling / 2 < max(samples)


@pytest.mark.django_db
def test_a_failing_receiver_gets_backoff_then_the_breaker_then_the_dead_letter(
    receiver, local_targets, monkeypatch, django_capture_on_commit_callbacks
):
    # Given a receiver that answers 500, and a breaker that opens after 3 failures
    settings = local_targets
    settings.WEBHOOK_MAX_ATTEMPTS = 6
    settings.WEBHOOK_BREAKER_FAILURE_THRESHOLD = 3
    settings.WEBHOOK_BREAKER_RESET_SECONDS = 60
    settings.WEBHOOK_RETRY_BASE_DELAY = 2
    settings.WEBHOOK_RETRY_MAX_DELAY = 20
    # The countdowns at the top of their jitter range: the ceilings themselves.
    monkeypatch.setattr(delivery, "jitter_fraction", lambda: 1.0)
    receiver.respond(500)
    tenant = make_tenant()
    # The catalog's events only: on `*`, the redelivery's own audit event would be delivered too.
    endpoint = create_endpoint(tenant, f"{receiver.url}/down", ["catalog.product.*"])
    with tenant_context(tenant.id):
        (row,) = services.webhook_deliveries_create_for_event(event=make_event(tenant))

    # When the worker runs the delivery, three times: each fails and waits twice as long
    outcomes = [attempt(tenant, row) for _ in range(3)]
    assert [(o.status, o.retry_in) for o in outcomes] == [
        (Status.FAILED, 2),
        (Status.FAILED, 4),
        (Status.FAILED, 8),
    ]
    assert len(receiver.requests) == 3
    assert endpoint_row(endpoint).circuit_state == WebhookEndpoint.CircuitState.OPEN

    # Then, while the breaker is open, no request reaches the receiver: the delivery waits for
    # the reset (60 s, plus up to 10% jitter), and that uses up no attempt
    waiting = attempt(tenant, row)
    assert waiting.status == Status.FAILED
    assert 55 <= waiting.retry_in <= 66
    assert len(receiver.requests) == 3
    assert deliveries_of(endpoint)[0].attempts == 3

    # When the reset period has passed, one attempt probes; it fails and the breaker re-opens
    let_breaker_reset(endpoint)
    assert attempt(tenant, row).retry_in == 16
    assert len(receiver.requests) == 4
    assert attempt(tenant, row).retry_in >= 55
    assert len(receiver.requests) == 4

    # And after the last attempt the delivery is dead: nothing more is scheduled
    let_breaker_reset(endpoint)
    assert attempt(tenant, row).retry_in == 20  # the cap
    let_breaker_reset(endpoint)
    dead = attempt(tenant, row)
    assert (dead.status, dead.retry_in) == (Status.DEAD, None)
    assert len(receiver.requests) == 6
    assert attempt(tenant, row).status == Status.DEAD
    assert len(receiver.requests) == 6
    # Every attempt was the same message: same webhook-id, same body
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1

    # It is in the dead letters, with the last status and no response body
    client = client_for(member_with_role(tenant, "admin"), tenant)
    listed = client.get(f"{WEBHOOKS}{endpoint.pk}/deliveries/", {"status": "dead"}).json()
    (shown,) = listed["results"]
    assert (shown["id"], shown["attempts"]) == (str(row.pk), 6)
    assert (shown["last_status_code"], shown["last_error"]) == (500, "HTTP 500.")
    assert shown["next_attempt_at"] is None

    # When the receiver is back and the delivery is redelivered through the API (the breaker
    # still open: a manual redelivery is its probe)
    receiver.respond(204)
    assert endpoint_row(endpoint).circuit_state == WebhookEndpoint.CircuitState.OPEN
    # (The tenant context stands for the request's: here its commit, and so the queueing of the
    # task, happens after the request, when the test's captured callbacks run.)
    with tenant_context(tenant.id), django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{WEBHOOKS}{endpoint.pk}/deliveries/{row.pk}/redeliver/")

    # Then it arrives, under the same webhook-id, and the breaker is closed again
    assert response.status_code == 200, response.content
    assert response.json()["attempts"] == 0
    seventh = receiver.wait_for(7)[-1]
    assert seventh.headers["webhook-id"] == receiver.requests[0].headers["webhook-id"]
    (redelivered,) = deliveries_of(endpoint)
    assert (redelivered.status, redelivered.attempts) == (Status.SUCCEEDED, 1)
    assert redelivered.last_status_code == 204
    assert endpoint_row(endpoint).circuit_state == WebhookEndpoint.CircuitState.CLOSED


@pytest.mark.django_db
def test_a_success_resets_the_failure_count(receiver, local_targets):
    local_targets.WEBHOOK_BREAKER_FAILURE_THRESHOLD = 2
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, receiver.url)
    with tenant_context(tenant.id):
        first, second, third = [
            services.webhook_deliveries_create_for_event(event=make_event(tenant))[0]
            for _ in range(3)
        ]

    # A failure, a success, a failure: never two in a row, so the breaker stays closed
    receiver.respond(503)
    attempt(tenant, first)
    receiver.respond(200)
    attempt(tenant, second)
    receiver.respond(503)
    attempt(tenant, third)

    assert endpoint_row(endpoint).consecutive_failures == 1
    assert endpoint_row(endpoint).circuit_state == WebhookEndpoint.CircuitState.CLOSED


@pytest.mark.django_db
def test_a_redirect_is_not_followed(receiver, local_targets):
    # Given a receiver that redirects, to a path of its own that would accept anything
    receiver.respond(
        lambda request: (
            Answer(200)
            if request.path == "/elsewhere"
            else Answer(307, {"location": f"{receiver.url}/elsewhere"})
        )
    )
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, f"{receiver.url}/moved")
    with tenant_context(tenant.id):
        (row,) = services.webhook_deliveries_create_for_event(event=make_event(tenant))

    outcome_ = attempt(tenant, row)

    # Then the redirect counts as a failure, and nothing was sent where it pointed
    assert outcome_.status == Status.FAILED
    assert [r.path for r in receiver.requests] == ["/moved"]
    (failed,) = deliveries_of(endpoint)
    assert (failed.last_status_code, failed.last_error) == (
        307,
        "Redirect not followed (HTTP 307).",
    )


@pytest.mark.django_db
def test_a_disabled_endpoint_gets_nothing_more(receiver, local_targets):
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, receiver.url)
    with tenant_context(tenant.id):
        (row,) = services.webhook_deliveries_create_for_event(event=make_event(tenant))
        services.webhook_endpoint_update(endpoint=endpoint, is_active=False)

    assert attempt(tenant, row).status == Status.DEAD
    assert receiver.requests == []
    assert deliveries_of(endpoint)[0].last_error == "The endpoint is disabled."


# --- SSRF at delivery time --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_name_that_resolves_to_a_private_address_by_delivery_time_gets_nothing(
    receiver, settings, fake_dns
):
    # Given an endpoint whose name resolved to a public address when it was created
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    fake_dns["hooks.example.com"] = ["93.184.215.14"]
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, f"https://hooks.example.com:{receiver.port}/in")
    with tenant_context(tenant.id):
        (row,) = services.webhook_deliveries_create_for_event(event=make_event(tenant))

    # When the name has been re-pointed at a loopback address (DNS rebinding)
    fake_dns["hooks.example.com"] = ["93.184.215.14", "127.0.0.1"]
    result = attempt(tenant, row)

    # Then nothing is sent, and the attempt failed for that reason
    assert result.status == Status.FAILED
    assert receiver.requests == []
    (failed,) = deliveries_of(endpoint)
    assert failed.last_error == f"Target refused: {outbound.NOT_PUBLIC}"
    # ...saying no more than that: where an internal name points is none of the tenant's business
    assert "127.0.0.1" not in failed.last_error
    assert failed.last_status_code is None


@pytest.mark.django_db
def test_an_ip_target_allowed_at_creation_is_refused_once_the_setting_is_off(receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, receiver.url)
    with tenant_context(tenant.id):
        (row,) = services.webhook_deliveries_create_for_event(event=make_event(tenant))

    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    attempt(tenant, row)

    assert receiver.requests == []
    assert deliveries_of(endpoint)[0].last_error.startswith("Target refused")


@pytest.mark.django_db
def test_the_delivery_connects_to_the_address_it_checked(receiver, local_targets, fake_dns):
    # Given a name that only our resolver knows (the system's does not), pointing at the receiver
    fake_dns["receiver.invalid"] = ["127.0.0.1"]
    tenant = make_tenant()
    create_endpoint(tenant, f"http://receiver.invalid:{receiver.port}/in")
    with tenant_context(tenant.id):
        (row,) = services.webhook_deliveries_create_for_event(event=make_event(tenant))

    result = attempt(tenant, row)

    # Then it arrived: the connection went to the resolved address, with the name as Host
    assert result.status == Status.SUCCEEDED
    (request,) = receiver.requests
    assert request.headers["host"] == f"receiver.invalid:{receiver.port}"


# --- real workers: the webhooks queue, Celery's retries, late acknowledgement ----------------


def test_webhook_tasks_are_routed_to_the_webhooks_queue_and_nothing_else_is():
    router = celery_app.amqp.router

    assert router.route({}, webhook_deliver_task.name)["queue"].name == "webhooks"
    assert router.route({}, webhook_fan_out_task.name)["queue"].name == "webhooks"
    assert router.route({}, event_dispatch_task.name)["queue"].name == "celery"


@pytest.fixture
def webhook_workers(
    settings, transactional_db, broker: Broker
) -> Iterator[Callable[..., CeleryWorker]]:
    """Start real Celery workers on a queue of this test's own, which the application's webhook
    tasks are routed to while the test runs (setting WEBHOOKS_QUEUE, read by the router); on
    each broker in turn (Redis, RabbitMQ)."""
    queue = f"tests-webhooks-{uuid.uuid4().hex[:12]}"
    # Before the first settings override, under which Django no longer names its settings module.
    base_environment = worker_environment()
    settings.WEBHOOKS_QUEUE = queue
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    started: list[CeleryWorker] = []

    def start(*, pool: str = "solo", **env: str) -> CeleryWorker:
        worker = CeleryWorker(
            queue=queue,
            pool=pool,
            env={
                **base_environment,
                **broker.worker_env(),
                "WEBHOOKS_QUEUE": queue,
                "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
                **env,
            },
        )
        started.append(worker)
        worker.start()
        return worker

    try:
        with sent_through_the_broker(), broker.publishing():
            yield start
    finally:
        for worker in reversed(started):
            worker.stop()


def wait_for_status(endpoint, status: str, *, timeout: float = 30.0) -> WebhookDelivery:
    deadline = timezone.now() + datetime.timedelta(seconds=timeout)
    while True:
        (row,) = deliveries_of(endpoint)
        if row.status == status:
            return row
        if timezone.now() > deadline:
            raise AssertionError(
                f"The delivery is still {row.status}, not {status}: {row.__dict__}"
            )
        time.sleep(0.1)


def test_a_worker_retries_on_the_webhooks_queue_until_the_dead_letter(receiver, webhook_workers):
    # Given a worker with a short schedule, and a receiver that always fails
    worker = webhook_workers(
        WEBHOOK_MAX_ATTEMPTS="3",
        WEBHOOK_RETRY_BASE_DELAY="0.2",
        WEBHOOK_RETRY_MAX_DELAY="0.4",
        WEBHOOK_BREAKER_FAILURE_THRESHOLD="100",
    )
    receiver.respond(500)
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, f"{receiver.url}/down")

    # When an event fans out in the web process (its delivery task goes through the broker)
    with tenant_context(tenant.id):
        services.webhook_deliveries_create_for_event(event=make_event(tenant))

    # Then the worker tries three times, rescheduling itself with the countdowns it computed,
    # and the delivery ends dead
    dead = wait_for_status(endpoint, Status.DEAD)
    assert dead.attempts == 3
    assert len(receiver.requests) == 3
    # The row is committed before the worker logs the attempt that made it dead.
    worker.wait_for(
        lambda r: r.get("event") == "webhook_delivery_attempted" and r.get("outcome") == "dead",
        waiting_for="the last attempt's log line",
    )
    attempts = worker.find(event="webhook_delivery_attempted")
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "dead"]
    assert 0 <= attempts[0]["retry_in"] <= 0.2
    assert 0 <= attempts[1]["retry_in"] <= 0.4
    assert attempts[2]["retry_in"] is None
    # ...each attempt in the event's tenant, as the message carried it
    assert {a["tenant_id"] for a in attempts} == {str(tenant.id)}
    retries = [r for r in worker.records() if "Retry in" in str(r.get("event"))]
    assert len(retries) == 2


def hold_the_first_request(receiver: WebhookReceiver) -> tuple[threading.Event, threading.Event]:
    """The receiver holds its first request open until `release` is set, and answers the rest;
    `arrived` is set when the first one is in."""
    arrived, release = threading.Event(), threading.Event()

    def respond(request: ReceivedRequest) -> Answer:
        if not arrived.is_set():
            arrived.set()
            release.wait(timeout=60)
        return Answer(200)

    receiver.respond(respond)
    return arrived, release


def pool_processes_of(pid: int) -> list[int]:
    """The child processes of `pid` (a prefork worker's pool), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_a_delivery_survives_its_worker_killed_in_the_middle_of_it(receiver, webhook_workers):
    # A prefork worker: the pool process runs the task while the main process talks to the
    # broker, so an early acknowledgement would really happen before the POST (a solo worker's
    # event loop could not acknowledge anything until the task ended).
    # Unacknowledged messages come back after 2 s (redelivering_transport).
    worker_env = {
        "CELERY_BROKER_TRANSPORT_OPTIONS": redelivering_transport(),
        "WEBHOOK_READ_TIMEOUT": "60",
    }
    first_worker = webhook_workers(pool="prefork", **worker_env)

    # Given a receiver that holds the first request open
    arrived, release = hold_the_first_request(receiver)
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, f"{receiver.url}/slow")
    with tenant_context(tenant.id):
        services.webhook_deliveries_create_for_event(event=make_event(tenant))

    # When the worker, pool and all, is killed while the POST is in flight
    assert arrived.wait(timeout=30), "the worker never sent the delivery"
    first_worker.kill()
    release.set()
    assert deliveries_of(endpoint)[0].status == Status.PENDING

    # Then another worker takes the unacknowledged task and delivers it, under the same id
    webhook_workers(pool="prefork", **worker_env)
    delivered = wait_for_status(endpoint, Status.SUCCEEDED)
    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert delivered.attempts == 2


def test_a_delivery_survives_its_pool_process_killed(receiver, webhook_workers):
    # Given a prefork worker, and a receiver that holds the first request open
    worker = webhook_workers(pool="prefork", WEBHOOK_READ_TIMEOUT="60")
    arrived, release = hold_the_first_request(receiver)
    tenant = make_tenant()
    endpoint = create_endpoint(tenant, f"{receiver.url}/slow")
    with tenant_context(tenant.id):
        services.webhook_deliveries_create_for_event(event=make_event(tenant))

    # When the pool process running the task is killed (the OOM killer's way)
    assert arrived.wait(timeout=30), "the worker never sent the delivery"
    assert worker._process is not None
    (pool_process,) = pool_processes_of(worker._process.pid)
    os.kill(pool_process, signal.SIGKILL)
    release.set()

    # Then the worker puts the task back (reject_on_worker_lost) and a new pool process sends it
    delivered = wait_for_status(endpoint, Status.SUCCEEDED)
    assert delivered.attempts == 2
    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
