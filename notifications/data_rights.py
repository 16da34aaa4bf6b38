"""What notifications contributes to the data rights: to exports (kernel/exports/), the tenant's
notifications (each with the member it was for) and a person's own notifications and
preferences; to a person's erasure (kernel/erasure.py), theirs deleted and their mentions in
others' notifications pseudonymised."""

import uuid
from collections.abc import Iterator

from kernel.erasure import ErasedPerson
from notifications.models import Notification, NotificationPreference

_FIELDS = ("id", "topic", "data", "created_at", "read_at")


def notification_rows() -> Iterator[dict]:
    notifications = Notification.objects.order_by("seq").values("user_id", *_FIELDS)
    return notifications.iterator(chunk_size=2000)


def personal_notification_rows(user_id: uuid.UUID) -> Iterator[dict]:
    notifications = Notification.objects.filter(user_id=user_id).order_by("seq").values(*_FIELDS)
    return notifications.iterator(chunk_size=2000)


def personal_preference_rows(user_id: uuid.UUID) -> Iterator[dict]:
    return NotificationPreference.objects.filter(user_id=user_id).values("topics", "updated_at")


def erase_person(person: ErasedPerson) -> None:
    Notification.objects.filter(user_id=person.user_id).delete()
    NotificationPreference.objects.filter(user_id=person.user_id).delete()
    mentioning = Notification.objects.filter(data__icontains=person.email)
    for notification in mentioning.only("seq", "data").iterator(chunk_size=500):
        Notification.objects.filter(seq=notification.seq).update(
            data=person.scrub(notification.data)
        )
