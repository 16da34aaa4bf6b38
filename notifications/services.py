"""Writes on notifications: fan-out of domain events, reading, acknowledging, preferences,
pruning."""

import uuid

from django.db import connection, transaction
from django.utils import timezone

from kernel import retention
from kernel.context import operator_scope
from kernel.events import Event
from kernel.locks import lock_for_transaction
from notifications import realtime
from notifications.models import Notification, NotificationPreference
from notifications.selectors import recipients_of


def notification_payload(notification: Notification) -> dict:
    return {
        "id": str(notification.id),
        "topic": notification.topic,
        "data": notification.data,
        "created_at": notification.created_at.isoformat().replace("+00:00", "Z"),
    }


@transaction.atomic
def notifications_fan_out(*, event: Event) -> int:
    """One stored notification per recipient, then a push to their sockets after commit.

    Stored before pushed: a socket that is closed, slow or on another server process loses
    nothing, the notification waits for `resume` or the REST list. Running twice for the same
    event (a retried task, the outbox relay) creates and pushes nothing new: (tenant, user,
    event) is unique, and two runs at the same time take turns. Without the lock the second
    would push every notification again: its insert waits for the first's rows, skips them once
    they commit, and its read then finds them as if it had made them.
    """
    lock_for_transaction(f"notifications-fan-out:{event.id}")
    actor_id = event.actor.get("user_id")
    recipients = set(
        recipients_of(topic=event.topic, exclude_user_id=uuid.UUID(actor_id) if actor_id else None)
    )
    # A retry finds some done already: only the rest are created and pushed.
    recipients -= set(
        Notification.objects.filter(event_id=event.id).values_list("user_id", flat=True)
    )
    if not recipients:
        return 0
    Notification.objects.bulk_create(
        [
            Notification(
                user_id=user_id,
                topic=event.topic,
                data=event.data,
                event_id=event.id,
                request_id=event.request_id or "",
            )
            for user_id in recipients
        ],
        ignore_conflicts=True,
    )
    created = list(
        Notification.objects.filter(event_id=event.id, user_id__in=recipients).order_by("seq")
    )
    pushes = [
        (notification.user_id, notification.seq, notification_payload(notification))
        for notification in created
    ]
    tenant_id = event.tenant_id
    transaction.on_commit(lambda: realtime.push_notifications(tenant_id, pushes))
    return len(created)


def notification_mark_read(*, notification: Notification) -> Notification:
    if notification.read_at is None:
        notification.read_at = timezone.now()
        notification.save(update_fields=["read_at"])
    return notification


def notifications_mark_all_read(*, user_id) -> int:
    return Notification.objects.for_user(user_id).unread().update(read_at=timezone.now())


def notification_acknowledge(*, user_id, notification_id: uuid.UUID) -> bool:
    """The client has it (a WebSocket `ack`): `resume` without `after` skips it from now on.

    False when the caller has no such notification.
    """
    own = Notification.objects.for_user(user_id).filter(id=notification_id)
    if not own.exists():
        return False
    own.filter(delivered_at__isnull=True).update(delivered_at=timezone.now())
    return True


def preferences_set(*, user_id, topics: list[str]) -> NotificationPreference:
    preference, _ = NotificationPreference.objects.update_or_create(
        user_id=user_id, defaults={"topics": sorted(set(topics))}
    )
    return preference


def preferences_clear(*, user_id) -> None:
    """Back to the default: every topic."""
    NotificationPreference.objects.filter(user_id=user_id).delete()


def notifications_prune() -> int:
    """Delete each tenant's notifications older than its retention (kernel/retention.py: its
    plan's, or less if it chose less). Returns how many were deleted (beat, hourly).

    Per batch of tenants, one query reads their cut-offs and one statement deletes what is past
    them; read or not, acknowledged or not, a notification past its tenant's retention goes.
    """
    deleted_count = 0
    for batch in retention.cutoff_batches(retention.NOTIFICATION):
        with operator_scope("pruning tenants' notifications past their retention"):
            # No signals or cascades hang on a notification: a plain DELETE, no rows fetched.
            deleted_count += Notification.objects.filter(batch.q())._raw_delete(connection.alias)
    return deleted_count
