"""The transactional outbox: no committed change loses its event to a broker that refused it.

`kernel.events.publish()` stores the event (`outbox_event_store`, one INSERT) in the transaction of
the change it announces, so the row exists exactly when the change committed, and still sends
`event_dispatch_task` right after commit: the fast path, as quick as before. The task runs the
handlers and deletes the row (`outbox_event_dispatch`); a task that finds no row does nothing,
since another run delivered the event already.

A row that is still there after OUTBOX_RELAY_DELAY_SECONDS (the broker refused the send, a worker
lost the message, a handler failed) is sent again by `outbox_relay`, a beat job run every
minute, in batches of OUTBOX_RELAY_BATCH_SIZE. Each send counts an attempt and pushes the next
one further out (doubling, at most an hour apart). A row is never dropped: from
OUTBOX_ALERT_ATTEMPTS on, every further send logs `outbox_event_stuck` at error level, and the
`tenantapi_outbox_stuck` gauge counts such rows, for an operator to look at.

Delivery is therefore at least once: the relay may send an event whose first task is merely
slow. Every handler (`subscribe()`) must be idempotent per event id; see docs/notifications.md.

Events of no tenant (nothing in the code base publishes one) have no tenant-owned row to live
in: they keep the fast path alone, at most once.
"""

import datetime
import json
import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from celery import shared_task
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge

from kernel.context import current_tenant_id, no_tenant, operator_scope, tenant_context
from kernel.events import bus as events
from kernel.events.bus import Event, actor_reference
from kernel.models import OutboxEvent
from kernel.tracing import (
    TENANT_ATTRIBUTE,
    get_request_id,
    resumed_trace,
    set_span_attribute,
    trace_carrier,
)

log = structlog.get_logger(__name__)

RELAY_SCOPE = "outbox relay: re-send the pending domain events of every tenant"
# The longest wait between two sends of one event, however many attempts it has had.
MAX_RELAY_INTERVAL = datetime.timedelta(hours=1)

