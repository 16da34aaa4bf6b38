"""The transactional outbox of domain events (kernel/events/outbox.py): stored with the change,
delivered after commit, sent again by the relay while handlers have not all run, never twice to a
user.

The fault itself (a broker that refuses the send while a write is accepted) is a drill with real
processes: tests/system/test_fault_drills.py,
`test_a_write_during_a_broker_outage_is_notified_later`.
"""

import datetime
import uuid
from collections.abc import Iterator

import pytest
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from kernel import events
from kernel.context import current_tenant_id, tenant_context
from kernel.events import outbox, publish
from kernel.models import OutboxEvent
from kernel.tasks import event_dispatch_task, outbox_relay_task
from notifications.models import Notification
from tests.catalog_helpers import PRODUCTS, published_events
from tests.factories import make_tenant
from tests.fixtures.logs import captured_logs
from tests.helpers import client_for, member_with_role, outcome, owner_of, tasks_run_inline
from webhooks import services as webhook_services
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.django_db

NOTIFICATIONS = "/api/v1/notifications/"
PUBLIC_WEBHOOK_URL = "https://93.184.215.14/hooks"


class Boom(Exception):
    pass


@pytest.fixture
def shop():
    tenant = make_tenant(name="Outbox Shop")
    return tenant, owner_of(tenant), member_with_role(tenant, "viewer")


@pytest.fixture
def relay_at_once(settings):
    """The relay takes every pending event, however young (the default waits five minutes)."""
    settings.OUTBOX_RELAY_DELAY_SECONDS = 0
    return settings


def pending() -> list[OutboxEvent]:
    with outcome():
        return list(OutboxEvent.objects.all())


def inbox(client) -> list[dict]:
    response = client.get(NOTIFICATIONS)
    assert response.status_code == 200, response.content
    return response.json()["results"]


def product_body(sku: str) -> dict:
    return {"sku": sku, "name": f"Product {sku}", "price": "9.50"}


@pytest.fixture
def flaky_handler() -> Iterator[list[str]]:
    """A handler of `catalog.*` that fails on its first call for each event, then succeeds."""
    calls: list[str] = []

    def handler(event) -> None:
        calls.append(event.id)
        if calls.count(event.id) == 1:
            raise Boom("the first call for each event fails")

    events.subscribe("catalog.*", handler)
    try:
        yield calls
    finally:
        events.unsubscribe("catalog.*", handler)


# --- the normal path ---------------------------------------------------------------------------


def test_a_committed_write_is_delivered_and_leaves_no_pending_event(
    shop, django_capture_on_commit_callbacks
):
    tenant, owner, reader = shop
    # When a write commits and its task runs (inline, as the test settings do)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(owner, tenant).post(PRODUCTS, product_body("OK-1"), format="json")
    # Then the notification is there and the outbox is empty
    assert response.status_code == 201, response.content
    assert [n["data"]["sku"] for n in inbox(client_for(reader, tenant))] == ["OK-1"]
    assert pending() == []


def test_the_event_row_is_written_in_the_transaction_of_the_change(shop):
    tenant, owner, _ = shop
    # When an event is published and its transaction has not committed yet
    with tenant_context(tenant.id), transaction.atomic():
        event = publish(topic="catalog.product.updated", data={"sku": "IN-TX"}, actor=owner)
        # Then its row is there, in the event's tenant, holding the message the task is sent
        (row,) = OutboxEvent.objects.all()
    assert row.tenant_id == tenant.id
    assert row.id == uuid.UUID(event.id)
    assert row.message == event.as_message()
    assert row.attempts == 0


