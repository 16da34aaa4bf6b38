"""RabbitMQ, the production broker, restarted in the middle of a burst of 1,000 domain events.

The events go the real way: `kernel.events.publish()` stores each in the outbox with its
transaction and sends `event_dispatch_task` after commit, with publisher confirms; a real prefork
worker runs the handlers, which send the notification and webhook fan-outs through the broker in
turn (three tasks an event, two hops). Midway through, the node is stopped, Erlang VM and all,
and started again. What the drill shows:

- nothing is lost: every event has its notification in the end. A message the broker had
  confirmed sat in a quorum queue and came back with the node; a send refused during the outage
  (the API's, or the worker's for a fan-out, whose handler then fails) left its event in the
  outbox, and the outbox relay sent it again. The relay is the designed recovery path: in
  production beat runs it every minute; here the test sends it as beat would, every few seconds.
- each effect exists once: the tasks that ran twice (a message redelivered because its worker's
  connection died before the acknowledgement, an event the relay sent while its first task was
  still queued) found their work done: the dispatch finds its outbox row gone, the fan-out its
  notification made (unique per tenant, user and event).
- the publishers were confirmed: the broker lists the test's and the worker's channels in confirm
  mode, nothing left unconfirmed.

The node is the machine's one RabbitMQ: the drill holds its lock exclusively (tests/fixtures/
brokers.py), so that no other test is using it meanwhile. It prints its numbers (docs/scale-out.md
quotes them); run with -s to see them.
"""

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import transaction
from django.db.models import Count

from config.celery import app as celery_app
from kernel.events import publish
from kernel.models import OutboxEvent
from kernel.tasks import event_dispatch_task, outbox_relay_task
from notifications.models import Notification
from tests.factories import make_tenant
from tests.fixtures.brokers import VirtualHost, celery_app_on, node_lock, restart_rabbitmq_node
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.fixtures.logs import captured_logs, matching
from tests.helpers import outcome, owner_of, sent_through_the_broker

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = 1_000
RESTART_AFTER = 300  # events published when the node is stopped
TOPIC = "drill.rabbitmq.restarted"
# An event still in the outbox this long after it was published is due for the relay (the
# production default is 300 s: the drill compresses time, and sends the relay every few seconds).
RELAY_DELAY_SECONDS = 10
RELAY_EVERY_SECONDS = 3
DRILL_TIMEOUT = 300


@pytest.fixture
def restartable_node(rabbitmq_vhost: VirtualHost) -> Iterator[VirtualHost]:
    """The RabbitMQ node, for this test alone: other test processes wait for the lock."""
    with node_lock(exclusive=True):
        yield rabbitmq_vhost


def notified_events(tenant_id) -> Counter:
    with outcome():
        rows = (
            Notification.objects.filter(tenant_id=tenant_id, topic=TOPIC)
            .values("event_id")
            .annotate(n=Count("id"))
        )
        return Counter({row["event_id"]: row["n"] for row in rows})


def pending_in_outbox(tenant_id) -> int:
    with outcome():
        return OutboxEvent.objects.filter(tenant_id=tenant_id).count()


