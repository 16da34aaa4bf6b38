"""Domain events become notifications: every topic meant for people (not the audit log's
stream, `audit.event`), for every member who wants it."""

from kernel import events
from kernel.events import topics
from notifications.tasks import notifications_fan_out_task


def queue_notifications(event: events.Event) -> None:
    if not topics.notified(event.topic):
        return  # for machines (webhooks) only: not even a task
    # Its own task, retried on failure: a lost fan-out would be a lost notification.
    notifications_fan_out_task.delay(event=event.as_message())


def register() -> None:
    events.subscribe("*", queue_notifications)
