from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models the credentials use.
        from accounts import credentials
        from accounts.actions import AccountsAction
        from accounts.mfa import services as mfa
        from kernel import audit, second_factor

        credentials.register()
        audit.register_actions(AccountsAction)
        second_factor.register(
            second_factor.SecondFactor(
                is_active=mfa.is_active,
                verify=lambda user, code: mfa.verify_code(user=user, code=code),
                begin=mfa.totp_pending_with_qr_code,
                confirm=lambda user, code: mfa.totp_confirm(user=user, code=code),
            )
        )
