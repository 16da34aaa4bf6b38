"""Sessions: the family of tokens issued by one sign-in, and their revocation.

A sign-in mints a refresh token with a session id (`sid`) that every rotated refresh token and
every access token of that sign-in inherits. Logging out blacklists the refresh token in the
database (simplejwt) and marks the session revoked in the tenant's cache
(`kernel.principals.revoke_session`), so the access tokens already handed out stop working at
once instead of living out their 15 minutes.
A password change revokes every token of the user through simplejwt's password-hash claim.
"""

import uuid

from rest_framework_simplejwt.tokens import RefreshToken

TENANT_CLAIM = "tenant_id"
SESSION_CLAIM = "sid"
# Set on the tokens of a sign-in through the tenant's identity provider (accounts/sso/): the
# provider vouched for the person, their password and second factor were not asked.
SSO_CLAIM = "sso"


def issue_tokens(*, user, tenant, sso: bool = False) -> dict[str, str]:
    """A new session for `user` in `tenant`: an access and a refresh token."""
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = str(tenant.id)
    refresh[SESSION_CLAIM] = uuid.uuid4().hex
    if sso:
        refresh[SSO_CLAIM] = True
    return {"access": str(refresh.access_token), "refresh": str(refresh)}
