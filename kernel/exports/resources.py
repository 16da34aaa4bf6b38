"""The kernel's own resources in exports: a tenant's members, roles, invitations and audit log;
a person's memberships and the audit events that name them (registered from
KernelConfig.ready()).

Rows come `CHUNK_SIZE` at a time; a chunk's related rows (a membership's roles) in one more
query per chunk, never one per row.
"""

import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator

from django.db.models import Q, QuerySet

from kernel import audit_chain
from kernel.context import require_tenant_id
from kernel.exports.registry import Row
from kernel.tenancy.models import (
    AuditEvent,
    Invitation,
    InvitationRole,
    Membership,
    MembershipRole,
    Role,
)

CHUNK_SIZE = 2000

_MEMBER_FIELDS = ("id", "user_id", "user__email", "user__name", "created_at")
_INVITATION_FIELDS = (
    "id",
    "email",
    "invited_by_id",
    "expires_at",
    "accepted_at",
    "revoked_at",
    "created_at",
)


def chunks(queryset: QuerySet, size: int = CHUNK_SIZE) -> Iterator[list]:
    """The queryset's rows (`.values()` or `.values_list()`) in lists of `size`, from a
    server-side cursor: call it in a transaction."""
    batch: list = []
    for row in queryset.iterator(chunk_size=size):
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _roles(through: type, key: str, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[dict]]:
    """The roles of each of `ids` (memberships or invitations), as the API shows them."""
    roles: dict[uuid.UUID, list[dict]] = defaultdict(list)
    rows = through.objects.filter(**{f"{key}__in": list(ids)})
    for owner_id, role_id, name in rows.order_by("role__name").values_list(
        key, "role_id", "role__name"
    ):
        roles[owner_id].append({"id": role_id, "name": name})
    return roles


def _members(queryset: QuerySet) -> Iterator[Row]:
    for batch in chunks(queryset.order_by("created_at", "id").values(*_MEMBER_FIELDS)):
        roles = _roles(MembershipRole, "membership_id", (row["id"] for row in batch))
        for row in batch:
            yield {
                "id": row["id"],
                "user": {
                    "id": row["user_id"],
                    "email": row["user__email"],
                    "name": row["user__name"],
                },
                "roles": roles.get(row["id"], []),
                "created_at": row["created_at"],
            }


def member_rows() -> Iterator[Row]:
    return _members(Membership.objects.all())


def role_rows() -> Iterator[Row]:
    fields = ("id", "name", "description", "permissions", "is_builtin", "created_at", "updated_at")
    return Role.objects.order_by("name").values(*fields).iterator(chunk_size=CHUNK_SIZE)


def invitation_rows() -> Iterator[Row]:
    # Never the token's hash.
    invitations = Invitation.objects.order_by("created_at", "id").values(*_INVITATION_FIELDS)
    for batch in chunks(invitations):
        roles = _roles(InvitationRole, "invitation_id", (row["id"] for row in batch))
        for row in batch:
            yield {**row, "roles": roles.get(row["id"], [])}


def audit_event_rows() -> Iterator[Row]:
    """The tenant's log in chain order, each line as the audit export writes it (hashes
    included): the archive's copy verifies like the export's (docs/audit.md)."""
    events = audit_chain.chain_events(require_tenant_id()).values(*audit_chain.EXPORT_COLUMNS)
    for row in events.iterator(chunk_size=CHUNK_SIZE):
        yield audit_chain.export_line(row)


# --- a person's --------------------------------------------------------------------------------


def personal_membership_rows(user_id: uuid.UUID) -> Iterator[Row]:
    return _members(Membership.objects.filter(user_id=user_id))


def personal_audit_event_rows(user_id: uuid.UUID) -> Iterator[Row]:
    """The events of the tenant in context that the person did, or that were done to them."""
    memberships = Membership.objects.filter(user_id=user_id).values_list("pk", flat=True)
    concerning = (
        Q(actor_id=user_id)
        | Q(target_type="user", target_id=str(user_id))
        | Q(target_type="member", target_id__in=[str(pk) for pk in memberships])
    )
    events = (
        AuditEvent.objects.filter(concerning)
        .order_by("created_at", "id")
        .values(*audit_chain.EXPORT_COLUMNS)
    )
    for row in events.iterator(chunk_size=CHUNK_SIZE):
        yield audit_chain.export_line(row)
