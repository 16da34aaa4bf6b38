"""Reads on notifications. Always the caller's own, in the tenant in context."""

import fnmatch
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from kernel.events import topics
from kernel.permissions import Perm
from kernel.tenancy.models import Membership, Role
from notifications.models import Notification, NotificationPreference

# One resume answers at most this many; the client resumes again after the last one.
RESUME_BATCH = 500


def notification_list(
    *,
    user_id,
    unread: bool | None = None,
    topic: str | None = None,
    hidden_topics: Iterable[str] = (),
):
    """The member's notifications, newest first, without those of `hidden_topics` (the topics the
    caller may no longer read)."""
    queryset = Notification.objects.for_user(user_id).exclude(topic__in=list(hidden_topics))
    queryset = queryset.order_by("-seq")
    if unread:
        queryset = queryset.unread()
    if topic:
        queryset = queryset.filter(topic=topic)
    return queryset


def notification_get(*, user_id, notification_id: uuid.UUID) -> Notification | None:
    return Notification.objects.for_user(user_id).filter(id=notification_id).first()


def unread_count(*, user_id, hidden_topics: Iterable[str] = ()) -> int:
    queryset = Notification.objects.for_user(user_id).exclude(topic__in=list(hidden_topics))
    return queryset.unread().count()


def notifications_after(*, user_id, after: Notification | None) -> QuerySet[Notification]:
    """What `resume` replays: after a known notification, or every one not yet acknowledged."""
    queryset = Notification.objects.for_user(user_id)
    if after is not None:
        queryset = queryset.filter(seq__gt=after.seq)
    else:
        queryset = queryset.filter(delivered_at__isnull=True)
    return queryset.order_by("seq")[:RESUME_BATCH]


def preferred_topics(*, user_id) -> list[str] | None:
    """The member's topic patterns; None means every topic."""
    preference = NotificationPreference.objects.filter(user_id=user_id).first()
    return None if preference is None else list(preference.topics)


def recipients_of(*, topic: str, exclude_user_id=None) -> list:
    """Members of the tenant who hold notifications.read and the permission the topic needs to
    be read (catalog.read for catalog.*), through any of their roles, and whose preferences take
    `topic`."""
    role_codes = {
        role_id: frozenset(codes)
        for role_id, codes in Role.objects.values_list("id", "permissions")
    }
    held: dict[Any, set[str]] = defaultdict(set)
    for user_id, role_id in Membership.objects.filter(roles__isnull=False).values_list(
        "user_id", "roles"
    ):
        held[user_id] |= role_codes.get(role_id, frozenset())
    user_ids = {
        user_id
        for user_id, codes in held.items()
        if Perm.NOTIFICATIONS_READ in codes and topics.readable(topic, codes)
    }
    user_ids.discard(exclude_user_id)
    muted = {
        preference.user_id
        for preference in NotificationPreference.objects.filter(user_id__in=user_ids)
        if not topic_matches(topic, preference.topics)
    }
    return sorted(user_ids - muted, key=str)


def topic_matches(topic: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)
