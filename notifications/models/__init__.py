from notifications.models.notification import Notification, NotificationPreference
from notifications.models.webhook import WebhookDelivery, WebhookEndpoint

__all__ = ["Notification", "NotificationPreference", "WebhookDelivery", "WebhookEndpoint"]