def test_an_event_of_a_rolled_back_transaction_leaves_nothing(
    shop, django_capture_on_commit_callbacks
):
    tenant, owner, reader = shop

    # When the transaction that published an event rolls back
    def write_that_fails() -> None:
        with transaction.atomic():
            publish(topic="catalog.product.updated", data={"sku": "GONE"}, actor=owner)
            raise Boom

    with (
        published_events("*") as received,
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        tenant_context(tenant.id),
        pytest.raises(Boom),
    ):
        write_that_fails()
    # Then there is no row, no task was queued, no handler ran, nobody is notified
    assert pending() == []
    assert callbacks == []
    assert received == []
    assert inbox(client_for(reader, tenant)) == []


# --- the relay ---------------------------------------------------------------------------------


def test_a_failed_handler_keeps_the_event_and_the_relay_delivers_it_once(
    shop, relay_at_once, flaky_handler, django_capture_on_commit_callbacks
):
    tenant, owner, reader = shop
    # Given a write whose event one handler failed on
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(owner, tenant).post(PRODUCTS, product_body("FLAKY"), format="json")
    assert response.status_code == 201, response.content
    (row,) = pending()
    assert flaky_handler == [row.message["id"]]
    # ...while the other handlers ran: the reader is notified already
    assert len(inbox(client_for(reader, tenant))) == 1

    # When the relay runs, twice
    with tasks_run_inline(), django_capture_on_commit_callbacks(execute=True):
        assert outbox_relay_task() == 1
        assert outbox_relay_task() == 0

    # Then the failed handler ran again and the event is done; every handler ran again, and
    # being idempotent, the reader still has one notification
    assert flaky_handler == [row.message["id"]] * 2
    assert pending() == []
    assert [n["data"]["sku"] for n in inbox(client_for(reader, tenant))] == ["FLAKY"]


def test_a_task_for_an_event_already_delivered_does_nothing(
    shop, django_capture_on_commit_callbacks
):
    tenant, owner, reader = shop
    with (
        published_events("catalog.*") as delivered,
        django_capture_on_commit_callbacks(execute=True),
    ):
        client_for(owner, tenant).post(PRODUCTS, product_body("TWICE"), format="json")
    (event,) = delivered
    # When the same event's task arrives again (the relay sent it while the first was slow)
    with published_events("*") as received, tasks_run_inline():
        assert event_dispatch_task.delay(event=event.as_message(), from_outbox=True).get() == 0
    # Then no handler runs again
    assert received == []
    assert len(inbox(client_for(reader, tenant))) == 1


def test_the_relay_waits_for_the_fast_path(shop, settings):
    tenant, owner, _ = shop
    settings.OUTBOX_RELAY_DELAY_SECONDS = 300
    # Given an event whose task has not run yet (its transaction has not committed)
    with tenant_context(tenant.id), transaction.atomic():
        publish(topic="catalog.product.updated", data={"sku": "YOUNG"}, actor=owner)
        # When the relay runs before the delay is over, and after it
        assert outbox.outbox_relay() == 0
        with tasks_run_inline(), published_events("*") as received:
            later = timezone.now() + datetime.timedelta(seconds=301)
            assert outbox.outbox_relay(now=later) == 1
    # Then only the later run sent it
    assert [event.data for event in received] == [{"sku": "YOUNG"}]


def test_an_event_that_keeps_failing_is_kept_backed_off_and_reported(shop, settings):
    tenant, owner, _ = shop
    settings.OUTBOX_RELAY_DELAY_SECONDS = 10
    settings.OUTBOX_ALERT_ATTEMPTS = 3

    def always_fails(event) -> None:
        raise Boom("this handler never succeeds")

    events.subscribe("catalog.*", always_fails)
    try:
        with tenant_context(tenant.id):
            event = publish(topic="catalog.product.updated", data={"sku": "STUCK"}, actor=owner)
        now = timezone.now()
        intervals = []
        with tasks_run_inline(), captured_logs() as logs:
            for _ in range(5):
                (row,) = pending()
                now = row.next_attempt_at
                assert outbox.outbox_relay(now=now) == 1
                (row,) = pending()
                intervals.append((row.next_attempt_at - now).total_seconds())
    finally:
        events.unsubscribe("catalog.*", always_fails)

    # Then the row is still there after five sends, each further apart, capped at an hour
    assert row.id == uuid.UUID(event.id)
    assert row.attempts == 5
    assert intervals == [20, 40, 80, 160, 320]
    assert outbox.relay_interval(30) == datetime.timedelta(hours=1)
    # ...and from the third send on it is reported, in the log and the gauge
    stuck = logs.find(event="outbox_event_stuck")
    assert [line["attempts"] for line in stuck] == [3, 4, 5]
    assert all(line["level"] == "error" for line in stuck)
    assert REGISTRY.get_sample_value("tenantapi_outbox_stuck") == 1
    assert REGISTRY.get_sample_value("tenantapi_outbox_pending") == 1


