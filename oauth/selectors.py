"""Reads of third-party apps, consents and token families."""

import hashlib
import uuid

from django.db.models import QuerySet
from oauth2_provider.models import AccessToken, RefreshToken

from kernel.context import operator_scope
from oauth.models import App, Consent, IssuedToken, TokenFamily


def checksum(value: str) -> str:
    """How django-oauth-toolkit keeps a token: its SHA-256, never the token."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def apps_of_tenant() -> QuerySet[App]:
    """The apps of the tenant in context."""
    return App.in_tenant.all()


def app_count(*, tenant_id: uuid.UUID) -> int:
    return App.objects.filter(tenant_id=tenant_id).count()


def consents_of_user(*, user_id: uuid.UUID) -> QuerySet[Consent]:
    """The person's consents in the tenant in context, with their apps."""
    return Consent.objects.filter(user_id=user_id).select_related("app", "app__tenant")


def family_of_code(code: str) -> TokenFamily | None:
    # Before the tenant is known: the code is all the token endpoint has.
    with operator_scope("an authorization code names its tenant's consent"):
        return (
            TokenFamily.objects.select_related("consent")
            .filter(code_checksum=checksum(code))
            .first()
        )


def family_of_refresh_token(refresh_token: RefreshToken) -> TokenFamily | None:
    with operator_scope("a refresh token names its tenant's consent"):
        return (
            TokenFamily.objects.select_related("consent")
            .filter(id=refresh_token.token_family)
            .first()
        )


def family_of_token(token: str, *, app: App | None) -> TokenFamily | None:
    """The family of an access or refresh token of `app`, or None."""
    if app is None:
        return None
    digest = checksum(token)
    with operator_scope("a token names its tenant's consent"):
        issued = (
            IssuedToken.objects.select_related("family__consent")
            .filter(access_token__token_checksum=digest, access_token__application=app)
            .first()
        )
        if issued is not None:
            return issued.family
        family_id = (
            RefreshToken.objects.filter(token_checksum=digest, application=app)
            .values_list("token_family", flat=True)
            .first()
        )
        if family_id is None:
            return None
        return TokenFamily.objects.select_related("consent").filter(id=family_id).first()


def app_of_access_token(token: str) -> App | None:
    found = (
        AccessToken.objects.select_related("application")
        .filter(token_checksum=checksum(token))
        .first()
    )
    return found.application if found is not None else None


def access_token_with_consent(token: str) -> AccessToken | None:
    """The access token, with its app, person and consent: what an API request needs of it, in
    one query. Before the tenant is known, as for an API key's prefix."""
    with operator_scope("an OAuth access token names its tenant"):
        return (
            AccessToken.objects.select_related("application", "user", "issued__family__consent")
            .filter(token_checksum=checksum(token))
            .first()
        )
