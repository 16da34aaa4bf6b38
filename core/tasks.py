"""Background jobs of the cross-cutting plumbing: thin, they call into core's modules."""

from typing import Any

from celery import shared_task

from core import events, outbox
from tenants.context import no_tenant, tenant_context


@shared_task
def event_dispatch_task(*, event: dict[str, Any], from_outbox: bool = False) -> int:
    """Run the handlers subscribed to a published event (core.events), in the event's tenant.

    `from_outbox`: the event has a row in the outbox (core.outbox), deleted once every handler
    ran; a run that finds it gone does nothing. Messages sent before the outbox existed lack the
    flag, and run their handlers as they always did.
    """
    parsed = events.Event.from_message(event)
    # The event names its tenant: publishing in operator scope (the admin) sends no tenant with
    # the task, and a handler must never run with more reach than the event's own tenant.
    with tenant_context(parsed.tenant_id) if parsed.tenant_id else no_tenant():
        if from_outbox and parsed.tenant_id:
            return outbox.outbox_event_dispatch(event=parsed)
        return events.dispatch(parsed)


@shared_task
def outbox_relay_task() -> int:
    """Send again the domain events still pending in the outbox (beat, every minute).

    Enters the operator scope itself (core.outbox.outbox_relay): the scope never travels in a
    task message.
    """
    return outbox.outbox_relay()
