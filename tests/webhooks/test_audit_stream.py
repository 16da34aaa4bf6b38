"""The audit log streamed to the tenant's SIEM through its webhooks (`audit.event`): every event
recorded is delivered as it is written, signed and retried like any delivery, its payload the
export's line, so that the receiver checks the hash chain from the deliveries alone; only to
the tenant's own endpoints; subscribing needs `audit.read`; a tenant that streams nothing pays
no query for it, and nobody gets a notification of it."""

import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from config.celery import app as celery_app
from kernel import audit
from kernel.audit_chain import event_hash
from kernel.context import operator_scope, tenant_context
from kernel.models import OutboxEvent
from kernel.permissions import Perm
from kernel.tenancy.models import AuditEvent
from notifications.models import Notification
from tests.catalog_helpers import PRODUCTS
from tests.factories import make_role, make_tenant
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.fixtures.webhook_receiver import Answer, ReceivedRequest, WebhookReceiver
from tests.helpers import (
    API,
    assert_problem,
    client_for,
    member_with_role,
    outcome,
    owner_of,
    sent_through_the_broker,
    tasks_run_inline,
)
from tests.notifications.test_webhooks_delivery import documented_verifier
from webhooks.models import WebhookDelivery

pytestmark = [pytest.mark.django_db, pytest.mark.tenant(name="Acme", plan_code="pro")]

