from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kernel.principals import on_access_changed, on_session_revoked
        from notifications import handlers, metrics, realtime

        handlers.register()
        # Open sockets re-check their credential when access changes, and close on logout.
        on_access_changed(realtime.recheck_tenant_sockets)
        on_session_revoked(realtime.disconnect_session)
        metrics.count_channel_layer_drops()
