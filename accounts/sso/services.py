"""Single sign-on's writes and rules: a tenant's connection, a person signed in through it, and
what it changes for passwords. Keyword-only arguments; the provider is asked before any write, so
that a provider that fails leaves nothing half-done.

Who a sign-in is (docs/security.md, "Single sign-on"):
1. The ID token must say the email is verified, and the email's domain must be one of the
   connection's `domains`: every time, not only the first.
2. A subject linked before (SsoIdentity) is that person, whatever email the provider now gives.
3. Otherwise the email decides: a member of the tenant is linked on this first sign-in; nobody
   with that email yet becomes a new person and member, with the connection's default role. An
   account that exists but is not a member of this tenant is refused: a tenant's provider speaks
   for the tenant's people, and is never a way into an account made elsewhere.
"""

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from accounts.actions import AccountsAction
from accounts.mfa import secrets as encryption
from accounts.models import SsoConnection, SsoIdentity
from accounts.services.members import ensure_room_for_a_member
from accounts.sso import provider
from kernel import audit
from kernel.context import tenant_context
from kernel.permissions import OWNER, VIEWER, ensure_owner
from kernel.principals import Principal, access_changed
from kernel.problems import InvalidInput, Problem, ProblemType
from kernel.tenancy.models import Membership, MembershipRole, Role, Tenant

User = get_user_model()

# A changed client secret is named in the audit log's diff, where `audit.record` redacts it: the
# log says that it changed, never what to.
SECRET_CHANGED = "changed"  # noqa: S105  (a marker, not a secret)


# --- the tenant's connection ----------------------------------------------------------------


def connection_of(tenant: Tenant | uuid.UUID) -> SsoConnection | None:
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    with tenant_context(tenant_id):
        return SsoConnection.objects.select_related("default_role").first()


@transaction.atomic
def sso_configure(
    *,
    tenant: Tenant,
    actor: Principal,
    issuer: str,
    client_id: str,
    domains: list[str],
    redirect_uris: list[str],
    client_secret: str | None = None,
    enforced: bool = False,
    default_role: Role | None = None,
) -> SsoConnection:
    """Connect the tenant to its provider, or change the connection (the owner's alone: it
    decides who may sign in). The issuer's discovery document is read first; the client secret
    may be left out of a change to keep the one stored."""
    ensure_owner(actor=actor, detail="Only an owner can configure single sign-on.")
    try:
        provider.check_issuer(issuer)
    except provider.ProviderMisconfigured as exc:
        raise InvalidInput({"issuer": [str(exc)]}) from exc
    except provider.ProviderUnavailable as exc:
        raise unavailable(exc) from exc
    connection = SsoConnection.objects.select_for_update().filter(tenant=tenant).first()
    if connection is None and not client_secret:
        raise InvalidInput({"client_secret": ["This field is required."]}, code="required")
    role = default_role or Role.objects.get(tenant=tenant, name=VIEWER, is_builtin=True)
    if role.is_builtin and role.name == OWNER:
        raise InvalidInput({"default_role": ["New members cannot be owners: choose another role."]})
    before = _audited(connection) if connection is not None else None
    connection = connection or SsoConnection(tenant=tenant)
    connection.issuer = issuer
    connection.client_id = client_id
    connection.domains = sorted(set(domains))
    connection.redirect_uris = list(dict.fromkeys(redirect_uris))
    connection.enforced = enforced
    connection.default_role = role
    if client_secret:
        connection.encrypted_client_secret = encryption.encrypt(client_secret.encode())
    connection.save()
    after = _audited(connection)
    if before is None:
        changes = audit.created(after)
        action = AccountsAction.SSO_CONFIGURED
    else:
        changes = audit.diff(before, after)
        if client_secret:
            changes["client_secret"] = [SECRET_CHANGED, SECRET_CHANGED]
        action = AccountsAction.SSO_UPDATED
    if changes:
        audit.record(
            tenant_id=tenant.id,
            action=action,
            target_type="sso_connection",
            target_id=connection.pk,
            changes=changes,
        )
    return connection


@transaction.atomic
def sso_remove(*, tenant: Tenant, actor: Principal) -> None:
    """Disconnect the provider: its people sign in with passwords again (those who have one; the
    others can set one with a password reset). Their links stay, for a provider connected again."""
    ensure_owner(actor=actor, detail="Only an owner can remove single sign-on.")
    connection = SsoConnection.objects.select_for_update().filter(tenant=tenant).first()
    if connection is None:
        raise Problem(ProblemType.NOT_FOUND, detail="Single sign-on is not configured.")
    audit.record(
        tenant_id=tenant.id,
        action=AccountsAction.SSO_REMOVED,
        target_type="sso_connection",
        target_id=connection.pk,
        changes=audit.deleted(_audited(connection)),
    )
    connection.delete()


def _audited(connection: SsoConnection) -> dict[str, Any]:
    return {
        "issuer": connection.issuer,
        "client_id": connection.client_id,
        "domains": list(connection.domains),
        "redirect_uris": list(connection.redirect_uris),
        "enforced": connection.enforced,
        "default_role": connection.default_role.name,
    }


