"""Writes on tenants, roles, members and invitations. Keyword-only arguments, one transaction each.

The rules about who may grant what live here, next to the writes they guard, so that every way
in (the API, a command, a task) is held to them:

- Nobody grants a permission they do not hold, and nobody takes one away that they do not hold
  either: a role or a membership is changed only by someone who holds all it carries.
- Only an owner grants or takes away the owner role, and only an owner deletes the tenant: those
  rights belong to the role, not to a permission code (tenants/permissions.py).
- A tenant always keeps at least one owner. The check locks the tenant's owner memberships, so
  that two concurrent demotions cannot both see "another owner remains".

Every write that changes who may do what calls `access_changed()`, which invalidates the tenant's
cached principals once the transaction commits (tenants/principals.py): a changed role, a removed
member, a renamed, suspended or deleted tenant are seen by the very next request.

Every write records its audit event (`audit.record()`) in its own transaction, so that the event
and the change commit together or not at all. The actor comes from the request's audit context
(tenants/audit.py), unless a service learns it from what it was given (an invitation's token).

docs/rbac.md describes the rules for API clients.
"""

import hashlib
import secrets
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify
from rest_framework import exceptions

from accounts.sessions import issue_tokens
from accounts.tasks import send_email_task
from core.problems import Problem, ProblemType
from tenants import audit
from tenants.context import operator_scope, tenant_context
from tenants.models import (
    Invitation,
    InvitationRole,
    Membership,
    MembershipRole,
    Plan,
    Role,
    Tenant,
)
from tenants.permissions import BUILTIN_ROLES, OWNER, Perm
from tenants.principal import Principal
from tenants.principals import access_changed
from tenants.quotas import Resource, enforce_quota
from tenants.selectors import (
    invitation_by_token_hash,
    membership_count,
    membership_exists_for_email,
    role_in_use,
    role_owner,
    roles_permissions,
)

DEFAULT_PLAN = "free"

# Permissions that are of no use without another: managing members or roles starts with seeing
# them. A role is saved with what its codes imply, so that every holder of roles.manage can list
# the roles it manages (reading roles needs members.read).
IMPLIED_PERMISSIONS: dict[str, frozenset[str]] = {
    Perm.ROLES_MANAGE: frozenset({Perm.MEMBERS_READ}),
    Perm.MEMBERS_MANAGE: frozenset({Perm.MEMBERS_READ}),
}

# One answer for every way an invitation token can be wrong, so that none can be told apart.
INVALID_INVITATION = "The invitation is invalid, expired, revoked or already used."


def tenant_slug_from_name(name: str) -> str:
    return slugify(name)[:63].strip("-") or "tenant"


# --- tenants -----------------------------------------------------------------------------------


@transaction.atomic
def tenant_create(
    *,
    name: str,
    slug: str | None = None,
    owner,
    plan_code: str = DEFAULT_PLAN,
    actor: audit.Actor | None = None,
):
    """A new tenant with its built-in roles and `owner` as its first owner.

    `actor` is who the audit log names (at sign-up, the new owner); by default the one in
    context, else the system (a command).
    """
    with operator_scope("creating a tenant and its first rows"):
        tenant = Tenant.objects.create(
            name=name,
            slug=slug or tenant_slug_from_name(name),
            plan=Plan.objects.get(code=plan_code),
        )
        roles = Role.objects.bulk_create(
            Role(
                tenant=tenant,
                name=role_name,
                description=description,
                permissions=sorted(perms),
                is_builtin=True,
            )
            for role_name, (description, perms) in BUILTIN_ROLES.items()
        )
        membership = Membership.objects.create(tenant=tenant, user=owner)
        owner_role = next(role for role in roles if role.name == OWNER)
        MembershipRole.objects.create(tenant=tenant, membership=membership, role=owner_role)
        audit.record(
            tenant_id=tenant.id,
            action="tenants.tenant.created",
            target_type="tenant",
            target_id=tenant.id,
            changes=audit.created(
                {"name": tenant.name, "slug": tenant.slug, "plan": plan_code, "owner": owner.email}
            ),
            actor=actor,
        )
    return tenant


@transaction.atomic
def tenant_update(
    *, tenant: Tenant, actor: Principal, name: str | None = None, settings: dict | None = None
) -> Tenant:
    """Change what a tenant may change about itself: its name and settings.

    Slug, status and plan are the operators' (the admin); the API never writes them.
    """
    tenant = Tenant.objects.select_for_update(of=("self",)).select_related("plan").get(pk=tenant.pk)
    before = {"name": tenant.name, "settings": tenant.settings}
    if name is not None:
        tenant.name = name
    if settings is not None:
        tenant.settings = settings
    tenant.save(update_fields=["name", "settings"])
    changes = audit.diff(before, {"name": tenant.name, "settings": tenant.settings})
    if changes:
        audit.record(
            tenant_id=tenant.id,
            action="tenants.tenant.updated",
            target_type="tenant",
            target_id=tenant.id,
            changes=changes,
        )
    access_changed(tenant.id)
    return tenant


