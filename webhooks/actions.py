"""The audit actions of webhooks (kernel/audit.py), registered from WebhooksConfig.ready(). A
webhook endpoint is where the tenant's data leaves us, so every change to one is recorded; its
signing secret never is. The values are what the audit log stores: they never change."""

from enum import StrEnum


class WebhooksAction(StrEnum):
    """What webhook endpoints and their deliveries go through."""

    WEBHOOK_CREATED = "notifications.webhook.created"
    WEBHOOK_UPDATED = "notifications.webhook.updated"
    WEBHOOK_DELETED = "notifications.webhook.deleted"
    DELIVERY_REDELIVERED = "notifications.webhook_delivery.redelivered"
