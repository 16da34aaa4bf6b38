"""Writes on webhook endpoints and deliveries, for the tenant in context. Keyword-only arguments.

- An endpoint's URL is checked against the SSRF rules (kernel/outbound.py) whenever it is set,
  here, so that every way in (the API, a command, the shell) is held to them; the delivery
  checks again.
- The fan-out turns a domain event into one delivery row per matching endpoint and queues a
  task for each after commit. It is idempotent: (tenant, endpoint, event) is unique, and running
  it again for the same event (a retried task) creates nothing new.
- The tenant's audit log is streamed (`audit.event`, kernel/audit_chain.py) while some active
  endpoint takes that topic: every write that could change that is followed, in its
  transaction, by `_stream_audit_log_if_wanted()`.
- Redelivery puts a finished delivery (succeeded or dead) back in the queue with its attempts
  reset, under the same `webhook-id`; also one whose task is evidently lost (overdue by
  OVERDUE_AFTER: the broker was down when it was queued, or a process died between its commit
  and its queueing).
"""

import datetime
import json
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from kernel import audit, audit_chain, outbound
from kernel.events import Event
from kernel.problems import InvalidInput, Problem, ProblemType
from webhooks import breaker, selectors, signing
from webhooks.actions import WebhooksAction
from webhooks.delivery import webhook_deliver_task
from webhooks.models import WebhookDelivery, WebhookEndpoint

UPDATABLE_FIELDS = ("url", "topics", "is_active")
# A delivery still pending or failed this long after its next attempt was due has no task any
# more: it may be redelivered. Far longer than any queue should take to reach it.
OVERDUE_AFTER = datetime.timedelta(minutes=15)


@transaction.atomic
def webhook_endpoint_create(
    *, url: str, topics: Sequence[str], is_active: bool = True
) -> WebhookEndpoint:
    """A new endpoint with a new secret; the caller shows `endpoint.secret` once, now."""
    _check_url(url)
    endpoint = WebhookEndpoint.objects.create(
        url=url,
        topics=_unique(topics),
        is_active=is_active,
        secret=signing.secret_generate(),
    )
    # Before the event of its creation: a stream's first delivery is the subscription itself.
    if _takes_audit_log(endpoint):
        _stream_audit_log_if_wanted(endpoint)
    _audit(WebhooksAction.WEBHOOK_CREATED, endpoint, audit.created(_audited(endpoint)))
    return endpoint


@transaction.atomic
def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(f"Not updatable: {sorted(unknown)}")
    if "url" in changes:
        _check_url(changes["url"])
    if "topics" in changes:
        changes["topics"] = _unique(changes["topics"])
    # A new address, or an endpoint switched back on, deserves a fresh start: the failures the
    # breaker counted were about what was there before.
    fresh_start = ("url" in changes and changes["url"] != endpoint.url) or (
        changes.get("is_active") is True and not endpoint.is_active
    )
    before = _audited(endpoint)
    took_audit_log = _takes_audit_log(endpoint)
    for name, value in changes.items():
        setattr(endpoint, name, value)
    endpoint.save(update_fields=[*changes, "updated_at"])
    if took_audit_log or _takes_audit_log(endpoint):
        _stream_audit_log_if_wanted(endpoint)
    _audit(WebhooksAction.WEBHOOK_UPDATED, endpoint, audit.diff(before, _audited(endpoint)))
    if fresh_start:
        breaker.reset(endpoint.pk)
        endpoint.refresh_from_db(fields=["consecutive_failures", "circuit_open_until"])
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    # Its deliveries go with it; a task already queued for one finds nothing and stops.
    _audit(WebhooksAction.WEBHOOK_DELETED, endpoint, audit.deleted(_audited(endpoint)))
    took_audit_log = _takes_audit_log(endpoint)
    endpoint.delete()
    if took_audit_log:
        _stream_audit_log_if_wanted(endpoint)


def _takes_audit_log(endpoint: WebhookEndpoint) -> bool:
    return endpoint.is_active and selectors.topic_matches(
        endpoint.topics, audit_chain.AuditTopic.EVENT
    )


def _stream_audit_log_if_wanted(endpoint: WebhookEndpoint) -> None:
    """Stream the tenant's audit log while one of its active endpoints takes `audit.event`.

    The endpoints are read once the chain head is locked (`set_streamed`): of two changes at
    once, the second decides on what the first committed. An endpoint that neither took the
    topic nor takes it now changes nothing, and is not asked about.
    """
    audit_chain.set_streamed(
        tenant_id=endpoint.tenant_id,
        wanted=lambda: bool(
            selectors.webhook_endpoints_for_topic(topic=audit_chain.AuditTopic.EVENT)
        ),
    )


