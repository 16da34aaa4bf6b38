"""Domain events become notifications: every topic, for every member who wants it."""

from kernel import events


def queue_notifications(event: events.Event) -> None:
    # Its own task, retried on failure: a lost fan-out would be a lost notification.
    from notifications.tasks import notifications_fan_out_task

    notifications_fan_out_task.delay(event=event.as_message())


def register() -> None:
    events.subscribe("*", queue_notifications)
