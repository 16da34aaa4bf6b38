"""Deployment checks of the accounts feature (`manage.py check --deploy`)."""

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def sso_issuers_are_secure(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.SSO_ALLOW_INSECURE_ISSUERS:
        return []
    return [
        checks.Error(
            "SSO_ALLOW_INSECURE_ISSUERS is on: tenants' identity providers may be reached over "
            "plain http on loopback.",
            hint="It exists for tests and local development; leave it unset in production.",
            id="accounts.E001",
        )
    ]
