"""Invitations to join a tenant: sent, revoked, accepted. Keyword-only arguments, one transaction
each; the grant rules are accounts/services/grants.py.
"""

import hashlib
import json
import secrets
from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.actions import AccountsAction
from accounts.services.grants import (
    ensure_can_grant,
)
from accounts.services.members import ensure_room_for_a_member, role_names
from accounts.sessions import issue_tokens
from accounts.tasks import send_email_task
from kernel import audit
from kernel.context import tenant_context
from kernel.principals import Principal, access_changed
from kernel.problems import CredentialRefused, InvalidInput, Problem, ProblemType
from kernel.quotas import Resource, enforce_quota
from kernel.tenancy.models import (
    Invitation,
    InvitationRole,
    Membership,
    MembershipRole,
    Role,
    Tenant,
)
from kernel.tenancy.selectors import (
    invitation_by_token_hash,
    membership_exists_for_email,
)

# One answer for every way an invitation token can be wrong, so that none can be told apart.
INVALID_INVITATION = "The invitation is invalid, expired, revoked or already used."


# --- invitations -------------------------------------------------------------------------------


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


INVITATION_SUBJECT = "An invitation to join a team"


def _invitation_email(*, tenant: Tenant, actor: Principal, token: str, expires_at) -> dict:
    """The email of an invitation. The tenant's name and the inviter's name are chosen by whoever
    invites, so they never make a sentence of ours (which could then say anything, "your account
    is locked, verify at …"), and never reach the Subject: they are shown in the body as what
    they are, quoted data on lines of their own."""
    url = settings.INVITATION_ACCEPT_URL
    inviter = (actor.user.name or actor.user.email) if actor.user is not None else ""
    return {
        "subject": INVITATION_SUBJECT,
        "body": "You have been invited to join a team. Its members gave it these names:\n\n"
        f"  Team name:  {_quoted(tenant.name)}\n"
        f"  Invited by: {_quoted(inviter)}\n\n"
        "We do not check what a team calls itself. If you did not expect this invitation, or the "
        "names above ask you to do anything, ignore this email.\n\n"
        f"To accept, open:\n\n{url.format(token=token)}\n\n"
        f"The link expires on {expires_at:%Y-%m-%d %H:%M} UTC and works once.",
    }


def _quoted(text: str) -> str:
    """Someone else's text as data: in quotes, control characters (line breaks) escaped, at most
    200 characters."""
    return json.dumps(text[:200], ensure_ascii=False)


@transaction.atomic
def invitation_create(
    *, tenant: Tenant, actor: Principal, email: str, roles: Sequence[Role]
) -> Invitation:
    """Invite `email` with `roles`, and email them the token after commit.

    The token is in that email and nowhere else: the database keeps its hash, and the API never
    returns it, so that the inviter cannot accept in the invitee's name.
    """
    email = get_user_model().objects.normalize_email(email)
    ensure_can_grant(actor=actor, roles=roles)
    if membership_exists_for_email(tenant=tenant, email=email):
        raise Problem(ProblemType.CONFLICT, detail=f"{email} is a member already.")
    ensure_room_for_a_member(tenant=tenant, counting_invitations=True)
    since = timezone.now() - timedelta(days=1)
    enforce_quota(
        tenant=tenant,
        resource=Resource.INVITATIONS_PER_DAY,
        count=lambda: Invitation.objects.filter(tenant=tenant, created_at__gte=since).count(),
    )
    pending = Invitation.objects.filter(tenant=tenant, email=email).pending()
    if pending.filter(expires_at__gt=timezone.now()).exists():
        raise Problem(
            ProblemType.CONFLICT,
            detail=f"{email} has a pending invitation: revoke it to invite them again.",
        )
    # An expired one still holds the address's place in the unique constraint: it is revoked,
    # which is what it is in effect.
    revoked_at = timezone.now()
    for expired_id in list(pending.values_list("pk", flat=True)):
        audit.record(
            tenant_id=tenant.id,
            action=AccountsAction.INVITATION_REVOKED,
            target_type="invitation",
            target_id=expired_id,
            changes={"revoked_at": [None, revoked_at]},
        )
    pending.update(revoked_at=revoked_at)

    token = secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=settings.INVITATION_TTL_DAYS)
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                tenant=tenant,
                email=email,
                token_hash=invitation_token_hash(token),
                invited_by=actor.user,
                expires_at=expires_at,
            )
    except IntegrityError as exc:  # the same address invited by a concurrent request
        raise Problem(ProblemType.CONFLICT, detail=f"{email} has a pending invitation.") from exc
    InvitationRole.objects.bulk_create(
        InvitationRole(tenant=tenant, invitation=invitation, role=role) for role in roles
    )
    audit.record(
        tenant_id=tenant.id,
        action=AccountsAction.INVITATION_CREATED,
        target_type="invitation",
        target_id=invitation.pk,
        changes=audit.created(
            {"email": email, "roles": role_names(roles), "expires_at": expires_at}
        ),
    )
    message = _invitation_email(tenant=tenant, actor=actor, token=token, expires_at=expires_at)
    transaction.on_commit(lambda: send_email_task.delay(to=email, **message))
    return invitation


