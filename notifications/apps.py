from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kernel import erasure
        from kernel.exports import registry
        from kernel.principals import on_access_changed, on_session_revoked
        from notifications import data_rights, handlers, metrics, realtime

        handlers.register()
        # Open sockets re-check their credential when access changes, and close on logout.
        on_access_changed(realtime.recheck_tenant_sockets)
        on_session_revoked(realtime.disconnect_session)
        metrics.count_channel_layer_drops()
        registry.register_tenant_resource("notifications", data_rights.notification_rows)
        registry.register_personal_resource("notifications", data_rights.personal_notification_rows)
        registry.register_personal_resource(
            "notification_preferences", data_rights.personal_preference_rows
        )
        erasure.register(data_rights.erase_person)