@transaction.atomic
def tenant_delete(*, tenant: Tenant, actor: Principal) -> None:
    """Soft-delete the tenant, then purge its data in the background.

    Authentication refuses every credential of a deleted tenant, so setting `deleted_at` ends
    every session at once; the purge can take its time.
    """
    _ensure_owner(actor=actor, detail="Only an owner can delete the tenant.")
    deleted_at = timezone.now()
    if Tenant.objects.filter(pk=tenant.pk, deleted_at__isnull=True).update(deleted_at=deleted_at):
        # Purged with the tenant's other rows: it is there for as long as the tenant can be
        # restored by an operator.
        audit.record(
            tenant_id=tenant.pk,
            action="tenants.tenant.deleted",
            target_type="tenant",
            target_id=tenant.pk,
            changes={"deleted_at": [None, deleted_at]},
        )
    access_changed(tenant.pk)
    # Imported here: tasks import this module.
    from tenants.tasks import tenant_purge_task

    tenant_id = str(tenant.pk)
    transaction.on_commit(lambda: tenant_purge_task.delay(tenant_id=tenant_id))


def tenant_purge(*, tenant_id: uuid.UUID | str) -> bool:
    """Delete a soft-deleted tenant and, through the cascade, every row it owns.

    Does nothing (and says so) when the tenant is gone already or was restored in the meantime.
    """
    with transaction.atomic(), operator_scope("purging a deleted tenant's data"):
        tenant = (
            Tenant.objects.select_for_update()
            .filter(pk=tenant_id, deleted_at__isnull=False)
            .first()
        )
        if tenant is None:
            return False
        # The audit log refuses deletes but this one (tenants/audit.py); the cascade then finds
        # nothing left in it.
        audit.purge_tenant_events(tenant_id=tenant.pk)
        tenant.delete()
    return True


STATUS_ACTIONS = {
    Tenant.Status.SUSPENDED: "tenants.tenant.suspended",
    Tenant.Status.ACTIVE: "tenants.tenant.reactivated",
}


def tenant_set_status(*, tenant_ids: Iterable[uuid.UUID], status: Tenant.Status) -> int:
    """Suspend or reactivate tenants (an operator's action). Returns how many changed.

    A suspended tenant's credentials get 403 tenant-suspended from the next request on.
    """
    with transaction.atomic(), operator_scope("an operator changing tenants' status"):
        tenants = Tenant.objects.filter(pk__in=list(tenant_ids), deleted_at__isnull=True).exclude(
            status=status
        )
        changed = list(tenants.select_for_update().values_list("pk", "status"))
        Tenant.objects.filter(pk__in=[pk for pk, _ in changed]).update(status=status)
        for tenant_id, previous in changed:
            audit.record(
                tenant_id=tenant_id,
                action=STATUS_ACTIONS[status],
                target_type="tenant",
                target_id=tenant_id,
                changes={"status": [previous, str(status)]},
            )
            access_changed(tenant_id)
    return len(changed)


def tenant_operator_save(*, tenant: Tenant, changed_fields: Iterable[str]) -> Tenant:
    """Save a tenant as an operator edited it in the admin, with its audit events.

    A change of status is recorded as a suspension or a reactivation, a change of plan as
    `plan_changed`, anything else as `updated`: each kind can be found by its action however it
    was made. Status and plan are part of every member's cached principal, so the change bites
    on the next request, as one made with the admin's actions does.
    """
    fields = sorted(set(changed_fields))
    with operator_scope("an operator editing a tenant"), transaction.atomic():
        adding = tenant._state.adding
        before = {}
        if not adding:
            stored = Tenant.objects.select_for_update().select_related("plan").get(pk=tenant.pk)
            before = _operator_values(stored, fields)
        tenant.save()
        after = _operator_values(tenant, fields)
        if adding:
            _record_tenant_change(tenant, "tenants.tenant.created", audit.created(after))
        else:
            grouped: dict[str, dict] = {}
            for field, change in audit.diff(before, after).items():
                grouped.setdefault(_operator_action(field, change), {})[field] = change
            for action, changes in grouped.items():
                _record_tenant_change(tenant, action, changes)
        access_changed(tenant.pk)
    return tenant


