"""The Celery settings that depend on the broker: RabbitMQ (`amqp://`), the production broker, or
Redis (`redis://`), supported with the behaviour it always had. docs/scale-out.md, "Celery on
RabbitMQ", says why each one.

Given under Celery's own (lower-case) names: config/settings/base.py sets each as CELERY_*, and a
test that points the running app at another broker applies the same (tests/fixtures/brokers.py).
What does not depend on the broker (late acknowledgement, requeue on a lost worker, a prefetch
of one task per process, retrying the connection at start-up) is in base.py for both.
"""

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


def broker_is_amqp(url: str) -> bool:
    return urlsplit(url).scheme.lower() in AMQP_SCHEMES


def celery_broker_conf(url: str, transport_options: Mapping[str, Any] | None = None) -> dict:
    """Celery's settings for the broker at `url`; `transport_options` (the operator's JSON)
    are laid over this broker's defaults."""
    overrides = dict(transport_options or {})
    if broker_is_amqp(url):
        return {
            # Quorum queues: replicated (Raft) and always durable, so a message the broker
            # confirmed survives a node's restart, and the loss of a minority of a cluster. Every
            # queue: the default one, and those created from a name (WEBHOOKS_QUEUE, a route).
            "task_default_queue_type": "quorum",
            "task_create_missing_queue_type": "quorum",
            # A countdown (webhook retries, the breaker) waits in RabbitMQ's native delayed
            # delivery (the celery_delayed_* exchanges and queues the worker declares), which only
            # topic exchanges can join. On a direct exchange the worker would hold the message
            # until its ETA, and with quorum queues' fixed prefetch every such message takes a
            # slot: a few webhook retries would stop the worker.
            "task_default_exchange_type": "topic",
            "task_create_missing_queue_exchange_type": "topic",
            # Quorum queues refuse a channel-wide (global) prefetch: Celery detects them and sets
            # the prefetch per consumer.
            "worker_detect_quorum_queues": True,
            # A task running when the connection drops can no longer be acknowledged (its delivery
            # tag belonged to the dead channel) and RabbitMQ hands its message to another worker
            # at once: stop it, rather than have two runs of it at the same time.
            "worker_cancel_long_running_tasks_on_connection_loss": True,
            # Publisher confirms: a send returns once the broker has the message (in a quorum
            # queue: a majority of its replicas), and raises otherwise; the outbox keeps what
            # raised for the relay. Without them a message written to a connection the broker is
            # closing is lost without a word.
            "broker_transport_options": {"confirm_publish": True, **overrides},
        }
    return {
        # Redis (and memory://): Celery's defaults, as before.
        "task_default_queue_type": "classic",
        "task_create_missing_queue_type": "classic",
        "task_default_exchange_type": "direct",
        "task_create_missing_queue_exchange_type": None,
        "worker_detect_quorum_queues": True,
        # A running task's message stays in kombu's `unacked` hash across a reconnection, and
        # its acknowledgement still lands: nothing to cancel.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A message a worker took and never acknowledged (it died) goes back to its queue after
        # `visibility_timeout` seconds. Keep that longer than the longest countdown a task is
        # scheduled with (WEBHOOK_RETRY_MAX_DELAY, the breaker's reset), or a waiting message is
        # handed to a second worker too.
        "broker_transport_options": {"visibility_timeout": 3600, **overrides},
    }
