from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models these modules use.
        from kernel import audit, erasure
        from kernel.exports import registry
        from webhooks import data_rights, handlers
        from webhooks.actions import WebhooksAction

        audit.register_actions(WebhooksAction)
        handlers.register()
        registry.register_tenant_resource("webhooks", data_rights.webhook_rows)
        erasure.register(data_rights.erase_person)
