"""Celery on RabbitMQ, as config/settings/brokers.py sets it up, seen from the broker: quorum
queues on topic exchanges, a prefetch of one, publisher confirms, countdowns that wait in the
broker rather than in the worker, and the queue depth /metrics reads from it.

Each test runs on this test process's virtual host (tests/fixtures/brokers.py); the drills that
run on both brokers are elsewhere (the `broker` fixture), the restart drill is
test_rabbitmq_restart.py.
"""

import datetime
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings

from config.celery import app as celery_app
from config.settings.brokers import celery_broker_conf
from tests.celery_tasks import log_context_task
from tests.fixtures.brokers import Broker, VirtualHost, in_use
from tests.fixtures.celery_worker import CeleryWorker, worker_environment
from tests.helpers import sent_through_the_broker

NEVER_CONSUMED = "tests.never_consumed"


@pytest.fixture
def rabbitmq(rabbitmq_vhost: VirtualHost) -> Iterator[Broker]:
    broker = Broker("rabbitmq", rabbitmq_vhost.url)
    with in_use(broker):
        yield broker


def ran_at(worker: CeleryWorker, marker: str) -> float:
    record = worker.wait_for(
        lambda r: r.get("event") == "log_context_task_ran" and r.get("marker") == marker,
        waiting_for=f"the task marked {marker}",
    )
    return timestamp(record)


def timestamp(record: dict) -> float:
    return datetime.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def test_the_app_sets_every_broker_dependent_setting():
    # base.py names each of brokers.py's settings (and a test pointing the app at RabbitMQ
    # applies the same): none is forgotten on the way.
    expected = celery_broker_conf(
        django_settings.CELERY_BROKER_URL, django_settings.CELERY_BROKER_TRANSPORT_OPTIONS
    )

    assert {key: celery_app.conf[key] for key in expected} == expected


@pytest.mark.django_db(transaction=True)
def test_rabbitmq_quorum_queues_one_message_at_a_time_countdowns_wait_in_the_broker(
    rabbitmq: Broker, rabbitmq_vhost: VirtualHost
):
    queue = f"tests-rabbitmq-{uuid.uuid4().hex[:12]}"
    publisher = f"{queue}-publisher"
    worker = CeleryWorker(
        queue=queue,
        env={**worker_environment(), **rabbitmq.worker_env(), "CELERY_TASK_DEFAULT_QUEUE": queue},
    )
    worker.start()
    try:
        with (
            sent_through_the_broker(),
            rabbitmq.publishing(client_properties={"connection_name": publisher}),
        ):
            # When a task is sent with a countdown, one with a countdown under a second, and one
            # at once, in that order
            sent = time.time()
            delayed = log_context_task.apply_async(("later",), countdown=2, queue=queue)
            log_context_task.apply_async(("sub-second",), countdown=0.3, queue=queue)
            log_context_task.apply_async(("now",), queue=queue)

            # Then the one sent at once runs first: the others do not hold the worker
            now, sub_second, later = (ran_at(worker, m) for m in ("now", "sub-second", "later"))
            assert now < sub_second < later
            # ...the sub-second countdown waited a whole second (RabbitMQ counts seconds; Celery
            # alone would have refused it), the other its two
            assert sub_second - sent >= 1.0
            assert later - sent >= 2.0
            # ...and they waited in the broker: the worker received the message when it was due
            (received,) = [
                r
                for r in worker.records()
                if r.get("logger") == "celery.worker.strategy"
                and f"[{delayed.id}] received" in str(r.get("event"))
            ]
            assert timestamp(received) - sent >= 2.0

            # And the broker says: a durable quorum queue, consumed with a prefetch of one (one
            # solo process, multiplier 1), published to with confirms
            queues = {
                q["name"]: q for q in rabbitmq_vhost.rows("queues", "name", "type", "durable")
            }
            assert (queues[queue]["type"], queues[queue]["durable"]) == ("quorum", True)
            consumers = [
                c
                for c in rabbitmq_vhost.rows("consumers", "queue_name", "prefetch_count")
                if c["queue_name"] == queue
            ]
            assert [c["prefetch_count"] for c in consumers] == [1]
            channels = rabbitmq_vhost.channels_of(publisher)
            assert channels
            assert all(c["confirm"] and c["messages_unconfirmed"] == 0 for c in channels)
    finally:
        worker.stop()


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        if dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return None


@pytest.mark.django_db
def test_metrics_read_a_rabbitmq_queue_s_depth(client, settings, rabbitmq: Broker):
    waiting, missing = (f"tests-depth-{uuid.uuid4().hex[:12]}" for _ in range(2))
    settings.METRICS_QUEUES = [missing, waiting]
    depth, age = (
        "tenantapi_celery_queue_length",
        "tenantapi_celery_queue_oldest_message_age_seconds",
    )
    with rabbitmq.publishing(), sent_through_the_broker():
        # When three tasks wait in a queue no worker consumes, and another queue does not exist
        for _ in range(3):
            celery_app.send_task(NEVER_CONSUMED, queue=waiting)

        text = scrape(client)

    # Then /metrics reads the depth from the broker (a passive declare), and no age, which
    # RabbitMQ does not tell without consuming; a queue nobody declared is empty
    assert sample(text, depth, queue=waiting) == 3
    assert sample(text, age, queue=waiting) is None
    assert sample(text, depth, queue=missing) == 0
    assert sample(text, age, queue=missing) == 0
