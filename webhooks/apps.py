from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models these modules use.
        from kernel import audit
        from webhooks import handlers
        from webhooks.actions import WebhooksAction

        audit.register_actions(WebhooksAction)
        handlers.register()
