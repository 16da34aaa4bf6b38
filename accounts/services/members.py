"""Writes on a tenant's members: their roles, their removal. Keyword-only arguments, one
transaction each; the grant rules are accounts/services/grants.py.
"""

from collections.abc import Iterable, Sequence

from django.db import transaction

from accounts.actions import AccountsAction
from accounts.services.grants import ensure_an_owner_remains, ensure_can_grant
from kernel import audit
from kernel.permissions import OWNER
from kernel.principals import Principal, access_changed
from kernel.quotas import Resource, enforce_quota
from kernel.tenancy.models import (
    Invitation,
    Membership,
    MembershipRole,
    Role,
    Tenant,
)
from kernel.tenancy.selectors import (
    membership_count,
)

# --- members -----------------------------------------------------------------------------------


@transaction.atomic
def member_update_roles(
    *, tenant: Tenant, actor: Principal, membership: Membership, roles: Sequence[Role]
) -> Membership:
    """Replace a member's roles with `roles`."""
    current = set(Role.objects.filter(tenant=tenant, memberships=membership))
    wanted = set(roles)
    added, removed = wanted - current, current - wanted
    ensure_can_grant(actor=actor, roles=added | removed)
    if any(role.is_builtin and role.name == OWNER for role in removed):
        ensure_an_owner_remains(tenant=tenant, without=membership)
    MembershipRole.objects.filter(tenant=tenant, membership=membership, role__in=removed).delete()
    MembershipRole.objects.bulk_create(
        MembershipRole(tenant=tenant, membership=membership, role=role) for role in added
    )
    if added or removed:
        audit.record(
            tenant_id=tenant.id,
            action=AccountsAction.MEMBER_ROLES_CHANGED,
            target_type="member",
            target_id=membership.pk,
            changes={"roles": [role_names(current), role_names(wanted)]},
        )
    access_changed(tenant.id)
    return membership


def role_names(roles: Iterable[Role]) -> list[str]:
    return sorted(role.name for role in roles)


@transaction.atomic
def member_remove(*, tenant: Tenant, actor: Principal, membership: Membership) -> None:
    """Take the member out of the tenant.

    Authentication finds no membership from their next request on (the cached one is invalidated
    on commit), so every token of theirs for this tenant stops working; their account and other
    memberships are untouched.
    """
    roles = list(Role.objects.filter(tenant=tenant, memberships=membership))
    ensure_can_grant(actor=actor, roles=roles)
    if any(role.is_builtin and role.name == OWNER for role in roles):
        ensure_an_owner_remains(tenant=tenant, without=membership)
    audit.record(
        tenant_id=tenant.id,
        action=AccountsAction.MEMBER_REMOVED,
        target_type="member",
        target_id=membership.pk,
        changes=audit.deleted({"user": membership.user.email, "roles": role_names(roles)}),
    )
    membership.delete()
    access_changed(tenant.id)


def ensure_room_for_a_member(*, tenant: Tenant, counting_invitations: bool = False) -> None:
    """Refuse (403 quota-exceeded) one more member past the plan's `max_members`. With
    `counting_invitations` (a new invitation), the invitations that can still be accepted hold
    their seats too: an invitation is a member to come, and the quota is not a count of emails
    that may be sent."""

    def seats_taken() -> int:
        taken = membership_count(tenant=tenant)
        if counting_invitations:
            taken += Invitation.objects.filter(tenant=tenant).live().count()
        return taken

    # Locks the tenant's row first: two joins cannot both take the last seat (kernel/quotas.py).
    enforce_quota(tenant=tenant, resource=Resource.MEMBERS, count=seats_taken)
