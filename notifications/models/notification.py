"""Notifications: stored per recipient before any push, so none is lost to a closed socket."""

import uuid

from django.conf import settings
from django.db import models

from kernel.tenancy.models import TenantOwnedModel, TenantScopedManager, TenantScopedQuerySet


class NotificationQuerySet(TenantScopedQuerySet):
    def for_user(self, user_id):
        return self.filter(user_id=user_id)

    def unread(self):
        return self.filter(read_at__isnull=True)


class Notification(TenantOwnedModel):
    # Internal order of creation, for `resume`; never exposed (ids are opaque UUIDs).
    seq = models.BigAutoField(primary_key=True)
    # Unique per tenant (constraint below), not globally: every look-up by id is made in the
    # tenant's scope, and a uniqueness that leaves out tenant_id could not be enforced once the
    # table is distributed by tenant (docs/scale-out.md, "Citus: the distribution plan").
    id = models.UUIDField(default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    topic = models.CharField(max_length=100)
    data = models.JSONField(default=dict)
    # The domain event this notification came from: fan-out may run twice, a user gets one.
    event_id = models.CharField(max_length=64)
    request_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager.from_queryset(NotificationQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "id"], name="notification_id_unique_per_tenant"
            ),
            models.UniqueConstraint(
                fields=["tenant", "user", "event_id"], name="notification_once_per_event"
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "user", "seq"], name="notification_user_seq"),
            models.Index(
                fields=["tenant", "user", "seq"],
                condition=models.Q(read_at__isnull=True),
                name="notification_user_unread",
            ),
            # The retention job: each tenant's notifications older than its cut-off.
            models.Index(fields=["tenant", "created_at"], name="notification_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} → {self.user_id}"


class NotificationPreference(TenantOwnedModel):
    """The topics a member wants; no row means every topic."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # Topic patterns (`catalog.product.*`); an empty list mutes everything.
    topics = models.JSONField(default=list)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="notification_pref_per_user"),
        ]

    def __str__(self) -> str:
        return f"preferences of {self.user_id}"
