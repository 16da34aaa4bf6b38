from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models the credentials use.
        from accounts import credentials
        from accounts.actions import AccountsAction
        from kernel import audit

        credentials.register()
        audit.register_actions(AccountsAction)
