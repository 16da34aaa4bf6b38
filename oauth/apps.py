from django.apps import AppConfig


class OAuthConfig(AppConfig):
    name = "oauth"
    label = "oauth"
    verbose_name = "Third-party apps (OAuth)"

    def ready(self) -> None:
        # Imported here: the credential type reads models that are not loaded before ready().
        from kernel import audit, credentials
        from oauth import credential
        from oauth.actions import OAuthAction

        credentials.register(credential.CREDENTIAL_TYPE)
        audit.register_actions(OAuthAction)