RELAYED = Counter(
    "outbox_relayed_total",
    "Domain events the outbox relay sent again because their handlers had not all run.",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
# Set by each relay run, in the process that runs it (a Celery worker).
PENDING = Gauge(
    "outbox_pending",
    "Domain events in the outbox whose handlers have not all run yet.",
    multiprocess_mode="livemostrecent",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
OLDEST_PENDING_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest domain event still in the outbox (0 when empty).",
    multiprocess_mode="livemostrecent",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)
STUCK = Gauge(
    "outbox_stuck",
    "Domain events in the outbox sent OUTBOX_ALERT_ATTEMPTS times or more.",
    multiprocess_mode="livemostrecent",
    namespace=settings.PROMETHEUS_METRIC_NAMESPACE,
)


def outbox_event_store(event: events.Event) -> None:
    """Store `event` in the current transaction: one INSERT, in the event's tenant.

    The event names its tenant (the context's, or one given in the operator scope of the admin);
    the row is written in that tenant's scope, which is where the task will run its handlers.
    """
    assert event.tenant_id is not None
    now = timezone.now()
    with tenant_context(event.tenant_id):
        OutboxEvent.objects.create(
            id=uuid.UUID(event.id),
            topic=event.topic,
            message=event.as_message(),
            created_at=now,
            next_attempt_at=now + datetime.timedelta(seconds=settings.OUTBOX_RELAY_DELAY_SECONDS),
            trace_context=trace_carrier(),
        )


def outbox_event_dispatch(*, event: events.Event) -> int:
    """Run the handlers of a stored event, in its tenant (the caller's scope), then delete it.

    Returns how many handlers ran without error. An event whose row is gone was delivered by an
    earlier run (the fast path, or the relay): nothing runs again. When a handler fails, the row
    stays and the relay sends the event again, to every handler: they are idempotent.
    """
    pending = OutboxEvent.objects.filter(pk=uuid.UUID(event.id))
    if not pending.exists():
        log.info("event_already_dispatched", topic=event.topic, event_id=event.id)
        return 0
    succeeded, failed = events.run_handlers(event)
    if failed:
        log.warning("event_kept_for_retry", topic=event.topic, event_id=event.id, failed=failed)
    else:
        pending.delete()
    return succeeded


def outbox_relay(*, now: datetime.datetime | None = None) -> int:
    """Send again every tenant's events still pending at their `next_attempt_at`, oldest first.

    Returns how many were sent. Rows are claimed with SKIP LOCKED and their next attempt is moved
    on before the sends, so two relays running at once never send the same row twice, and a
    send that fails (the broker is still away) is simply tried again at that next attempt.
    """
    now = now or timezone.now()
    with operator_scope(RELAY_SCOPE):
        with transaction.atomic():
            due = list(
                OutboxEvent.objects.filter(next_attempt_at__lte=now)
                .order_by("next_attempt_at")
                .select_for_update(skip_locked=True)[: settings.OUTBOX_RELAY_BATCH_SIZE]
            )
            for row in due:
                row.attempts += 1
                row.next_attempt_at = now + relay_interval(row.attempts)
            OutboxEvent.objects.bulk_update(due, ["attempts", "next_attempt_at"])
        backlog = OutboxEvent.objects.aggregate(
            pending=Count("pk"),
            stuck=Count("pk", filter=Q(attempts__gte=settings.OUTBOX_ALERT_ATTEMPTS)),
            oldest=Min("created_at"),
        )
    PENDING.set(backlog["pending"])
    STUCK.set(backlog["stuck"])
    OLDEST_PENDING_AGE.set((now - backlog["oldest"]).total_seconds() if backlog["oldest"] else 0)

    # Out of the operator scope: the task message carries no scope, the task enters the
    # event's tenant itself.
    sent = 0
    for row in due:
        if row.attempts >= settings.OUTBOX_ALERT_ATTEMPTS:
            log.error(
                "outbox_event_stuck",
                topic=row.topic,
                event_id=row.message["id"],
                attempts=row.attempts,
                created_at=row.created_at.isoformat(),
            )
        try:
            # In the trace of the request that published it, linked to this relay run: the
            # handlers' spans, a webhook's delivery and a socket's push show under that request.
            with resumed_trace(
                row.trace_context,
                "outbox relay",
                kind=SpanKind.PRODUCER,
                **{
                    TENANT_ATTRIBUTE: str(row.tenant_id),
                    "messaging.message.id": str(row.id),
                    "tenantapi.outbox.attempts": row.attempts,
                },
            ):
                dispatch(row.message, from_outbox=True)
        except Exception:
            log.warning("outbox_relay_send_failed", unsent=len(due) - sent, exc_info=True)
            break
        sent += 1
    RELAYED.inc(sent)
    if due:
        log.info("outbox_relayed", sent=sent, due=len(due), pending=backlog["pending"])
    return sent


def relay_interval(attempts: int) -> datetime.timedelta:
    """How long after its `attempts`-th send the relay sends an event again: doubling."""
    delay = datetime.timedelta(seconds=settings.OUTBOX_RELAY_DELAY_SECONDS)
    return min(delay * 2 ** min(attempts, 20), MAX_RELAY_INTERVAL)


def publish(
    *,
    topic: str,
    data: Mapping[str, Any],
    actor: Any = None,
    tenant_id: uuid.UUID | str | None = None,
) -> Event:
    """Announce `topic` once the current transaction commits (at once outside one)."""
    tenant = tenant_id if tenant_id is not None else current_tenant_id()
    event = Event(
        id=uuid.uuid4().hex,
        topic=topic,
        # A JSON round trip: a snapshot that cannot change later and that the task's JSON
        # serializer accepts (UUIDs, decimals and datetimes become strings).
        data=json.loads(json.dumps(dict(data), cls=DjangoJSONEncoder)),
        tenant_id=str(tenant) if tenant is not None else None,
        actor=actor_reference(actor),
        request_id=get_request_id(),
        occurred_at=datetime.datetime.now(tz=datetime.UTC).isoformat(),
    )
    stored = event.tenant_id is not None
    if stored:
        outbox_event_store(event)
    transaction.on_commit(lambda: _send(event, stored=stored))
    return event


def dispatch(message: Mapping[str, Any], *, from_outbox: bool) -> None:
    """Send the event's dispatch task. The message's own repr is left out of the task's
    headers (`kwargsrepr`): Celery would otherwise write a safe repr of every value of the event
    into them, a third of the send's CPU, and a copy of the event's data (names, emails) into
    whatever reads the headers (the broker's tools, Flower, worker logs); its topic and id say
    which event it is."""
    event_dispatch_task.apply_async(
        kwargs={"event": message, "from_outbox": from_outbox},
        kwargsrepr=f"{{'event': '{message.get('topic')} {message.get('id')}', "
        f"'from_outbox': {from_outbox}}}",
    )


def _send(event: Event, *, stored: bool) -> None:
    """The fast path, after commit: the task at once. The write has committed by then, and a
    broker outage must not turn its success into a 500: a failed send is logged instead, and a
    stored event waits in the outbox for the relay."""
    try:
        dispatch(event.as_message(), from_outbox=stored)
    except Exception as exc:
        if stored:
            log.warning(
                "event_send_failed_relay_will_retry",
                topic=event.topic,
                event_id=event.id,
                error=repr(exc),
            )
        else:
            log.exception("event_send_failed_event_lost", topic=event.topic, event_id=event.id)


# Task names are what queued messages carry: they stay as they were when the tasks lived in
# kernel/tasks.py, so that messages queued before a deploy still find their task after it.
@shared_task(name="core.tasks.event_dispatch_task")
def event_dispatch_task(*, event: dict[str, Any], from_outbox: bool = False) -> int:
    """Run the handlers subscribed to a published event (kernel.events), in the event's tenant.

    `from_outbox`: the event has a row in the outbox (kernel.outbox), deleted once every handler
    ran; a run that finds it gone does nothing. Messages sent before the outbox existed lack the
    flag, and run their handlers as they always did.
    """
    parsed = events.Event.from_message(event)
    if parsed.tenant_id:
        # The task's span started before the tenant was known: a message sent by the relay, or
        # published in operator scope, carries no tenant in its context header.
        set_span_attribute(TENANT_ATTRIBUTE, parsed.tenant_id)
    # The event names its tenant: publishing in operator scope (the admin) sends no tenant with
    # the task, and a handler must never run with more reach than the event's own tenant.
    with tenant_context(parsed.tenant_id) if parsed.tenant_id else no_tenant():
        if from_outbox and parsed.tenant_id:
            return outbox_event_dispatch(event=parsed)
        return events.dispatch(parsed)


@shared_task(name="core.tasks.outbox_relay_task")
def outbox_relay_task() -> int:
    """Send again the domain events still pending in the outbox (beat, every minute).

    Enters the operator scope itself (`outbox_relay`): the scope never travels in a task message.
    """
    return outbox_relay()