def _operator_values(tenant: Tenant, fields: Iterable[str]) -> dict:
    # A plan by its code: what an operator reads and what the API shows.
    return {
        field: tenant.plan.code if field == "plan" else getattr(tenant, field) for field in fields
    }


def _operator_action(field: str, change: list) -> str:
    if field == "status":
        return STATUS_ACTIONS[Tenant.Status(change[1])]
    if field == "plan":
        return "tenants.tenant.plan_changed"
    return "tenants.tenant.updated"


def _record_tenant_change(tenant: Tenant, action: str, changes: dict) -> None:
    audit.record(
        tenant_id=tenant.pk,
        action=action,
        target_type="tenant",
        target_id=tenant.pk,
        changes=changes,
    )


# --- plans ------------------------------------------------------------------------------------
# A plan belongs to no tenant: its changes go to the platform's audit log only, even though its
# limits bind every tenant on it (the tenants' logs say when a tenant changed plans, not when a
# plan changed its numbers).


def _plan_values(plan: Plan) -> dict:
    return {
        field.attname: getattr(plan, field.attname)
        for field in Plan._meta.concrete_fields
        if not field.primary_key
    }


@transaction.atomic
def plan_operator_save(*, plan: Plan) -> Plan:
    """Save a plan as an operator edited it in the admin, with its platform audit event.

    A save that changes nothing records nothing. The limits are part of every cached principal
    of the plan's tenants: a change bites on their next request.
    """
    if plan._state.adding:
        plan.save()
        _record_plan_change(plan.pk, "tenants.plan.created", audit.created(_plan_values(plan)))
        return plan
    before = _plan_values(Plan.objects.select_for_update().get(pk=plan.pk))
    plan.save()
    changes = audit.diff(before, _plan_values(plan))
    if changes:
        _record_plan_change(plan.pk, "tenants.plan.updated", changes)
        for tenant_id in plan.tenants.values_list("pk", flat=True):
            access_changed(tenant_id)
    return plan


@transaction.atomic
def plan_delete(*, plan: Plan) -> None:
    """Delete a plan no tenant is on (the foreign key protects the others)."""
    values = _plan_values(plan)
    plan_id = plan.pk
    plan.delete()
    _record_plan_change(plan_id, "tenants.plan.deleted", audit.deleted(values))


def _record_plan_change(plan_id: int, action: str, changes: dict) -> None:
    audit.record_platform(action=action, target_type="plan", target_id=plan_id, changes=changes)


# --- grant rules -------------------------------------------------------------------------------


def _ensure_owner(*, actor: Principal, detail: str) -> None:
    # Role names are unique per tenant, so "owner" among them is the built-in owner role.
    if OWNER not in actor.roles:
        raise Problem(ProblemType.PERMISSION_DENIED, detail=detail)


def _ensure_holds(*, actor: Principal, codes: Iterable[str]) -> None:
    missing = sorted(set(codes) - actor.permissions)
    if missing:
        raise Problem(
            ProblemType.PERMISSION_DENIED,
            detail=f"You cannot grant or take away permissions you do not hold: "
            f"{', '.join(missing)}.",
        )


def _ensure_can_grant(*, actor: Principal, roles: Iterable[Role]) -> None:
    """`actor` may give or take away each of `roles`."""
    roles = list(roles)
    if any(role.is_builtin and role.name == OWNER for role in roles):
        _ensure_owner(actor=actor, detail="Only an owner can grant or take away the owner role.")
    _ensure_holds(actor=actor, codes=roles_permissions(roles=roles))


def _ensure_an_owner_remains(*, tenant: Tenant, without: Membership) -> None:
    """Refuse (409) a change that would leave the tenant with no owner but `without`.

    Locks the tenant's owner memberships first: of two concurrent demotions of the last two
    owners, the second waits for the first to commit. It then counts in a statement of its own,
    because under READ COMMITTED a new statement sees what the transaction it waited for
    committed, while the locking statement itself may still return rows as they were before.
    """
    owner_role = role_owner(tenant=tenant)
    list(
        Membership.objects.select_for_update(of=("self",))
        .filter(tenant=tenant, roles=owner_role)
        .order_by("id")
        .values_list("id", flat=True)
    )
    another_owner = (
        MembershipRole.objects.filter(tenant=tenant, role=owner_role)
        .exclude(membership=without)
        .exists()
    )
    if not another_owner:
        raise Problem(ProblemType.CONFLICT, detail="A tenant must keep at least one owner.")


# --- roles -------------------------------------------------------------------------------------


