from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Imported here: an app's module is loaded before the models the credentials use.
        from accounts import checks, credentials, exports  # noqa: F401  (checks: registered on import)
        from accounts import erasure as account_erasure
        from accounts.actions import AccountsAction
        from accounts.mfa import services as mfa
        from accounts.sso import services as sso
        from kernel import audit, erasure, password_policy, second_factor
        from kernel.exports import registry

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
        registry.register_tenant_resource("api_keys", exports.api_key_rows)
        registry.register_personal_resource("account", exports.account_rows, per_tenant=False)
        registry.register_personal_resource("sso_identities", exports.sso_identity_rows)
        registry.register_personal_resource("api_keys", exports.created_api_key_rows)
        erasure.register(account_erasure.erase_account_data)
