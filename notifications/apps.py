from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from notifications import handlers, metrics

        handlers.register()
        metrics.count_channel_layer_drops()
        from notifications.webhooks import handlers as webhooks  # noqa: F401  (subscribes)