def client_secret_of(connection: SsoConnection) -> str:
    return encryption.decrypt(connection.encrypted_client_secret).decode()


def unavailable(exc: Exception) -> Problem:
    return Problem(ProblemType.IDENTITY_PROVIDER_UNAVAILABLE, detail=str(exc))


# --- signing in -------------------------------------------------------------------------------


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].lower() if "@" in email else ""


def sso_sign_in(*, connection: SsoConnection, claims: dict[str, Any]):
    """The person the verified ID token's `claims` are, in the connection's tenant: linked,
    or made a member on their first sign-in. SignInRejected when the claims sign nobody in."""
    email = claims.get("email")
    email = User.objects.normalize_email(email) if isinstance(email, str) else ""
    subject = str(claims.get("sub") or "")
    if not email or not subject:
        raise provider.SignInRejected("The ID token carries no email or no subject.")
    if claims.get("email_verified") is not True:
        raise provider.SignInRejected(
            "The identity provider does not say this email is verified (email_verified)."
        )
    if email_domain(email) not in connection.domains:
        raise provider.SignInRejected(
            "This email's domain is not one the tenant signs in with single sign-on."
        )
    tenant_id = connection.tenant_id
    with tenant_context(tenant_id), transaction.atomic():
        identity = (
            SsoIdentity.objects.select_for_update()
            .select_related("user")
            .filter(issuer=connection.issuer, subject=subject)
            .first()
        )
        if identity is not None:
            user = identity.user
        else:
            user = User.objects.filter(email=email).first()
            if user is not None and not Membership.objects.filter(user=user).exists():
                raise provider.SignInRejected(
                    "An account with this email exists outside this tenant: ask an "
                    "administrator of the tenant for an invitation, then sign in again."
                )
            if (
                user is not None
                and SsoIdentity.objects.filter(issuer=connection.issuer, user=user).exists()
            ):
                raise provider.SignInRejected(
                    "This email belongs to a person the identity provider knows by another "
                    "subject: ask an administrator of the tenant."
                )
            if user is None:
                user = _provision(connection, email=email, name=claims.get("name"))
            identity = SsoIdentity.objects.create(
                issuer=connection.issuer, subject=subject, user=user
            )
        if not user.is_active:
            raise provider.SignInRejected("This account is deactivated.")
        if not Membership.objects.filter(user=user).exists():
            raise provider.SignInRejected("This person is no longer a member of the tenant.")
        identity.last_sign_in_at = timezone.now()
        identity.save(update_fields=["last_sign_in_at"])
    return user


def _provision(connection: SsoConnection, *, email: str, name: Any):
    """A new person and member of the tenant, with the connection's default role."""
    tenant_id = connection.tenant_id
    ensure_room_for_a_member(tenant=connection.tenant)
    user = User.objects.create_user(
        email=email, password=None, name=name[:150] if isinstance(name, str) else ""
    )
    membership = Membership.objects.create(user=user)
    MembershipRole.objects.create(membership=membership, role=connection.default_role)
    audit.record(
        tenant_id=tenant_id,
        action=AccountsAction.SSO_MEMBER_PROVISIONED,
        target_type="member",
        target_id=membership.pk,
        changes=audit.created(
            {"user": email, "roles": [connection.default_role.name], "issuer": connection.issuer}
        ),
        actor=audit.Actor.user(user),
    )
    access_changed(tenant_id)
    return user


# --- passwords where single sign-on is enforced ----------------------------------------------


def password_sign_in_refusal(*, user, tenant: Tenant, via: str, record: bool) -> str | None:
    """Why `user` may not sign in to `tenant` with a password, or None if they may: a member
    whose email is of a domain the tenant signs in with single sign-on, where it is enforced,
    except an owner, whose password is the break-glass path (a provider that is down or
    misconfigured must not lock the tenant out), recorded in the tenant's audit log when
    `record` (`via`: where).
    """
    connection = connection_of(tenant)
    if connection is None or not connection.enforced:
        return None
    if email_domain(user.email) not in connection.domains:
        return None
    with tenant_context(tenant.id):
        is_owner = Role.objects.filter(memberships__user=user, name=OWNER, is_builtin=True).exists()
        if not is_owner:
            return (
                "This tenant signs in its people through its identity provider: use single "
                f"sign-on (GET /api/v1/auth/sso/{tenant.slug}/start/)."
            )
        if record:
            audit.record(
                tenant_id=tenant.id,
                action=AccountsAction.SSO_BREAK_GLASS_SIGN_IN,
                target_type="user",
                target_id=user.pk,
                changes={"via": [None, via]},
                actor=audit.Actor.user(user),
            )
    return None


def ensure_password_sign_in_allowed(*, user, tenant: Tenant, via: str, record: bool) -> None:
    """`password_sign_in_refusal` as a 403 sso-required problem."""
    refusal = password_sign_in_refusal(user=user, tenant=tenant, via=via, record=record)
    if refusal is not None:
        raise Problem(ProblemType.SSO_REQUIRED, detail=refusal)
