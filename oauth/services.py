"""Writes of third-party apps, consents and the tokens they hold. Keyword-only arguments, one
transaction each; audit events in the same transaction; what other processes must learn (open
WebSockets, cached principals) after commit."""

import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import AccessToken, IDToken, RefreshToken
from oauth2_provider.models import clear_expired as dot_clear_expired

from kernel import audit, password_policy, second_factor
from kernel.context import operator_scope, tenant_context
from kernel.principals import Principal, access_changed, revoke_session
from kernel.problems import InvalidInput, Problem, ProblemType
from kernel.quotas import Resource, enforce_quota
from kernel.tenancy.models import Tenant
from kernel.tenancy.selectors import tenants_of_user
from oauth import selectors
from oauth.actions import OAuthAction
from oauth.models import App, Consent, IssuedToken, TokenFamily
from oauth.scopes import OPENID, permission_scopes

# The session id under which a family's principals are resolved and revoked
# (kernel.principals.revoke_session): what closes the WebSockets its tokens opened.
SESSION_PREFIX = "oauth-"


def family_session(family_id: uuid.UUID) -> str:
    return f"{SESSION_PREFIX}{family_id}"


# --- apps --------------------------------------------------------------------------------------


def _app_values(app: App) -> dict:
    return {
        "name": app.name,
        "client_id": app.client_id,
        "redirect_uris": app.redirect_uris.split(),
        "scopes": app.scopes,
        "confidential": app.client_type == App.CLIENT_CONFIDENTIAL,
    }


def _checked_scopes(actor: Principal, scopes: Sequence[str]) -> list[str]:
    codes = sorted(set(scopes))
    missing = sorted(permission_scopes(codes) - actor.permissions)
    if missing:
        raise Problem(
            ProblemType.PERMISSION_DENIED,
            detail=f"An app cannot be given scopes you do not hold: {', '.join(missing)}.",
        )
    return codes


@transaction.atomic
def app_create(
    *,
    tenant: Tenant,
    actor: Principal,
    name: str,
    redirect_uris: Sequence[str],
    scopes: Sequence[str],
    confidential: bool = True,
) -> tuple[App, str | None]:
    """A new app of `tenant`, and its client secret if it is confidential: the only time the
    secret exists outside its holder (it is kept hashed). Apps count against the plan's
    `max_oauth_apps` (403 quota-exceeded past it)."""
    codes = _checked_scopes(actor, scopes)
    enforce_quota(
        tenant=tenant,
        resource=Resource.OAUTH_APPS,
        count=lambda: selectors.app_count(tenant_id=tenant.id),
    )
    app = App(
        tenant=tenant,
        name=name,
        redirect_uris=" ".join(redirect_uris),
        scopes=codes,
        client_type=App.CLIENT_CONFIDENTIAL if confidential else App.CLIENT_PUBLIC,
        authorization_grant_type=App.GRANT_AUTHORIZATION_CODE,
        algorithm=App.RS256_ALGORITHM if OPENID in codes else App.NO_ALGORITHM,
    )
    # The generated secret, read before saving hashes it. A public app authenticates with its
    # client id and PKCE alone: its secret is never shown, nor usable.
    secret = app.client_secret if confidential else None
    app.save()
    audit.record(
        tenant_id=tenant.id,
        action=OAuthAction.APP_CREATED,
        target_type="oauth_app",
        target_id=app.pk,
        changes=audit.created(_app_values(app)),
    )
    return app, secret


@transaction.atomic
def app_update(
    *,
    tenant: Tenant,
    actor: Principal,
    app: App,
    name: str | None = None,
    redirect_uris: Sequence[str] | None = None,
    scopes: Sequence[str] | None = None,
) -> App:
    """Rename an app, or change its redirect URIs or scopes. Fewer scopes narrow its tokens at
    their next request: a token's rights are read against the app's scopes on every request."""
    app = App.in_tenant.select_for_update().get(pk=app.pk)
    before = _app_values(app)
    if name is not None:
        app.name = name
    if redirect_uris is not None:
        app.redirect_uris = " ".join(redirect_uris)
    if scopes is not None:
        app.scopes = _checked_scopes(actor, scopes)
        app.algorithm = App.RS256_ALGORITHM if OPENID in app.scopes else App.NO_ALGORITHM
    app.save()
    changes = audit.diff(before, _app_values(app))
    if changes:
        audit.record(
            tenant_id=tenant.id,
            action=OAuthAction.APP_UPDATED,
            target_type="oauth_app",
            target_id=app.pk,
            changes=changes,
        )
        # Its tokens' rights are narrowed at once on open connections too.
        _sessions_changed(_consent_tenants(app))
    return app


