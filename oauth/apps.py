from django.apps import AppConfig


class OAuthConfig(AppConfig):
    name = "oauth"
    label = "oauth"
    verbose_name = "Third-party apps (OAuth)"

    def ready(self) -> None:
        # Imported here: the credential type reads models that are not loaded before ready().
        from kernel import audit, credentials, erasure
        from kernel.exports import registry
        from oauth import credential, data_rights
        from oauth.actions import OAuthAction

        credentials.register(credential.CREDENTIAL_TYPE)
        audit.register_actions(OAuthAction)
        registry.register_tenant_resource("oauth_apps", data_rights.app_rows)
        registry.register_personal_resource("oauth_grants", data_rights.personal_grant_rows)
        erasure.register(data_rights.erase_person)
