"""Webhook tasks: thin, they call the services and the delivery code. All run on the `webhooks`
queue (setting WEBHOOKS_QUEUE), so that a flood of slow receivers cannot hold up other jobs."""

from typing import Any

from celery import shared_task
from django.conf import settings

from kernel.events import Event
from webhooks import services
from webhooks.delivery import webhook_deliver_task

# Defined beside the attempt it runs (delivery.py); named here so that the worker's autodiscovery
# of this module registers it.
__all__ = ["route_webhook_tasks", "webhook_deliver_task", "webhook_fan_out_task"]


def route_webhook_tasks(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> dict | None:
    """Celery router (CELERY_TASK_ROUTES): this module's tasks go to the webhooks queue.

    A function rather than a fixed mapping, so that the queue is read from the settings when a
    task is sent. A retry goes back to the queue its message came from.
    """
    # The tasks' names, kept from when webhooks were part of notifications (queued messages
    # carry them).
    if name.startswith("notifications.webhooks."):
        return {"queue": settings.WEBHOOKS_QUEUE}
    return None


# The name queued messages carry (and the queue's router reads): as it was when webhooks were part
# of notifications.
@shared_task(
    name="notifications.webhooks.tasks.webhook_fan_out_task",
    acks_late=True,
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=8,
)
def webhook_fan_out_task(*, event: dict[str, Any]) -> int:
    """The deliveries of one event, in its tenant (it travels with the task). Idempotent."""
    return len(services.webhook_deliveries_create_for_event(event=Event.from_message(event)))
