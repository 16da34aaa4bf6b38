"""Webhook tasks: thin, they call the services and the delivery code. All run on the `webhooks`
queue (setting WEBHOOKS_QUEUE), so that a flood of slow receivers cannot hold up other jobs."""

from typing import Any

from celery import shared_task
from django.conf import settings

from kernel.events import Event
from notifications.webhooks import delivery, services


def route_webhook_tasks(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> dict | None:
    """Celery router (CELERY_TASK_ROUTES): this module's tasks go to the webhooks queue.

    A function rather than a fixed mapping, so that the queue is read from the settings when a
    task is sent. A retry goes back to the queue its message came from.
    """
    if name.startswith("notifications.webhooks."):
        return {"queue": settings.WEBHOOKS_QUEUE}
    return None


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=8)
def webhook_fan_out_task(*, event: dict[str, Any]) -> int:
    """The deliveries of one event, in its tenant (it travels with the task). Idempotent."""
    return len(services.webhook_deliveries_create_for_event(event=Event.from_message(event)))


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def webhook_deliver_task(self, *, delivery_id: str, skip_breaker: bool = False) -> str:
    """One attempt at a delivery; reschedules itself while the delivery has attempts left.

    Acknowledged only once it has run: a worker that dies in the middle of a POST leaves the
    message to be delivered to another worker, which sends it again under the same webhook-id.
    The attempts are counted on the delivery row, not by Celery (`max_retries=None`), because
    waiting for an open circuit breaker is not an attempt.
    """
    outcome = delivery.attempt(delivery_id, skip_breaker=skip_breaker)
    # Inline (eager) runs, the embedded default without a broker, would retry at once with no
    # countdown and, against an open breaker, without end: they make one attempt, and the
    # delivery shows what happened.
    if outcome.retry_in is not None and not self.request.is_eager:
        raise self.retry(countdown=outcome.retry_in, kwargs={"delivery_id": delivery_id})
    return outcome.status
