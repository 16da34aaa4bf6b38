"""Webhook endpoints of a tenant, and one delivery row per (endpoint, event).

A delivery row exists before any request is sent and keeps its state through every retry, so
that nothing depends on a task message surviving: the deliveries list shows what is pending,
what failed and what was given up on (`dead`), and a dead delivery can be sent again.
"""

import uuid

from django.db import models
from django.utils import timezone

from kernel.tenancy.models import TenantOwnedModel, TenantScopedManager, TenantScopedQuerySet


class WebhookEndpointQuerySet(TenantScopedQuerySet):
    def active(self):
        return self.filter(is_active=True)


class WebhookEndpoint(TenantOwnedModel):
    class CircuitState(models.TextChoices):
        CLOSED = "closed"  # deliveries are attempted
        OPEN = "open"  # deliveries wait until the reset time
        HALF_OPEN = "half_open"  # the reset time has passed: the next attempt is a probe

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.CharField(max_length=2048)
    # Topic patterns, fnmatch-style: "catalog.product.*", "members.invited", "*".
    topics = models.JSONField(default=list)
    # `whsec_<base64 of 32 random bytes>`. Kept readable because every delivery is signed with
    # it; it is shown to the client once, at creation, and never serialized again
    # (docs/webhooks.md, "Secrets").
    secret = models.CharField(max_length=128, editable=False)
    is_active = models.BooleanField(default=True)
    # The circuit breaker (webhooks/breaker.py) lives on the row: every worker
    # sees the same state, and the change from open to probing is one conditional UPDATE.
    consecutive_failures = models.PositiveIntegerField(default=0)
    circuit_open_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedManager.from_queryset(WebhookEndpointQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        # The table it had when webhooks were part of notifications.
        db_table = "notifications_webhookendpoint"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at", "id"], name="webhook_endpoint_created"),
        ]

    def __str__(self) -> str:
        return f"webhook {self.id}"

    @property
    def circuit_state(self) -> str:
        if self.circuit_open_until is None:
            return self.CircuitState.CLOSED
        if self.circuit_open_until > timezone.now():
            return self.CircuitState.OPEN
        return self.CircuitState.HALF_OPEN


class WebhookDeliveryQuerySet(TenantScopedQuerySet):
    def for_endpoint(self, endpoint_id):
        return self.filter(endpoint_id=endpoint_id)


class WebhookDelivery(TenantOwnedModel):
    class Status(models.TextChoices):
        PENDING = "pending"  # not attempted yet (or re-queued by a redelivery)
        SUCCEEDED = "succeeded"  # the receiver answered 2xx
        FAILED = "failed"  # the last attempt failed; another one is scheduled
        DEAD = "dead"  # given up on after the last attempt; can be redelivered

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    # The domain event's id, sent as `webhook-id`: the same on every retry and redelivery, so
    # that receivers can drop duplicates.
    event_id = models.CharField(max_length=64)
    topic = models.CharField(max_length=100)
    # The exact body sent, as text: every attempt sends (and signs) the same bytes.
    payload = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # A short note of our own making; never the receiver's response body.
    last_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedManager.from_queryset(WebhookDeliveryQuerySet)()

    class Meta(TenantOwnedModel.Meta):
        db_table = "notifications_webhookdelivery"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "endpoint", "event_id"], name="webhook_delivery_once_per_event"
            ),
        ]
        indexes = [
            models.Index(
                fields=["tenant", "endpoint", "created_at", "id"], name="webhook_delivery_list"
            ),
            models.Index(
                fields=["tenant", "endpoint", "status", "created_at", "id"],
                name="webhook_delivery_by_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} → {self.endpoint_id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.DEAD)