WEBHOOKS = f"{API}/webhooks/"
ROLES = f"{API}/roles/"
EXPORT = f"{API}/audit-events/export/"
SCRIPT = Path(django_settings.BASE_DIR) / "scripts" / "verify_audit_chain.py"
TOPIC = "audit.event"
HASHES = ("prev_hash", "hash")


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def local_targets(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    return settings


@pytest.fixture
def owner_client(tenant) -> APIClient:
    return client_for(owner_of(tenant), tenant)


@contextmanager
def committed(tenant, django_capture_on_commit_callbacks) -> Iterator[None]:
    """What the block's requests queue once they commit runs, inline: the outbox's dispatch, the
    fan-out, the delivery. (The tenant context stands for the request's, which has ended by the
    time the test's captured callbacks run.)"""
    with (
        tasks_run_inline(),
        tenant_context(tenant.id),
        django_capture_on_commit_callbacks(execute=True),
    ):
        yield


def subscribe(client: APIClient, url: str, topics=(TOPIC,)) -> dict:
    response = client.post(WEBHOOKS, {"url": url, "topics": list(topics)}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def create_role(client: APIClient, name: str) -> None:
    response = client.post(ROLES, {"name": name, "permissions": ["catalog.read"]}, format="json")
    assert response.status_code == 201, response.content


def streamed_events(requests: list[ReceivedRequest]) -> list[dict]:
    bodies = [json.loads(request.body) for request in requests]
    assert {body["type"] for body in bodies} == {TOPIC}
    return [body["data"] for body in bodies]


def assert_chain(events: list[dict]) -> None:
    """Each event's hash is its canonical JSON's and the hash before it, each links to the one
    before: what a SIEM checks with the deliveries alone."""
    for before, event in zip([None, *events], events, strict=False):
        body = {name: value for name, value in event.items() if name not in HASHES}
        assert event_hash(body, event["prev_hash"]) == event["hash"], event
        if before is not None:
            assert event["prev_hash"] == before["hash"]


def in_chain_order(events: list[dict]) -> list[dict]:
    """Deliveries may arrive in any order: the links put them back in the chain's."""
    by_prev = {event["prev_hash"]: event for event in events}
    hashes = {event["hash"] for event in events}
    (first,) = [event for event in events if event["prev_hash"] not in hashes]
    ordered = [first]
    while ordered[-1]["hash"] in by_prev:
        ordered.append(by_prev[ordered[-1]["hash"]])
    assert len(ordered) == len(events)
    return ordered


def exported_lines(client: APIClient) -> dict[str, dict]:
    response = client.get(EXPORT, {"format": "ndjson"})
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content).decode()
    return {line["id"]: line for line in map(json.loads, body.splitlines())}


def audit_deliveries(endpoint_id) -> list[WebhookDelivery]:
    with outcome():
        return list(WebhookDelivery.objects.filter(endpoint_id=endpoint_id, topic=TOPIC))


# --- delivered as written, signed, verifiable -------------------------------------------------


def test_every_audited_change_is_delivered_signed_and_its_chain_verifies(
    tenant, owner_client, receiver, local_targets, django_capture_on_commit_callbacks, tmp_path
):
    # Given an admin besides the owner, who reads the audit log and gets notifications
    admin = member_with_role(tenant, "admin")
    # When the owner subscribes an endpoint to audit.event, then creates a role and a product
    with committed(tenant, django_capture_on_commit_callbacks):
        created = subscribe(owner_client, f"{receiver.url}/siem")
    with committed(tenant, django_capture_on_commit_callbacks):
        create_role(owner_client, "auditors")
    with committed(tenant, django_capture_on_commit_callbacks):
        product = owner_client.post(
            PRODUCTS, {"sku": "S-1", "name": "Siem", "price": "9.50"}, format="json"
        )
        assert product.status_code == 201, product.content

    # Then the receiver got one delivery per audit event, the subscription's own first, each
    # signed as every delivery is (the documented snippet verifies it), under its own id
    requests = receiver.wait_for(3)
    time.sleep(0.2)
    assert len(receiver.requests) == 3
    verify = documented_verifier()
    assert all(verify(created["secret"], r.headers, r.body) for r in requests)
    assert len({r.headers["webhook-id"] for r in requests}) == 3
    events = streamed_events(requests)
    assert [event["action"] for event in events] == [
        "notifications.webhook.created",
        "tenants.role.created",
        "catalog.product.created",
    ]
    assert events[2]["target_id"] == product.json()["id"]
    # ...and the hashes verify from the deliveries alone: with kernel.audit_chain's definition,
    assert_chain(in_chain_order(events))
    # with the independent script of docs/audit.md (anchored at the event before the first),
    stream = tmp_path / "stream.ndjson"
    stream.write_text("".join(json.dumps(event) + "\n" for event in events))
    checked = subprocess.run(
        [sys.executable, str(SCRIPT), str(stream), events[0]["prev_hash"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"valid: 3 events, head {events[-1]['hash']}")
    # ...and each payload is exactly the export's line of that event
    exported = exported_lines(owner_client)
    assert [exported[event["id"]] for event in events] == events
    # The stream recorded nothing of its own: three changes, three events since the subscription
    with outcome():
        assert AuditEvent.objects.filter(
            tenant=tenant, created_at__gte=events[0]["created_at"]
        ).count() == len(events)
    # The deliveries are listed as succeeded, like any other
    listed = owner_client.get(f"{WEBHOOKS}{created['id']}/deliveries/").json()["results"]
    assert Counter((d["topic"], d["status"]) for d in listed) == {(TOPIC, "succeeded"): 3}
    # Nobody is notified of audit events, though the admin is of the product
    with outcome():
        topics = set(Notification.objects.filter(user=admin).values_list("topic", flat=True))
    assert topics == {"catalog.product.created"}


def test_a_pattern_that_matches_it_streams_the_log_too(
    tenant, owner_client, receiver, local_targets, django_capture_on_commit_callbacks
):
    # Given an endpoint on `*`, which needs audit.read as well as catalog.read (the owner's)
    created = subscribe(owner_client, f"{receiver.url}/all", topics=["*"])

    # When a role is created
    with committed(tenant, django_capture_on_commit_callbacks):
        create_role(owner_client, "everything")

    # Then its audit event is delivered
    (request,) = receiver.wait_for(1)
    (event,) = streamed_events([request])
    assert (event["action"], event["tenant_id"]) == ("tenants.role.created", str(tenant.id))
    assert len(audit_deliveries(created["id"])) == 1


def test_events_recorded_in_the_operator_scope_are_streamed_and_the_platform_log_is_not(
    tenant, owner_client, local_targets
):
    # Given a tenant that streams its log
    subscribe(owner_client, "http://127.0.0.1:9/siem")

    # When an operator's change is recorded in its log (the admin, the prune job), and one in
    # the platform's log, in the operator scope
    with operator_scope("test: an operator's change"), transaction.atomic():
        event = audit.record(
            tenant_id=tenant.id, action="tests.thing.done", target_type="thing", changes={"a": 1}
        )
        audit.record_platform(action="tests.thing.done", target_type="plan")

    # Then the tenant's event waits in the tenant's outbox as an audit.event, as it was chained,
    # and nothing else does
    with outcome():
        pending = list(OutboxEvent.objects.filter(topic=TOPIC).values_list("tenant_id", "message"))
    assert {tenant_id for tenant_id, _ in pending} == {tenant.id}
    (streamed,) = [m["data"] for _, m in pending if m["data"]["id"] == str(event.id)]
    assert (streamed["action"], streamed["hash"]) == ("tests.thing.done", event.hash)
    assert exported_lines(owner_client)[str(event.id)] == streamed
    # (the subscription's own event is the other one waiting)
    assert len(pending) == 2


# --- only the tenant's own endpoints ------------------------------------------------------------


def test_another_tenants_endpoints_never_receive_the_audit_events(
    tenant, owner_client, receiver, local_targets, django_capture_on_commit_callbacks
):
    # Given endpoints of Acme and of Globex, on audit.event and on everything
    globex = make_tenant(name="Globex", plan_code="pro")
    globex_owner = client_for(owner_of(globex), globex)
    subscribe(owner_client, f"{receiver.url}/acme")
    theirs = [
        subscribe(globex_owner, f"{receiver.url}/globex/audit"),
        subscribe(globex_owner, f"{receiver.url}/globex/all", topics=["*"]),
    ]

    # When Acme's owner creates a role
    with committed(tenant, django_capture_on_commit_callbacks):
        create_role(owner_client, "acme-only")

    # Then Acme's endpoint gets its audit event, and Globex's get nothing at all
    (request,) = receiver.wait_for(1)
    time.sleep(0.2)
    assert [r.path for r in receiver.requests] == ["/acme"]
    (event,) = streamed_events([request])
    assert event["tenant_id"] == str(tenant.id)
    assert [audit_deliveries(endpoint["id"]) for endpoint in theirs] == [[], []]
    for endpoint in theirs:
        listed = globex_owner.get(f"{WEBHOOKS}{endpoint['id']}/deliveries/").json()
        assert listed["results"] == []


# --- who may subscribe ------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [TOPIC, "audit.*", "*"])
def test_subscribing_to_the_audit_log_needs_audit_read(tenant, topic, local_targets):
    # Given a member who manages webhooks and reads the catalog, but not the audit log
    make_role(tenant, name="integrations", permissions=[Perm.WEBHOOKS_MANAGE, Perm.CATALOG_READ])
    client = client_for(member_with_role(tenant, "integrations"), tenant)
    url = "http://127.0.0.1:9/hooks"

    # When they subscribe an endpoint to it, or change one to take it, Then it is refused
    body = assert_problem(
        client.post(WEBHOOKS, {"url": url, "topics": [topic]}, format="json"),
        403,
        "permission-denied",
    )
    assert body["detail"] == "These topics carry data that needs audit.read."
    catalog = subscribe(client, url, topics=["catalog.*"])
    changed = client.patch(f"{WEBHOOKS}{catalog['id']}/", {"topics": [topic]}, format="json")
    assert_problem(changed, 403, "permission-denied")
    assert [e["topics"] for e in client.get(WEBHOOKS).json()["results"]] == [["catalog.*"]]

    # While with audit.read as well, it is allowed
    make_role(tenant, name="siem", permissions=[Perm.WEBHOOKS_MANAGE, Perm.AUDIT_READ])
    allowed = client_for(member_with_role(tenant, "siem"), tenant)
    assert subscribe(allowed, url, topics=[TOPIC])["topics"] == [TOPIC]


def test_deliveries_of_the_audit_log_are_hidden_from_who_may_not_read_it(
    tenant, owner_client, receiver, local_targets, django_capture_on_commit_callbacks
):
    # Given an endpoint on everything, with a delivery of an audit event and of a product
    created = subscribe(owner_client, f"{receiver.url}/all", topics=["*"])
    with committed(tenant, django_capture_on_commit_callbacks):
        product = owner_client.post(
            PRODUCTS, {"sku": "H-1", "name": "Hidden", "price": "1"}, format="json"
        )
        assert product.status_code == 201, product.content
    receiver.wait_for(2)
    deliveries = f"{WEBHOOKS}{created['id']}/deliveries/"
    assert {d["topic"] for d in owner_client.get(deliveries).json()["results"]} == {
        TOPIC,
        "catalog.product.created",
    }

    # When someone who manages webhooks and reads the catalog, but not the audit log, lists them
    make_role(tenant, name="integrations", permissions=[Perm.WEBHOOKS_MANAGE, Perm.CATALOG_READ])
    client = client_for(member_with_role(tenant, "integrations"), tenant)
    listed = client.get(deliveries).json()["results"]

    # Then the audit event's delivery, and its payload, are not among them
    assert [d["topic"] for d in listed] == ["catalog.product.created"]
    (audit_delivery,) = audit_deliveries(created["id"])
    redeliver = f"{deliveries}{audit_delivery.pk}/redeliver/"
    assert_problem(client.post(redeliver), 404, "not-found")


# --- the cost: nothing for a tenant that streams nothing ----------------------------------------


def role_creation_queries(client: APIClient, name: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        create_role(client, name)
    return [query["sql"] for query in queries.captured_queries]


def outbox_writes(queries: list[str]) -> list[str]:
    return [sql for sql in queries if "core_outboxevent" in sql]


def test_a_tenant_that_streams_nothing_pays_no_query_for_it(tenant, owner_client, local_targets):
    # Given the queries of an audited write (a role), once the caches are warm
    role_creation_queries(owner_client, "warm")
    quiet = role_creation_queries(owner_client, "quiet")
    assert outbox_writes(quiet) == []

    # An endpoint that does not take audit.event changes nothing
    catalog = subscribe(owner_client, "http://127.0.0.1:9/catalog", topics=["catalog.*"])
    assert len(role_creation_queries(owner_client, "catalog")) == len(quiet)

    # Once one takes it, the same write costs one INSERT more: its event into the outbox
    siem = subscribe(owner_client, "http://127.0.0.1:9/siem")
    streamed = role_creation_queries(owner_client, "streamed")
    assert len(streamed) == len(quiet) + 1
    (insert,) = outbox_writes(streamed)
    assert insert.startswith('INSERT INTO "core_outboxevent"')

    # Disabled, or deleted, it costs nothing again
    disabled = owner_client.patch(f"{WEBHOOKS}{siem['id']}/", {"is_active": False}, format="json")
    assert disabled.status_code == 200, disabled.content
    assert outbox_writes(role_creation_queries(owner_client, "disabled")) == []
    enabled = owner_client.patch(f"{WEBHOOKS}{siem['id']}/", {"is_active": True}, format="json")
    assert enabled.status_code == 200, enabled.content
    assert len(outbox_writes(role_creation_queries(owner_client, "enabled"))) == 1
    assert owner_client.delete(f"{WEBHOOKS}{siem['id']}/").status_code == 204
    after = role_creation_queries(owner_client, "after")
    assert len(after) == len(quiet)
    assert outbox_writes(after) == []
    # The catalog endpoint is still there, and did not turn the stream on by itself
    assert owner_client.get(f"{WEBHOOKS}{catalog['id']}/").status_code == 200


# --- retried like every delivery, by a real worker ----------------------------------------------


@pytest.fixture
def stream_worker(settings, transactional_db) -> Iterator[CeleryWorker]:
    """A real worker on a queue of this test's own, which every task the application sends goes
    to while the test runs: the outbox's dispatch (the default queue) and the webhooks' tasks
    (WEBHOOKS_QUEUE), retries included."""
    queue = f"tests-audit-stream-{uuid.uuid4().hex[:12]}"
    # Before the first settings override, under which Django no longer names its settings module.
    environment = worker_environment()
    settings.WEBHOOKS_QUEUE = queue
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    worker = CeleryWorker(
        queue=queue,
        env={
            **environment,
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "WEBHOOKS_QUEUE": queue,
            "WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
            "WEBHOOK_MAX_ATTEMPTS": "5",
            "WEBHOOK_RETRY_BASE_DELAY": "0.2",
            "WEBHOOK_RETRY_MAX_DELAY": "0.4",
            "WEBHOOK_BREAKER_FAILURE_THRESHOLD": "100",
        },
    )
    conf = celery_app.conf
    previous = conf.task_default_queue
    conf.task_default_queue = queue
    try:
        worker.start()
        with sent_through_the_broker():
            yield worker
    finally:
        conf.task_default_queue = previous
        worker.stop()


def failing_twice_per_message(receiver: WebhookReceiver) -> None:
    """The receiver answers 500 to the first two attempts of each webhook-id, then 200."""
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def respond(request: ReceivedRequest) -> Answer:
        with lock:
            seen[request.headers["webhook-id"]] += 1
            return Answer(500 if seen[request.headers["webhook-id"]] <= 2 else 200)

    receiver.respond(respond)


@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_gets_the_stream_retried_until_it_takes_it(receiver, stream_worker):
    # Given a receiver that fails each message twice, and a tenant subscribed through the API
    failing_twice_per_message(receiver)
    tenant = make_tenant(name="Initech", plan_code="pro")
    owner = client_for(owner_of(tenant), tenant)
    created = subscribe(owner, f"{receiver.url}/siem")

    # When its owner creates a role (the web process commits; the worker does the rest)
    create_role(owner, "retried")

    # Then each audit event (the subscription's, the role's) is tried three times, the same
    # signed bytes under the same webhook-id each time, and ends delivered
    requests = receiver.wait_for(6)
    by_id: dict[str, list[ReceivedRequest]] = {}
    for request in requests:
        by_id.setdefault(request.headers["webhook-id"], []).append(request)
    assert sorted(len(attempts) for attempts in by_id.values()) == [3, 3]
    verify = documented_verifier()
    for attempts in by_id.values():
        assert len({r.body for r in attempts}) == 1
        assert all(verify(created["secret"], r.headers, r.body) for r in attempts)
    events = in_chain_order(streamed_events([attempts[0] for attempts in by_id.values()]))
    assert [e["action"] for e in events] == [
        "notifications.webhook.created",
        "tenants.role.created",
    ]
    assert_chain(events)
    deadline = time.monotonic() + 30
    while {(d.status, d.attempts) for d in audit_deliveries(created["id"])} != {("succeeded", 3)}:
        assert time.monotonic() < deadline, audit_deliveries(created["id"])
        time.sleep(0.1)
    # (the worker logs an attempt just after it records it: wait for both lines of the last ones)
    for delivery in audit_deliveries(created["id"]):
        stream_worker.wait_for(
            lambda r, delivery_id=str(delivery.pk): (
                r.get("event") == "webhook_delivery_attempted"
                and r.get("delivery_id") == delivery_id
                and r.get("outcome") == "succeeded"
            ),
            waiting_for=f"delivery {delivery.pk} logged as succeeded",
        )
    outcomes = [a["outcome"] for a in stream_worker.find(event="webhook_delivery_attempted")]
    assert Counter(outcomes) == {"failed": 4, "succeeded": 2}
