from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models the credentials use.
        from accounts import credentials

        credentials.register()
