"""django-oauth-toolkit's request validator, with what binds its codes and tokens to one tenant.

The consent page chooses the tenant (oauth/views.py passes it to the authorization response as
`tenant_id`); from there every step carries it, through the `TokenFamily` of the code:

- the code: its family is created with the person's `Consent` in that tenant;
- its exchange: the family is marked used in the same statement that checks it was not, so a
  second exchange (a replay, however close to the first) revokes everything the code issued;
- each access token: tied to its family (`IssuedToken`); each refresh token carries the family's
  id as django-oauth-toolkit's `token_family`, kept through rotation;
- a refresh: finds the family again from the refresh token, so the new tokens stay in the tenant.

A refresh token is issued only with the `offline_access` scope.
"""

from django.db import transaction
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors

from oauth import selectors, services
from oauth.scopes import OFFLINE_ACCESS


class Validator(OAuth2Validator):
    # --- the code ---------------------------------------------------------------------------
    def _create_authorization_code(self, request, code, expires=None):
        tenant_id = getattr(request, "tenant_id", None)
        if tenant_id is None:
            # Only the consent page issues codes, and it always names a tenant.
            raise errors.AccessDeniedError(request=request)
        with transaction.atomic():
            grant = super()._create_authorization_code(request, code, expires)
            consent = services.consent_record(
                app=request.client, user=request.user, tenant_id=tenant_id, scopes=request.scopes
            )
            services.family_start(consent=consent, code=code["code"])
        return grant

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        if not super().validate_code(client_id, code, client, request, *args, **kwargs):
            # Unknown or expired; or exchanged already, its grant gone: a replay revokes.
            services.code_refused(code=code)
            return False
        family = services.code_exchange(code=code)
        if family is None:
            return False
        request.token_family = family
        return True

    # --- tokens -----------------------------------------------------------------------------
    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            return False
        family = selectors.family_of_refresh_token(request.refresh_token_instance)
        if family is None:
            # Its consent was revoked since.
            return False
        request.token_family = family
        return True

    def _save_bearer_token(self, token, request, *args, **kwargs):
        if OFFLINE_ACCESS not in token.get("scope", "").split():
            token.pop("refresh_token", None)
        return super()._save_bearer_token(token, request, *args, **kwargs)

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        access_token = super()._create_access_token(
            expires, request, token, source_refresh_token=source_refresh_token
        )
        services.token_issued(access_token=access_token, family=request.token_family)
        return access_token

    def _create_refresh_token(
        self, request, refresh_token_code, access_token, previous_refresh_token
    ):
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        if refresh_token.token_family != request.token_family.id:
            refresh_token.token_family = request.token_family.id
            refresh_token.save(update_fields=["token_family"])
        return refresh_token

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        """RFC 7009, as django-oauth-toolkit does it; and what holds a connection open with the
        token (a WebSocket) is told at once."""
        family = selectors.family_of_token(token, app=request.client)
        super().revoke_token(token, token_type_hint, request, *args, **kwargs)
        if family is not None:
            services.family_revoked(family=family)

    # --- OpenID Connect ---------------------------------------------------------------------
    def get_additional_claims(self, request):
        # Filtered by scope (`oidc_claim_scope`): `email` needs the email scope, `name` profile.
        # No `email_verified`: the service does not verify addresses, and says nothing it does
        # not know.
        return {"email": request.user.email, "name": request.user.name}