@transaction.atomic
def app_delete(*, tenant: Tenant, app: App) -> None:
    """Delete an app: every token it holds, in every tenant, is revoked with it."""
    app = App.in_tenant.select_for_update().get(pk=app.pk)
    # Read before the delete, which clears the instance's pk: the event names the app by its id,
    # as its creation's and changes' do, so that its history is one filter of the audit log.
    app_id = app.pk
    values = _app_values(app)
    tenants = _consent_tenants(app)
    with operator_scope("an app's tokens and consents, in every tenant that granted it"):
        _revoke_tokens(
            access_tokens=AccessToken.objects.filter(application=app),
            refresh_tokens=RefreshToken.objects.filter(application=app),
        )
        # The consents go with the app (CASCADE), and their families with them.
        app.delete()
    audit.record(
        tenant_id=tenant.id,
        action=OAuthAction.APP_DELETED,
        target_type="oauth_app",
        target_id=app_id,
        changes=audit.deleted(values),
    )
    _sessions_changed(tenants)


def _consent_tenants(app: App) -> set[uuid.UUID]:
    with operator_scope("the tenants whose people granted an app"):
        return set(Consent.objects.filter(app=app).values_list("tenant_id", flat=True))


def _sessions_changed(tenant_ids: Iterable[uuid.UUID]) -> None:
    # What holds a connection open (a WebSocket) re-checks its token after commit.
    for tenant_id in tenant_ids:
        access_changed(tenant_id)


# --- consents ----------------------------------------------------------------------------------


def consent_record(*, app: App, user, tenant_id: uuid.UUID, scopes: Sequence[str]) -> Consent:
    """The person's consent that `app` act for them in the tenant, within `scopes` (added to
    what they granted it before). Refused unless the person is a member of that tenant who may
    sign in there with the password they signed in with here (not where the tenant enforces
    single sign-on for them), and, in a tenant that requires a second factor, has one: an app's
    token is not held to setting one up (docs/security.md), so a person who is may not grant
    one."""
    tenant = next((t for t in tenants_of_user(user_id=user.pk) if t.id == tenant_id), None)
    if tenant is None:
        raise InvalidInput({"tenant": ["You are not a member of this tenant."]})
    refusal = password_policy.refusal(user=user, tenant=tenant, via="oauth")
    if refusal is not None:
        raise InvalidInput({"tenant": [refusal]})
    if tenant.require_mfa and not second_factor.required(user):
        raise InvalidInput(
            {
                "tenant": [
                    "This tenant requires two-factor authentication: set it up before you "
                    "authorize an app."
                ]
            }
        )
    codes = sorted(set(scopes))
    with tenant_context(tenant_id), transaction.atomic():
        consent, created = Consent.objects.select_for_update().get_or_create(
            app=app, user=user, defaults={"scopes": codes}
        )
        actor = audit.Actor.user(user, app=app)
        if created:
            audit.record(
                tenant_id=tenant_id,
                action=OAuthAction.GRANT_CREATED,
                target_type="oauth_grant",
                target_id=consent.pk,
                changes=audit.created({"app": app.name, "scopes": codes}),
                actor=actor,
            )
        elif set(codes) - set(consent.scopes):
            before = consent.scopes
            consent.scopes = sorted(set(consent.scopes) | set(codes))
            consent.save(update_fields=["scopes", "updated_at"])
            audit.record(
                tenant_id=tenant_id,
                action=OAuthAction.GRANT_UPDATED,
                target_type="oauth_grant",
                target_id=consent.pk,
                changes={"scopes": [before, consent.scopes]},
                actor=actor,
            )
    return consent


