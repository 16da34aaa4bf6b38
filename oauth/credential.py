"""`Authorization: Bearer <OAuth access token>`: a person acting through a third-party app, in
the one tenant they granted it.

The credential type of the tokens /oauth/token/ issues (kernel/credentials.py): every surface
accepts it through the same path as a person's own access token. A JWT is the person's own
(accounts/credentials/access_tokens.py); any other `Bearer` value is looked up here.

The token is found by its hash, with its app and its consent, in one query: revoking it (RFC
7009, the grant's DELETE, the app's) deletes the row, so the very next request is refused. Who
the person is in the tenant comes from the same cached principal as their own token's, under
the same access epoch: a role removed, a member removed, a tenant suspended narrows or ends the
token at once. Its rights are the intersection of the scopes granted, the app's registered
scopes and the person's permissions; it carries no role, so what only an owner may do (delete
the tenant, transfer ownership) no app may do for them.
"""

from dataclasses import replace

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions

from kernel import credentials
from kernel.principals import Principal, resolve_principal
from kernel.problems import Problem, ProblemType
from oauth import selectors
from oauth.scopes import all_scopes, permission_scopes
from oauth.services import family_session

INVALID_TOKEN = "Invalid token."  # noqa: S105  (a message, not a secret)
# django-oauth-toolkit's tokens are 30 characters; anything much longer is no token of ours.
MAX_TOKEN_LENGTH = 255


def verify(credential: bytes) -> Principal:
    """The principal an OAuth access token acts as, or a 401 (the same words for every way it
    can be wrong); a suspended tenant is a 403 `tenant-suspended`, as for people."""
    try:
        token = credential.decode("ascii")
    except UnicodeDecodeError as exc:
        raise exceptions.AuthenticationFailed(INVALID_TOKEN) from exc
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise exceptions.AuthenticationFailed(INVALID_TOKEN)
    access_token = selectors.access_token_with_consent(token)
    issued = getattr(access_token, "issued", None) if access_token is not None else None
    if issued is None or access_token.is_expired():
        raise exceptions.AuthenticationFailed(INVALID_TOKEN)
    family = issued.family
    consent = family.consent
    session_id = family_session(family.id)
    principal = resolve_principal(
        tenant_id=consent.tenant_id, user_id=access_token.user_id, session_id=session_id
    ).principal
    if principal is None or not principal.user.is_active or principal.tenant.deleted_at is not None:
        raise exceptions.AuthenticationFailed(INVALID_TOKEN)
    if not principal.tenant.is_active:
        raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
    app = access_token.application
    scopes = access_token.scope.split()
    return replace(
        principal,
        permissions=principal.permissions & permission_scopes(scopes) & frozenset(app.scopes),
        roles=frozenset(),
        app=app,
        claims={
            "sid": session_id,
            "exp": access_token.expires.timestamp(),
            "scope": " ".join(scopes),
            "client_id": app.client_id,
        },
    )


CREDENTIAL_TYPE = credentials.CredentialType(
    name="oauth_token",
    scheme="Bearer",
    case_sensitive=True,
    verify=verify,
    malformed=exceptions.AuthenticationFailed(
        _("Authorization header must contain two space-delimited values"),
        code="bad_authorization_header",
    ),
    openapi_name="oauth2",
    openapi_definition={
        "type": "oauth2",
        "description": "An OAuth access token of a third-party app (docs/oauth.md): "
        "`Authorization: Bearer <token>`.",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": "/oauth/authorize/",
                "tokenUrl": "/oauth/token/",
                "refreshUrl": "/oauth/token/",
                "scopes": all_scopes(),
            }
        },
    },
    # Not a JWT: the person's own access token type recognizes those.
    recognizes=lambda credential: credential.count(b".") != 2,
)
