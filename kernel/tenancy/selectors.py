"""Reads on tenants, memberships, roles, invitations and the audit log.

Every read of tenant-owned rows goes through the scoped managers, so it sees the tenant in context
only; those that take `tenant` also filter on it, a second lock on the same door.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Prefetch, QuerySet

from kernel.context import operator_scope
from kernel.permissions import OWNER
from kernel.tenancy.models import (
    AuditEvent,
    Invitation,
    Membership,
    MembershipRole,
    Permission,
    Role,
    Tenant,
)


def membership_for_principal(*, user_id: uuid.UUID) -> Membership | None:
    """The caller's membership in the tenant in context, with its user, tenant and plan."""
    return Membership.objects.select_related("user", "tenant__plan").filter(user_id=user_id).first()


def membership_roles(*, membership: Membership) -> list[tuple[str, list[str]]]:
    """(name, permission codes) of each role the membership holds, in one query."""
    return list(Role.objects.filter(memberships=membership).values_list("name", "permissions"))


def tenants_of_user(*, user_id: uuid.UUID) -> list[Tenant]:
    """Every live tenant the user belongs to: a deliberate read across tenants."""
    with operator_scope("listing a user's own tenants"):
        return list(
            Tenant.objects.filter(
                id__in=Membership.objects.filter(user_id=user_id).values("tenant_id"),
                deleted_at__isnull=True,
            ).order_by("name")
        )


# --- permissions and roles ---------------------------------------------------------------------


def permission_list() -> QuerySet[Permission]:
    return Permission.objects.order_by("code")


def permission_codes() -> frozenset[str]:
    return frozenset(Permission.objects.values_list("code", flat=True))


def role_list(*, tenant: Tenant) -> QuerySet[Role]:
    return Role.objects.filter(tenant=tenant).order_by("name")


def role_owner(*, tenant: Tenant) -> Role:
    """The tenant's built-in owner role."""
    return Role.objects.get(tenant=tenant, is_builtin=True, name=OWNER)


def role_in_use(*, tenant: Tenant, role: Role) -> bool:
    """Held by a member, or promised by an invitation that can still be accepted."""
    return (
        MembershipRole.objects.filter(tenant=tenant, role=role).exists()
        or Invitation.objects.live().filter(tenant=tenant, roles=role).exists()
    )


def roles_permissions(*, roles: Iterable[Role]) -> frozenset[str]:
    codes: set[str] = set()
    for role in roles:
        codes.update(role.permissions)
    return frozenset(codes)


# --- members -----------------------------------------------------------------------------------


def with_member_details(queryset: QuerySet[Membership]) -> QuerySet[Membership]:
    """Memberships with the user and roles their serialization shows, in three queries."""
    return queryset.select_related("user").prefetch_related(
        Prefetch("roles", queryset=Role.objects.order_by("name"))
    )


def member_list(*, tenant: Tenant) -> QuerySet[Membership]:
    """The tenant's members, oldest first as GET /members/ lists them, with their details."""
    return with_member_details(Membership.objects.filter(tenant=tenant)).order_by("created_at")


def membership_has_role(*, membership: Membership | None, name: str) -> bool:
    """Whether the membership holds the built-in role `name` (owner, admin, ...)."""
    if membership is None:  # an API key: no membership, no role
        return False
    return MembershipRole.objects.filter(
        tenant_id=membership.tenant_id,
        membership=membership,
        role__is_builtin=True,
        role__name=name,
    ).exists()


def membership_count(*, tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant).count()


def membership_exists_for_email(*, tenant: Tenant, email: str) -> bool:
    return Membership.objects.filter(tenant=tenant, user__email=email).exists()


# --- invitations -------------------------------------------------------------------------------


def with_invitation_details(queryset: QuerySet[Invitation]) -> QuerySet[Invitation]:
    return queryset.select_related("invited_by").prefetch_related(
        Prefetch("roles", queryset=Role.objects.order_by("name"))
    )


def invitation_by_token_hash(*, token_hash: str) -> Invitation | None:
    """The invitation a token stands for, in whichever tenant: the one public way in.

    Runs in a transaction; the row stays locked until it ends, so that two requests with the
    same token cannot both accept it.
    """
    with operator_scope("accepting an invitation"):
        return (
            Invitation.objects.select_for_update(of=("self",))
            .select_related("tenant__plan")
            .filter(token_hash=token_hash)
            .first()
        )


# --- the audit log -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFilters:
    actor_id: uuid.UUID | None = None
    actor_type: str | None = None
    # Exact, or a prefix when it ends in `.*` (`tenants.member.*`).
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def audit_event_list(
    *, tenant: Tenant, filters: AuditFilters | None = None
) -> QuerySet[AuditEvent]:
    """The tenant's audit events, newest first, narrowed by `filters`."""
    filters = filters or AuditFilters()
    events = AuditEvent.objects.filter(tenant=tenant)
    if filters.actor_id is not None:
        events = events.filter(actor_id=filters.actor_id)
    if filters.actor_type:
        events = events.filter(actor_type=filters.actor_type)
    if filters.action:
        if filters.action.endswith(".*"):
            events = events.filter(action__startswith=filters.action[:-1])
        else:
            events = events.filter(action=filters.action)
    if filters.target_type:
        events = events.filter(target_type=filters.target_type)
    if filters.target_id:
        events = events.filter(target_id=filters.target_id)
    if filters.since is not None:
        events = events.filter(created_at__gte=filters.since)
    if filters.until is not None:
        events = events.filter(created_at__lt=filters.until)
    return events.order_by("-created_at")