@transaction.atomic
def consent_revoke(*, tenant: Tenant, consent: Consent) -> None:
    """Revoke a person's consent: every token the app holds for them in the tenant stops at
    once, on every surface."""
    families = list(consent.families.values_list("id", flat=True))
    _revoke_tokens(
        access_tokens=AccessToken.objects.filter(issued__family__consent=consent),
        refresh_tokens=RefreshToken.objects.filter(token_family__in=families),
    )
    audit.record(
        tenant_id=tenant.id,
        action=OAuthAction.GRANT_REVOKED,
        target_type="oauth_grant",
        target_id=consent.pk,
        changes=audit.deleted({"app": consent.app.name, "scopes": consent.scopes}),
    )
    consent.delete()
    for family_id in families:
        revoke_session(tenant_id=tenant.id, session_id=family_session(family_id))


def _revoke_tokens(*, access_tokens, refresh_tokens) -> None:
    access_ids = list(access_tokens.values_list("id", flat=True))
    refresh_tokens.delete()
    # An ID token takes its access token with it (CASCADE): both go.
    IDToken.objects.filter(access_token__id__in=access_ids).delete()
    AccessToken.objects.filter(id__in=access_ids).delete()


# --- codes and token families ------------------------------------------------------------------


def family_start(*, consent: Consent, code: str) -> TokenFamily:
    """The family of a new authorization code."""
    with tenant_context(consent.tenant_id):
        return TokenFamily.objects.create(consent=consent, code_checksum=selectors.checksum(code))


def code_exchange(*, code: str) -> TokenFamily | None:
    """The code's family, marked used in the statement that checks it was not: of two exchanges
    of one code, however close, one wins; the other is a replay (None), which revokes what the
    first was given."""
    family = selectors.family_of_code(code)
    if family is None:
        return None
    with tenant_context(family.tenant_id):
        marked = TokenFamily.objects.filter(pk=family.pk, code_used_at__isnull=True).update(
            code_used_at=timezone.now()
        )
    if not marked:
        code_refused(code=code)
        return None
    return family


def code_refused(*, code: str) -> None:
    """A code the token endpoint refused: if it was exchanged before, this is a replay, and the
    tokens the code was exchanged for are revoked (RFC 6749, section 4.1.2)."""
    family = selectors.family_of_code(code)
    if family is None or family.code_used_at is None:
        return
    with tenant_context(family.tenant_id), transaction.atomic():
        if not family.tokens.exists():
            # Its first exchange was refused (a wrong verifier burns the code): nothing was
            # issued, so nothing is revoked, and this is no replay of a code that worked.
            return
        _revoke_tokens(
            access_tokens=AccessToken.objects.filter(issued__family=family),
            refresh_tokens=RefreshToken.objects.filter(token_family=family.id),
        )
        audit.record(
            tenant_id=family.consent.tenant_id,
            action=OAuthAction.CODE_REPLAYED,
            target_type="oauth_grant",
            target_id=family.consent_id,
            actor=audit.Actor.user(family.consent.user, app=family.consent.app),
        )
    family_revoked(family=family)


def token_issued(*, access_token: AccessToken, family: TokenFamily) -> IssuedToken:
    with tenant_context(family.tenant_id):
        return IssuedToken.objects.create(access_token=access_token, family=family)


def family_revoked(*, family: TokenFamily) -> None:
    """Tell what holds a connection open with the family's tokens (a WebSocket) to close it."""
    revoke_session(tenant_id=family.consent.tenant_id, session_id=family_session(family.id))


# --- housekeeping -------------------------------------------------------------------------------

# How long a family outlives its last token: a replay of its code within it is still told apart
# from an unknown code (and revokes nothing, there being nothing left).
FAMILY_KEPT = timedelta(days=1)


def clear_expired() -> int:
    """django-oauth-toolkit's expired codes and tokens (its `cleartokens`), then the families of
    which no token is left; how many families went."""
    with operator_scope("clearing the expired OAuth codes and tokens of every tenant"):
        dot_clear_expired()
        empty = (
            TokenFamily.objects.filter(created_at__lt=timezone.now() - FAMILY_KEPT)
            .exclude(tokens__isnull=False)
            .exclude(id__in=RefreshToken.objects.values("token_family"))
        )
        deleted, _ = empty.delete()
    return deleted
