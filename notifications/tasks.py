"""Background jobs of notifications: thin, they call the services."""

from celery import shared_task

from kernel.events import Event
from notifications.services import notifications_fan_out, notifications_prune


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=8)
def notifications_fan_out_task(*, event: dict) -> int:
    """Runs in the event's tenant (it travels with the task); idempotent, so retries are safe."""
    return notifications_fan_out(event=Event.from_message(event))


@shared_task(name="notifications.tasks.notifications_prune_task")
def notifications_prune_task() -> int:
    """Delete each tenant's notifications past its retention (beat, hourly); enters the
    operator scope itself: the scope never travels in a task message."""
    return notifications_prune()
