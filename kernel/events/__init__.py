"""Domain events: `publish()` after a write, `subscribe()` to react to them elsewhere.

    publish(topic="catalog.product.updated", data={"id": ..., "changed": ["price"]}, actor=actor)

An event is published only if the transaction that wrote the change commits: `publish()` stores
it in the transactional outbox (kernel/events/outbox.py, one INSERT in the same transaction) and
queues `event_dispatch_task` with `transaction.on_commit`, so nothing is announced that was
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

The in-process side (the `Event`, subscriptions, running handlers) is `bus`; storing, sending,
dispatching and relaying is `outbox`. Import from this package.
"""

from kernel.events.bus import Event, Handler, dispatch, handlers_for, subscribe, unsubscribe
from kernel.events.outbox import publish

__all__ = ["Event", "Handler", "dispatch", "handlers_for", "publish", "subscribe", "unsubscribe"]
