"""Celery's broker queues as numbers: how many messages wait in each, and how long the oldest one
has waited, so that "the queue is backing up" is a number an alert can read.

Measured when /metrics is scraped (`QueueCollector`), in the API's processes rather than by a task:
a queue backs up when the workers are gone or stuck, which is exactly when a task measuring it
would not run. Every API process reports the same broker state, so that no file of multiprocess
mode sums it; dashboards and rules take `max by (queue)` over the processes that report it.

What each broker tells:

- Redis: kombu keeps a queue as Redis lists, one per priority step (the queue's name, then
  `name\\x06\\x163`, …): publishers push at the head, workers pop at the tail. The depth is the sum
  of their lengths, and the oldest message is at a tail; its age comes from SENT_AT_HEADER, which
  config/celery.py stamps on every message as it is published (kombu's messages carry no time of
  their own). A message published without it (by another producer) has no age: the sample is
  left out rather than guessed. Messages a worker has taken and not acknowledged (prefetched,
  waiting for their ETA or countdown) are in kombu's `unacked` hash, not in the lists, and are
  not counted. The age is measured with this host's clock against the publisher's.
- AMQP (RabbitMQ): the depth from a passive declare (messages ready); no age, which RabbitMQ does
  not tell without consuming: its own exporter (`rabbitmq_queue_head_message_timestamp`) does.
- memory:// (the embedded default) lives inside one process: nothing to measure, no samples.

One round trip per scrape for Redis (a pipeline), bounded by QUEUE_MEASURE_TIMEOUT; a broker that
does not answer leaves the samples out, and `tenantapi_dependency_up{dependency="broker"}` says why.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
from celery import current_app as celery_app
from django.conf import settings
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

# Seconds since the epoch when the message was published; config/celery.py sets it.
SENT_AT_HEADER = "tenantapi_sent_at"
QUEUE_MEASURE_TIMEOUT = 1.0


@dataclass(frozen=True)
class QueueState:
    name: str
    depth: int
    # Seconds the oldest waiting message has waited; 0 when none waits; None when unknown.
    oldest_age: float | None


def stamp_sent_at(headers: dict) -> None:
    """Mark a message about to be published with the time, for its queue's oldest-message age.
    Set again on every publish (a retry is a new wait in the queue)."""
    headers[SENT_AT_HEADER] = time.time()


def measured_queues() -> list[str]:
    return list(dict.fromkeys(settings.METRICS_QUEUES))


def measure_queues(names: list[str]) -> list[QueueState]:
    """The state of each queue in `names`, now, from the configured broker."""
    timeout = QUEUE_MEASURE_TIMEOUT
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    with celery_app.connection_for_read(
        connect_timeout=timeout, transport_options=options
    ) as connection:
        driver = connection.transport.driver_type
        if driver == "memory":
            return []
        connection.ensure_connection(max_retries=0, timeout=timeout)
        channel = connection.default_channel
        if driver == "redis":
            return _measure_redis(channel, names)
        return [_measure_by_declare(channel, name) for name in names]


def _measure_redis(channel: object, names: list[str]) -> list[QueueState]:
    # kombu's own key for each priority step, so that its `sep`, `priority_steps` and
    # `global_keyprefix` transport options are honoured.
    keys = {
        name: [channel._q_for_pri(name, step) for step in channel.priority_steps]  # type: ignore[attr-defined]
        for name in names
    }
    with channel.client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
        for name in names:
            for key in keys[name]:
                pipe.llen(key)
                pipe.lindex(key, -1)  # the tail: the message waiting longest
        replies = iter(pipe.execute())
    now = time.time()
    states = []
    for name in names:
        depth, ages, unknown = 0, [], False
        for _ in keys[name]:
            length, tail = next(replies), next(replies)
            depth += length
            if tail is not None:
                sent_at = _sent_at(tail)
                if sent_at is None:
                    unknown = True
                else:
                    ages.append(max(0.0, now - sent_at))
        oldest = None if unknown else max(ages, default=0.0)
        states.append(QueueState(name=name, depth=depth, oldest_age=oldest))
    return states


def _sent_at(raw: bytes) -> float | None:
    try:
        value = json.loads(raw).get("headers", {}).get(SENT_AT_HEADER)
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _measure_by_declare(channel: object, name: str) -> QueueState:
    try:
        _, depth, _ = channel.queue_declare(queue=name, passive=True)  # type: ignore[attr-defined]
    except Exception as exc:  # a queue nobody declared yet: nothing waits in it
        if getattr(exc, "code", None) != 404:
            raise
        depth = 0
    return QueueState(name=name, depth=depth, oldest_age=0.0 if depth == 0 else None)


class QueueCollector(Collector):
    """`tenantapi_celery_queue_length{queue}` and
    `tenantapi_celery_queue_oldest_message_age_seconds{queue}`, measured at each collection."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        namespace = settings.PROMETHEUS_METRIC_NAMESPACE
        depth = GaugeMetricFamily(
            f"{namespace}_celery_queue_length",
            "Messages waiting in a Celery broker queue (not yet taken by a worker).",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            f"{namespace}_celery_queue_oldest_message_age_seconds",
            "How long the oldest message waiting in a Celery broker queue has waited (0: none).",
            labels=["queue"],
        )
        try:
            states = measure_queues(measured_queues())
        except Exception as exc:
            # A scrape must not fail because the broker does: the other metrics still matter,
            # and the broker's own readiness gauge reports the outage.
            log.warning("queue_metrics_unavailable", error=type(exc).__name__)
            states = []
        for state in states:
            depth.add_metric([state.name], state.depth)
            if state.oldest_age is not None:
                age.add_metric([state.name], state.oldest_age)
        yield depth
        yield age
