from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models the credentials use.
        from accounts import checks, credentials  # noqa: F401  (checks: registered on import)
        from accounts.actions import AccountsAction
        from accounts.mfa import services as mfa
        from accounts.sso import services as sso
        from kernel import audit, password_policy, second_factor

        credentials.register()
        password_policy.register(
            lambda user, tenant, via, record: sso.password_sign_in_refusal(
                user=user, tenant=tenant, via=via, record=record
            )
        )
        audit.register_actions(AccountsAction)
        second_factor.register(
            second_factor.SecondFactor(
                is_active=mfa.is_active,
                verify=lambda user, code: mfa.verify_code(user=user, code=code),
                begin=mfa.totp_pending_with_qr_code,
                confirm=lambda user, code: mfa.totp_confirm(user=user, code=code),
            )
        )