def role_permissions_with_implied(codes: Iterable[str]) -> list[str]:
    result = set(codes)
    for code in list(result):
        result |= IMPLIED_PERMISSIONS.get(code, frozenset())
    return sorted(result)


def _ensure_role_name_free(*, tenant: Tenant, name: str, exclude: Role | None = None) -> None:
    others = Role.objects.filter(tenant=tenant, name__iexact=name)
    if exclude is not None:
        others = others.exclude(pk=exclude.pk)
    if others.exists():
        raise Problem(ProblemType.CONFLICT, detail=f"A role named '{name}' exists.")


def _save_role(role: Role, **kwargs) -> Role:
    try:
        with transaction.atomic():
            role.save(**kwargs)
    except IntegrityError as exc:  # lost a race for the same name
        raise Problem(ProblemType.CONFLICT, detail=f"A role named '{role.name}' exists.") from exc
    return role


@transaction.atomic
def role_create(
    *,
    tenant: Tenant,
    actor: Principal,
    name: str,
    permissions: Sequence[str],
    description: str = "",
) -> Role:
    """A tenant-defined role. The codes must exist (the API validates them)."""
    codes = role_permissions_with_implied(permissions)
    _ensure_holds(actor=actor, codes=codes)
    _ensure_role_name_free(tenant=tenant, name=name)
    role = _save_role(
        Role(tenant=tenant, name=name, description=description, permissions=codes),
        force_insert=True,
    )
    audit.record(
        tenant_id=tenant.id,
        action="tenants.role.created",
        target_type="role",
        target_id=role.pk,
        changes=audit.created(_role_values(role)),
    )
    return role


def _role_values(role: Role) -> dict:
    return {"name": role.name, "description": role.description, "permissions": role.permissions}


@transaction.atomic
def role_update(
    *,
    tenant: Tenant,
    actor: Principal,
    role: Role,
    name: str | None = None,
    description: str | None = None,
    permissions: Sequence[str] | None = None,
) -> Role:
    """Change a tenant-defined role. Its members' permissions change with it, at once."""
    role = Role.objects.select_for_update().get(tenant=tenant, pk=role.pk)
    if role.is_builtin:
        raise Problem(ProblemType.CONFLICT, detail="Built-in roles cannot be changed.")
    # What the role grants now is taken from its members if it shrinks, given if it grows:
    # the actor must hold both.
    _ensure_holds(actor=actor, codes=role.permissions)
    before = _role_values(role)
    if permissions is not None:
        role.permissions = role_permissions_with_implied(permissions)
        _ensure_holds(actor=actor, codes=role.permissions)
    if name is not None:
        _ensure_role_name_free(tenant=tenant, name=name, exclude=role)
        role.name = name
    if description is not None:
        role.description = description
    _save_role(role)
    changes = audit.diff(before, _role_values(role))
    if changes:
        audit.record(
            tenant_id=tenant.id,
            action="tenants.role.updated",
            target_type="role",
            target_id=role.pk,
            changes=changes,
        )
    access_changed(tenant.id)
    return role


@transaction.atomic
def role_delete(*, tenant: Tenant, actor: Principal, role: Role) -> None:
    """Delete a tenant-defined role that nobody holds and no live invitation promises."""
    role = Role.objects.select_for_update().get(tenant=tenant, pk=role.pk)
    if role.is_builtin:
        raise Problem(ProblemType.CONFLICT, detail="Built-in roles cannot be deleted.")
    if role_in_use(tenant=tenant, role=role):
        raise Problem(
            ProblemType.CONFLICT,
            detail="The role is held by members or offered by pending invitations: "
            "take it from them first.",
        )
    audit.record(
        tenant_id=tenant.id,
        action="tenants.role.deleted",
        target_type="role",
        target_id=role.pk,
        changes=audit.deleted(_role_values(role)),
    )
    role.delete()


# --- members -----------------------------------------------------------------------------------


@transaction.atomic
def member_update_roles(
    *, tenant: Tenant, actor: Principal, membership: Membership, roles: Sequence[Role]
) -> Membership:
    """Replace a member's roles with `roles`."""
    current = set(Role.objects.filter(tenant=tenant, memberships=membership))
    wanted = set(roles)
    added, removed = wanted - current, current - wanted
    _ensure_can_grant(actor=actor, roles=added | removed)
    if any(role.is_builtin and role.name == OWNER for role in removed):
        _ensure_an_owner_remains(tenant=tenant, without=membership)
    MembershipRole.objects.filter(tenant=tenant, membership=membership, role__in=removed).delete()
    MembershipRole.objects.bulk_create(
        MembershipRole(tenant=tenant, membership=membership, role=role) for role in added
    )
    if added or removed:
        audit.record(
            tenant_id=tenant.id,
            action="tenants.member.roles_changed",
            target_type="member",
            target_id=membership.pk,
            changes={"roles": [_role_names(current), _role_names(wanted)]},
        )
    access_changed(tenant.id)
    return membership