def test_the_relay_sends_in_batches(shop, relay_at_once):
    tenant, owner, _ = shop
    relay_at_once.OUTBOX_RELAY_BATCH_SIZE = 2
    before = REGISTRY.get_sample_value("tenantapi_outbox_relayed_total") or 0
    with tenant_context(tenant.id), transaction.atomic():
        for n in range(3):
            publish(topic="test.outbox.batch", data={"n": n}, actor=owner)
        with tasks_run_inline():
            # Topics nothing subscribes to: each send completes and deletes its row
            assert outbox.outbox_relay() == 2
            assert len(OutboxEvent.objects.all()) == 1
            assert outbox.outbox_relay() == 1
            assert OutboxEvent.objects.count() == 0
    assert REGISTRY.get_sample_value("tenantapi_outbox_relayed_total") == before + 3


def test_the_relay_reads_every_tenant_and_each_event_runs_in_its_own(relay_at_once):
    first, second = make_tenant(name="Outbox A"), make_tenant(name="Outbox B")
    for tenant in (first, second):
        with tenant_context(tenant.id):
            publish(topic="test.outbox.tenant", data={"slug": tenant.slug})
    # Each tenant sees only its own pending event (the scoped manager, and row-level security)
    for tenant in (first, second):
        with tenant_context(tenant.id):
            assert [row.message["data"] for row in OutboxEvent.objects.all()] == [
                {"slug": tenant.slug}
            ]
    seen = []

    def record_scope(event) -> None:
        seen.append((event.data["slug"], str(current_tenant_id())))

    events.subscribe("test.outbox.*", record_scope)
    try:
        with tasks_run_inline():
            assert outbox_relay_task() == 2
    finally:
        events.unsubscribe("test.outbox.*", record_scope)
    assert sorted(seen) == sorted([(t.slug, str(t.id)) for t in (first, second)])
    assert pending() == []


# --- handlers are idempotent per event --------------------------------------------------------


def test_every_subscribed_handler_is_idempotent_per_event(shop, django_capture_on_commit_callbacks):
    """At least once: the relay may send an event twice. Every handler the code base subscribes
    (notifications, webhook fan-out) gives the same result for a second run of one event."""
    tenant, owner, reader = shop
    with tenant_context(tenant.id):
        endpoint = webhook_services.webhook_endpoint_create(url=PUBLIC_WEBHOOK_URL, topics=["*"])
        event = publish(topic="catalog.product.updated", data={"sku": "IDEM"}, actor=owner)
    message = event.as_message()
    # When the event's handlers run twice, the old way (no outbox row to stop the second run)
    with tasks_run_inline():
        event_dispatch_task.delay(event=message).get()
        event_dispatch_task.delay(event=message).get()
    # Then one notification per recipient and one delivery per endpoint
    with outcome():
        notifications = list(Notification.objects.filter(event_id=event.id))
        deliveries = list(WebhookDelivery.objects.filter(event_id=event.id))
    assert [n.user_id for n in notifications] == [reader.id]
    assert [d.endpoint_id for d in deliveries] == [endpoint.id]