def test_a_rabbitmq_restart_during_a_burst_loses_nothing_and_runs_each_effect_once(
    restartable_node: VirtualHost, settings
):
    vhost = restartable_node
    tenant = make_tenant(name="RabbitMQ Drill")
    owner = owner_of(tenant)  # with no actor, every event notifies the owner: one row an event
    queue = f"tests-restart-{uuid.uuid4().hex[:12]}"
    publisher_name, worker_name = f"{queue}-publisher", f"{queue}-worker"
    # Before the settings override, under which Django no longer names its settings module.
    environment = worker_environment()
    settings.OUTBOX_RELAY_DELAY_SECONDS = RELAY_DELAY_SECONDS
    worker = CeleryWorker(
        queue=queue,
        pool="prefork",
        concurrency=4,
        env={
            **environment,
            "CELERY_BROKER_URL": vhost.url,
            # Laid over the broker's defaults (publisher confirms): a name the broker lists.
            "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(
                {"client_properties": {"connection_name": worker_name}}
            ),
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "WEBHOOKS_QUEUE": queue,
            "OUTBOX_RELAY_DELAY_SECONDS": str(RELAY_DELAY_SECONDS),
        },
    )
    conf = celery_app.conf
    previous_queue = conf.task_default_queue
    started = time.monotonic()
    worker.start()
    try:
        with (
            sent_through_the_broker(),
            # This process's connections get a name the broker lists.
            celery_app_on(vhost.url, client_properties={"connection_name": publisher_name}),
            ThreadPoolExecutor(max_workers=1) as restarter,
            captured_logs() as logs,
        ):
            conf.task_default_queue = queue
            # When 1,000 events are published, the node being restarted after the 300th
            published: list[str] = []
            restart = None
            for n in range(EVENTS):
                if n == RESTART_AFTER:
                    restart = restarter.submit(restart_rabbitmq_node)
                with transaction.atomic():
                    event = publish(topic=TOPIC, data={"n": n}, tenant_id=tenant.id)
                published.append(event.id)
            published_in = time.monotonic() - started
            assert restart is not None
            outage = restart.result(timeout=120)
            refused = len(logs.find(event="event_send_failed_relay_will_retry"))

            # ...and the relay sent as beat would, until the outbox is empty
            relay_runs = 0
            deadline = time.monotonic() + DRILL_TIMEOUT
            while len(notified_events(tenant.id)) < EVENTS or pending_in_outbox(tenant.id):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"After {DRILL_TIMEOUT}s, {len(notified_events(tenant.id))} of {EVENTS}"
                        f" events are notified, {pending_in_outbox(tenant.id)} still pending."
                    )
                outbox_relay_task.delay()
                relay_runs += 1
                time.sleep(RELAY_EVERY_SECONDS)
            finished_in = time.monotonic() - started

            # Then the broker confirmed every publish of the test and of the worker
            publisher_channels = vhost.channels_of(publisher_name)
            worker_channels = vhost.channels_of(worker_name)
            records = worker.records()  # before the stop, whose last words are not JSON
    finally:
        conf.task_default_queue = previous_queue
        worker.stop()

    # ...nothing is lost, and each effect exists once
    notified = notified_events(tenant.id)
    assert set(notified) == set(published)
    assert set(notified.values()) == {1}
    with outcome():
        assert set(
            Notification.objects.filter(tenant_id=tenant.id).values_list("user_id", flat=True)
        ) == {owner.id}
    assert pending_in_outbox(tenant.id) == 0
    assert publisher_channels, "the test's publisher has no channel left open"
    assert all(c["confirm"] and c["messages_unconfirmed"] == 0 for c in publisher_channels)
    assert any(c["confirm"] for c in worker_channels), worker_channels
    assert all(c["messages_unconfirmed"] == 0 for c in worker_channels)
    # ...the worker lived through it: it lost the broker and connected again
    lost = [r for r in records if "onnection to broker lost" in str(r.get("event"))]
    assert lost, "the worker never saw the broker go"

    succeeded = Counter(
        str(r["event"]).split("[", 1)[0].removeprefix("Task ")
        for r in records
        if r.get("logger") == "celery.app.trace" and "succeeded" in str(r.get("event"))
    )
    dispatches = succeeded[event_dispatch_task.name]
    relayed = sum(r.get("sent", 0) for r in records if r.get("event") == "outbox_relayed")
    print(
        f"\nRabbitMQ restart drill: {EVENTS} events published in {published_in:.1f}s;"
        f" node down {outage:.1f}s; all {EVENTS} notified, once each, after {finished_in:.1f}s;"
        f" {dispatches} dispatch runs ({dispatches - EVENTS} beyond one an event),"
        f" {len(matching(records, event='event_already_dispatched'))} found their event done,"
        f" {relayed} events relayed in {relay_runs} relay runs;"
        f" sends refused during the outage: {refused} by the publisher, and"
        f" {len(matching(records, event='event_kept_for_retry'))} events kept by a failed handler."
    )
