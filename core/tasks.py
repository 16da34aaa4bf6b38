"""Background jobs of the cross-cutting plumbing: thin, they call into core's modules."""

from typing import Any

from celery import shared_task

from core import events
from tenants.context import no_tenant, tenant_context


@shared_task
def event_dispatch_task(*, event: dict[str, Any]) -> int:
    """Run the handlers subscribed to a published event (core.events), in the event's tenant."""
    parsed = events.Event.from_message(event)
    # The event names its tenant: publishing in operator scope (the admin) sends no tenant with
    # the task, and a handler must never run with more reach than the event's own tenant.
    with tenant_context(parsed.tenant_id) if parsed.tenant_id else no_tenant():
        return events.dispatch(parsed)