@transaction.atomic
def invitation_revoke(*, tenant: Tenant, actor: Principal, invitation: Invitation) -> None:
    """Make a pending invitation unusable. Revoking a revoked or expired one changes nothing."""
    invitation = Invitation.objects.select_for_update().get(tenant=tenant, pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise Problem(
            ProblemType.CONFLICT,
            detail="The invitation was accepted: remove the member instead.",
        )
    if invitation.revoked_at is None:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit.record(
            tenant_id=tenant.id,
            action=AccountsAction.INVITATION_REVOKED,
            target_type="invitation",
            target_id=invitation.pk,
            changes={"revoked_at": [None, invitation.revoked_at]},
        )


def _invalid_invitation() -> InvalidInput:
    return InvalidInput({"token": [INVALID_INVITATION]})


def _user_for_invitation(*, email: str, password: str | None, name: str):
    """The invited person's account: the existing one, if its password is given, or a new one."""
    User = get_user_model()
    user = User.objects.filter(email=email).first()
    if user is None:
        if not password:
            raise InvalidInput({"password": ["A password is required to create your account."]})
        candidate = User(email=email, name=name)
        try:
            password_validation.validate_password(password, candidate)
        except DjangoValidationError as exc:
            raise InvalidInput({"password": list(exc.messages)}) from exc
        return User.objects.create_user(email, password, name=name)
    if not password:
        raise InvalidInput({"password": ["This email has an account: give its password."]})
    if not user.is_active or not user.check_password(password):
        raise CredentialRefused("The password does not match the account.")
    return user


@transaction.atomic
def invitation_accept(*, token: str, password: str | None = None, name: str = ""):
    """Join the inviting tenant: returns the user, the tenant and tokens for it.

    The one write reached without a tenant credential: the token is looked up by its hash in
    operator scope, and everything after that happens in the invitation's tenant only.
    """
    invitation = invitation_by_token_hash(token_hash=invitation_token_hash(token))
    if invitation is None:
        raise _invalid_invitation()
    tenant = invitation.tenant
    with tenant_context(tenant.id):
        if invitation.status != Invitation.Status.PENDING or tenant.deleted_at is not None:
            raise _invalid_invitation()
        if not tenant.is_active:
            raise Problem(ProblemType.TENANT_SUSPENDED, detail="This tenant is suspended.")
        user = _user_for_invitation(email=invitation.email, password=password, name=name)
        # Serialises joins to this tenant, so that two acceptances cannot both fit the last seat.
        list(
            Tenant.objects.select_for_update(no_key=True)
            .filter(pk=tenant.pk)
            .values_list("pk", flat=True)
        )
        if Membership.objects.filter(tenant=tenant, user=user).exists():
            raise Problem(ProblemType.CONFLICT, detail="You are a member of this tenant already.")
        ensure_room_for_a_member(tenant=tenant)
        membership = Membership.objects.create(tenant=tenant, user=user)
        MembershipRole.objects.bulk_create(
            MembershipRole(tenant=tenant, membership=membership, role=role)
            for role in invitation.roles.all()
        )
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
        # Nobody is signed in here: the token was the credential, and its holder is the actor.
        audit.record(
            tenant_id=tenant.id,
            action=AccountsAction.INVITATION_ACCEPTED,
            target_type="invitation",
            target_id=invitation.pk,
            changes={
                "accepted_at": [None, invitation.accepted_at],
                "member": [None, membership.pk],
            },
            actor=audit.Actor.user(user),
        )
        access_changed(tenant.id)
    return user, tenant, issue_tokens(user=user, tenant=tenant)
