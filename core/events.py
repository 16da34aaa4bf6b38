"""Domain events: `publish()` after a write, `subscribe()` to react to them elsewhere.

    publish(topic="catalog.product.updated", data={"id": ..., "changed": ["price"]}, actor=actor)

An event is published only if the transaction that wrote the change commits: `publish()` stores
it in the transactional outbox (core.outbox, one INSERT in the same transaction) and queues
`core.tasks.event_dispatch_task` with `transaction.on_commit`, so nothing is announced that was
rolled back, and nothing that committed is lost to a broker that refuses the send: the outbox
relay sends it again later. The task calls every handler whose pattern matches the topic
(`fnmatch`-style: "catalog.product.*", "*"). Handlers are registered at import time in the
processes that run the task (an app's `AppConfig.ready()`), and receive the `Event`.

Delivery is at least once: a handler may see the same event (the same `id`) twice, and must be
idempotent per event id.

The event carries what a handler needs to act as the original request would have: the tenant
(from the context, or given), who acted, the request id, and a JSON-safe copy of `data` made at
publish time, so that a handler never sees a value changed after the fact. The task re-enters the
event's tenant itself, since publishing may happen in operator scope (the admin), whose scope
never travels with a task.
"""

import datetime
import fnmatch
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from core.tracing import get_request_id
from tenants.context import current_tenant_id

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    topic: str
    data: dict[str, Any]
    tenant_id: str | None
    actor: dict[str, str | None]
    request_id: str | None
    occurred_at: str

    def as_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> "Event":
        return cls(**message)


Handler = Callable[[Event], None]
_subscriptions: list[tuple[str, Handler]] = []


def subscribe(topic_pattern: str, handler: Handler) -> None:
    """Call `handler(event)` for every event whose topic matches the pattern (once per pair)."""
    if (topic_pattern, handler) not in _subscriptions:
        _subscriptions.append((topic_pattern, handler))


def unsubscribe(topic_pattern: str, handler: Handler) -> None:
    if (topic_pattern, handler) in _subscriptions:
        _subscriptions.remove((topic_pattern, handler))


def handlers_for(topic: str) -> list[Handler]:
    return [handler for pattern, handler in _subscriptions if fnmatch.fnmatchcase(topic, pattern)]


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
        # Imported here: core.outbox needs the app registry (its model), this module does not.
        from core.outbox import outbox_event_store

        outbox_event_store(event)
    transaction.on_commit(lambda: _send(event, stored=stored))
    return event


def _send(event: Event, *, stored: bool) -> None:
    """The fast path, after commit: the task at once. The write has committed by then, and a
    broker outage must not turn its success into a 500: a failed send is logged instead, and a
    stored event waits in the outbox for the relay."""
    # Imported here: core.tasks imports this module.
    from core.tasks import event_dispatch_task

    try:
        if stored:
            event_dispatch_task.delay(event=event.as_message(), from_outbox=True)
        else:
            event_dispatch_task.delay(event=event.as_message())
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


def dispatch(event: Event) -> int:
    """Call the handlers of `event`; returns how many ran without error.

    One failing handler does not keep the others from their turn: it is logged with its
    traceback and the rest carry on.
    """
    return run_handlers(event)[0]


def run_handlers(event: Event) -> tuple[int, int]:
    """Call the handlers of `event`, as `dispatch()` does; returns (succeeded, failed)."""
    succeeded = failed = 0
    for handler in handlers_for(event.topic):
        try:
            handler(event)
        except Exception:
            log.exception(
                "event_handler_failed",
                topic=event.topic,
                event_id=event.id,
                handler=getattr(handler, "__qualname__", repr(handler)),
            )
            failed += 1
        else:
            succeeded += 1
    return succeeded, failed


def actor_reference(actor: Any) -> dict[str, str | None]:
    """Who acted, as ids: a tenant principal (a person or an API key) or an operator's user."""
    # Imported here: tenants.principal needs the app registry, and this module does not.
    from tenants.principal import Principal

    if isinstance(actor, Principal):
        user, api_key = actor.user, actor.api_key
    else:
        user, api_key = actor, None
    return {
        "user_id": str(user.pk) if getattr(user, "pk", None) is not None else None,
        "api_key_id": str(api_key.pk) if getattr(api_key, "pk", None) is not None else None,
    }
