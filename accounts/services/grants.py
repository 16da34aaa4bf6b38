"""Who may grant what, the rules every write on roles, members and invitations is held to:

- Nobody grants a permission they do not hold, and nobody takes one away that they do not hold
  either: a role or a membership is changed only by someone who holds all it carries.
- Only an owner grants or takes away the owner role: that right belongs to the role, not to a
  permission code (kernel/permissions.py).
- A tenant always keeps at least one owner. The check locks the tenant's owner memberships, so
  that two concurrent demotions cannot both see "another owner remains".

docs/rbac.md describes the rules for API clients.
"""

from collections.abc import Iterable

from kernel.permissions import OWNER, Perm, ensure_owner
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import (
    Membership,
    MembershipRole,
    Role,
    Tenant,
)
from kernel.tenancy.selectors import (
    role_owner,
    roles_permissions,
)

# Permissions that are of no use without another: managing members or roles starts with seeing
# them. A role is saved with what its codes imply, so that every holder of roles.manage can list
# the roles it manages (reading roles needs members.read).
IMPLIED_PERMISSIONS: dict[str, frozenset[str]] = {
    Perm.ROLES_MANAGE: frozenset({Perm.MEMBERS_READ}),
    Perm.MEMBERS_MANAGE: frozenset({Perm.MEMBERS_READ}),
}


def ensure_holds(*, actor: Principal, codes: Iterable[str]) -> None:
    missing = sorted(set(codes) - actor.permissions)
    if missing:
        raise Problem(
            ProblemType.PERMISSION_DENIED,
            detail=f"You cannot grant or take away permissions you do not hold: "
            f"{', '.join(missing)}.",
        )


def ensure_can_grant(*, actor: Principal, roles: Iterable[Role]) -> None:
    """`actor` may give or take away each of `roles`."""
    roles = list(roles)
    if any(role.is_builtin and role.name == OWNER for role in roles):
        ensure_owner(actor=actor, detail="Only an owner can grant or take away the owner role.")
    ensure_holds(actor=actor, codes=roles_permissions(roles=roles))


def ensure_an_owner_remains(*, tenant: Tenant, without: Membership) -> None:
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


def role_permissions_with_implied(codes: Iterable[str]) -> list[str]:
    result = set(codes)
    for code in list(result):
        result |= IMPLIED_PERMISSIONS.get(code, frozenset())
    return sorted(result)
