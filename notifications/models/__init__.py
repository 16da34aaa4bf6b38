from notifications.models.notification import Notification, NotificationPreference

__all__ = ["Notification", "NotificationPreference"]
