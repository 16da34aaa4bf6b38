"""Reads on webhook endpoints and deliveries, for the tenant in context (scoped managers)."""

import fnmatch
import uuid
from collections.abc import Iterable

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404

from webhooks.models import WebhookDelivery, WebhookEndpoint


def private_targets_allowed() -> bool:
    """Whether targets may be private and plain http (WEBHOOKS_ALLOW_PRIVATE_TARGETS: tests and
    local development only): the outbound rules of kernel/outbound.py, lifted."""
    return bool(getattr(settings, "WEBHOOKS_ALLOW_PRIVATE_TARGETS", False))


def topic_matches(patterns: Iterable[str], topic: str) -> bool:
    """The same matching as kernel.events.subscribe: fnmatch-style, case-sensitive."""
    return any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)


def webhook_endpoints_for_topic(*, topic: str) -> list[WebhookEndpoint]:
    """The active endpoints of the tenant in context that subscribe to `topic`."""
    # A tenant has a handful of endpoints: matching the patterns here is simpler than in SQL.
    return [
        endpoint
        for endpoint in WebhookEndpoint.objects.active().order_by("created_at", "id")
        if topic_matches(endpoint.topics, topic)
    ]


def webhook_delivery_list(
    *, endpoint: WebhookEndpoint, status: str | None = None, hidden_topics: Iterable[str] = ()
) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries, without those of `hidden_topics` (which carry data the caller
    may not read: a delivery's payload is the event's data)."""
    deliveries = WebhookDelivery.objects.for_endpoint(endpoint.pk).exclude(
        topic__in=list(hidden_topics)
    )
    if status is not None:
        deliveries = deliveries.filter(status=status)
    return deliveries


def webhook_delivery_get(
    *, endpoint: WebhookEndpoint, delivery_id: uuid.UUID, hidden_topics: Iterable[str] = ()
) -> WebhookDelivery:
    """The endpoint's delivery, or 404: another endpoint's or tenant's is simply not found, nor
    is one of `hidden_topics`."""
    delivery = (
        webhook_delivery_list(endpoint=endpoint, hidden_topics=hidden_topics)
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None:
        raise Http404
    return delivery


def webhook_delivery_for_attempt(*, delivery_id: uuid.UUID | str) -> WebhookDelivery | None:
    """The delivery with its endpoint; None once the endpoint (or the delivery) is gone."""
    return WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()


def webhook_deliveries_of_event(*, event_id: str) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(event_id=event_id)
