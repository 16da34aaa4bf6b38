"""Domain events become notifications: every topic, for every member who wants it."""

from kernel import events
from notifications.tasks import notifications_fan_out_task


def queue_notifications(event: events.Event) -> None:
    # Its own task, retried on failure: a lost fan-out would be a lost notification.
    notifications_fan_out_task.delay(event=event.as_message())


def register() -> None:
    events.subscribe("*", queue_notifications)
