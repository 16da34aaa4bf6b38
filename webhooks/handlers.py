"""Every domain event of a tenant is offered to its webhook endpoints.

Subscribed by `register()`, from WebhooksConfig.ready(). The handler only queues
the fan-out as a task of its own, which is retried on failure: kernel.events logs and moves past a
handler that raises, and a fan-out lost that way would be deliveries lost.
"""

from kernel import events
from webhooks.tasks import webhook_fan_out_task


def queue_webhook_fan_out(event: events.Event) -> None:
    if event.tenant_id is None:
        return  # an event of no tenant: no tenant's endpoints want it
    webhook_fan_out_task.delay(event=event.as_message())


def register() -> None:
    events.subscribe("*", queue_webhook_fan_out)