def _audited(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """What the audit log keeps of an endpoint: where its data goes, never its secret."""
    return {"url": endpoint.url, "topics": list(endpoint.topics), "is_active": endpoint.is_active}


def _audit(action: str, endpoint: WebhookEndpoint, changes: dict[str, Any]) -> None:
    audit.record(
        tenant_id=endpoint.tenant_id,
        action=action,
        target_type="webhook_endpoint",
        target_id=endpoint.pk,
        changes=changes,
    )


# --- fan-out -----------------------------------------------------------------------------------


def webhook_body(event: Event) -> str:
    """The exact body every attempt sends: `{"type", "timestamp", "data"}`, compact JSON."""
    occurred_at = datetime.datetime.fromisoformat(event.occurred_at).astimezone(datetime.UTC)
    body = {
        "type": event.topic,
        "timestamp": occurred_at.isoformat().replace("+00:00", "Z"),
        "data": event.data,
    }
    return json.dumps(body, separators=(",", ":"))


@transaction.atomic
def webhook_deliveries_create_for_event(*, event: Event) -> list[WebhookDelivery]:
    """A delivery per active endpoint of the tenant whose topics match; queued after commit.

    Returns the deliveries queued: those created now, and any that an earlier run created but
    never got to attempt (it may have stopped between its commit and its queueing).
    """
    endpoints = selectors.webhook_endpoints_for_topic(topic=event.topic)
    if not endpoints:
        return []
    body = webhook_body(event)
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                endpoint=endpoint,
                event_id=event.id,
                topic=event.topic,
                payload=body,
                next_attempt_at=timezone.now(),
            )
            for endpoint in endpoints
        ],
        ignore_conflicts=True,
    )
    deliveries = list(
        selectors.webhook_deliveries_of_event(event_id=event.id).filter(
            endpoint__in=endpoints, status=WebhookDelivery.Status.PENDING, attempts=0
        )
    )
    for delivery in deliveries:
        _queue_on_commit(delivery)
    return deliveries


# --- redelivery --------------------------------------------------------------------------------


@transaction.atomic
def webhook_delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again, now, with its attempts reset.

    A finished one (succeeded or dead), or one whose task is evidently lost (overdue). Not one
    that is still scheduled: its task would send it a second time. The first attempt skips the
    circuit breaker (someone asked for it, typically once the receiver is back) and serves as
    its probe.
    """
    if not delivery.endpoint.is_active:
        raise Problem(
            ProblemType.CONFLICT, detail="The endpoint is disabled: enable it before redelivering."
        )
    now = timezone.now()
    finished = Q(status__in=[WebhookDelivery.Status.SUCCEEDED, WebhookDelivery.Status.DEAD])
    overdue = Q(next_attempt_at__lt=now - OVERDUE_AFTER)
    # Conditional, so that of two concurrent requests only one queues a task.
    queued = (
        WebhookDelivery.objects.filter(pk=delivery.pk)
        .filter(finished | overdue)
        .update(
            status=WebhookDelivery.Status.PENDING,
            attempts=0,
            next_attempt_at=now,
            last_status_code=None,
            last_error="",
            delivered_at=None,
        )
    )
    if not queued:
        raise Problem(
            ProblemType.CONFLICT,
            detail="This delivery is still scheduled for another attempt; it can be redelivered "
            "once it has succeeded or is dead (or if that attempt is 15 minutes overdue).",
        )
    delivery.refresh_from_db()
    audit.record(
        tenant_id=delivery.tenant_id,
        action=WebhooksAction.DELIVERY_REDELIVERED,
        target_type="webhook_delivery",
        target_id=delivery.pk,
        changes={
            "endpoint": [None, str(delivery.endpoint_id)],
            "event_id": [None, delivery.event_id],
        },
    )
    _queue_on_commit(delivery, skip_breaker=True)
    return delivery


# --- helpers -----------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    try:
        outbound.check_url(url, allow_private=selectors.private_targets_allowed())
    except outbound.UnsafeTarget as exc:
        raise InvalidInput({"url": [str(exc)]}, code="invalid") from exc


def _unique(topics: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(topics))


def _queue_on_commit(delivery: WebhookDelivery, *, skip_breaker: bool = False) -> None:
    # The task is queued only once the row it names is committed, or a worker could look for it
    # before it exists.
    kwargs: dict[str, Any] = {"delivery_id": str(delivery.pk)}
    if skip_breaker:
        kwargs["skip_breaker"] = True
    # robust: the rows are committed by then, and a broker outage must not turn that into an
    # error; the delivery stays pending, overdue after a while, and can then be redelivered.
    transaction.on_commit(lambda: webhook_deliver_task.delay(**kwargs), robust=True)