def _role_names(roles: Iterable[Role]) -> list[str]:
    return sorted(role.name for role in roles)


@transaction.atomic
def member_remove(*, tenant: Tenant, actor: Principal, membership: Membership) -> None:
    """Take the member out of the tenant.

    Authentication finds no membership from their next request on (the cached one is invalidated
    on commit), so every token of theirs for this tenant stops working; their account and other
    memberships are untouched.
    """
    roles = list(Role.objects.filter(tenant=tenant, memberships=membership))
    _ensure_can_grant(actor=actor, roles=roles)
    if any(role.is_builtin and role.name == OWNER for role in roles):
        _ensure_an_owner_remains(tenant=tenant, without=membership)
    audit.record(
        tenant_id=tenant.id,
        action="tenants.member.removed",
        target_type="member",
        target_id=membership.pk,
        changes=audit.deleted({"user": membership.user.email, "roles": _role_names(roles)}),
    )
    membership.delete()
    access_changed(tenant.id)


def _ensure_room_for_a_member(*, tenant: Tenant) -> None:
    # Locks the tenant's row first: two joins cannot both take the last seat (tenants/quotas.py).
    enforce_quota(
        tenant=tenant, resource=Resource.MEMBERS, count=lambda: membership_count(tenant=tenant)
    )


# --- invitations -------------------------------------------------------------------------------


def invitation_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _invitation_email(*, tenant: Tenant, actor: Principal, token: str, expires_at) -> dict:
    url = settings.INVITATION_ACCEPT_URL
    inviter = (actor.user.name or actor.user.email) if actor.user is not None else "Someone"
    return {
        "subject": f"You are invited to join {tenant.name}",
        "body": f"{inviter} invited you to join {tenant.name}.\n\n"
        f"Accept the invitation here:\n\n{url.format(token=token)}\n\n"
        f"It expires on {expires_at:%Y-%m-%d %H:%M} UTC and works once. "
        "If you did not expect it, ignore this email.",
    }


@transaction.atomic
def invitation_create(
    *, tenant: Tenant, actor: Principal, email: str, roles: Sequence[Role]
) -> Invitation:
    """Invite `email` with `roles`, and email them the token after commit.

    The token is in that email and nowhere else: the database keeps its hash, and the API never
    returns it, so that the inviter cannot accept in the invitee's name.
    """
    email = get_user_model().objects.normalize_email(email)
    _ensure_can_grant(actor=actor, roles=roles)
    if membership_exists_for_email(tenant=tenant, email=email):
        raise Problem(ProblemType.CONFLICT, detail=f"{email} is a member already.")
    _ensure_room_for_a_member(tenant=tenant)
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
            action="tenants.invitation.revoked",
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
        action="tenants.invitation.created",
        target_type="invitation",
        target_id=invitation.pk,
        changes=audit.created(
            {"email": email, "roles": _role_names(roles), "expires_at": expires_at}
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
            action="tenants.invitation.revoked",
            target_type="invitation",
            target_id=invitation.pk,
            changes={"revoked_at": [None, invitation.revoked_at]},
        )


def _invalid_invitation() -> exceptions.ValidationError:
    return exceptions.ValidationError({"token": [INVALID_INVITATION]})


def _user_for_invitation(*, email: str, password: str | None, name: str):
    """The invited person's account: the existing one, if its password is given, or a new one."""
    User = get_user_model()
    user = User.objects.filter(email=email).first()
    if user is None:
        if not password:
            raise exceptions.ValidationError(
                {"password": ["A password is required to create your account."]}
            )
        candidate = User(email=email, name=name)
        try:
            password_validation.validate_password(password, candidate)
        except DjangoValidationError as exc:
            raise exceptions.ValidationError({"password": list(exc.messages)}) from exc
        return User.objects.create_user(email, password, name=name)
    if not password:
        raise exceptions.ValidationError(
            {"password": ["This email has an account: give its password."]}
        )
    if not user.is_active or not user.check_password(password):
        raise exceptions.AuthenticationFailed("The password does not match the account.")
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
        list(Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True))
        if Membership.objects.filter(tenant=tenant, user=user).exists():
            raise Problem(ProblemType.CONFLICT, detail="You are a member of this tenant already.")
        _ensure_room_for_a_member(tenant=tenant)
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
            action="tenants.invitation.accepted",
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
