"""The scopes an app may ask for, and how the consent page says them.

Scopes are the tenant permission codes (`catalog.read`, …) plus the identity scopes of OpenID
Connect. A token's rights are the intersection of the scopes granted, the app's registered scopes
and the person's permissions at the time of each request (oauth/credential.py): a scope never
gives what the person does not hold.
"""

from oauth2_provider.scopes import BaseScopes

from kernel.permissions import PERMISSION_DESCRIPTIONS

OPENID = "openid"
OFFLINE_ACCESS = "offline_access"
IDENTITY_SCOPES: dict[str, str] = {
    OPENID: "Know who you are (your account's id).",
    "profile": "See your name.",
    "email": "See your email address.",
    OFFLINE_ACCESS: "Keep this access when you are not using the app (a refresh token).",
}


def all_scopes() -> dict[str, str]:
    """Every scope, with the words the consent page says it in."""
    return {
        **{str(code): description for code, description in PERMISSION_DESCRIPTIONS.items()},
        **IDENTITY_SCOPES,
    }


def permission_scopes(scopes) -> frozenset[str]:
    """The permission codes among `scopes`."""
    return frozenset(str(code) for code in PERMISSION_DESCRIPTIONS) & frozenset(scopes)


class Scopes(BaseScopes):
    """django-oauth-toolkit's scopes backend: an app may ask for the scopes it registered."""

    def get_all_scopes(self):
        return all_scopes()

    def get_available_scopes(self, application=None, request=None, *args, **kwargs):
        if application is None:
            return list(all_scopes())
        return list(application.scopes)

    def get_default_scopes(self, application=None, request=None, *args, **kwargs):
        # A request that names no scope asks for what the app registered.
        if application is None:
            return []
        return list(application.scopes)
