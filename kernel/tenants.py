"""Writes on tenants and plans: creating, changing, suspending, deleting a tenant; operators'
changes to plans. Keyword-only arguments, one transaction each.

Only an owner deletes the tenant: that right belongs to the role, not to a permission code
(kernel/permissions.py). Every write that changes who may do what calls `access_changed()`, which
invalidates the tenant's cached principals once the transaction commits (kernel/principals.py): a
renamed, suspended or deleted tenant is seen by the very next request. Every write records its
audit event (`audit.record()`) in its own transaction, so that the event and the change commit
together or not at all.

Members, roles and invitations are the accounts feature's (accounts/services/).
"""

import uuid
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from rest_framework.exceptions import ErrorDetail

from kernel import audit
from kernel.context import operator_scope
from kernel.permissions import BUILTIN_ROLES, OWNER, ensure_owner
from kernel.principals import Principal, access_changed
from kernel.problems import InvalidInput
from kernel.tasks import tenant_purge_task
from kernel.tenancy.models import (
    Membership,
    MembershipRole,
    Plan,
    Role,
    Tenant,
)

DEFAULT_PLAN = "free"


class TenancyAction(StrEnum):
    """What tenants and plans go through: the kernel's audit actions, registered from
    KernelConfig.ready(). The values are what the audit log stores: they never change."""

    TENANT_CREATED = "tenants.tenant.created"
    TENANT_UPDATED = "tenants.tenant.updated"
    TENANT_DELETED = "tenants.tenant.deleted"
    TENANT_SUSPENDED = "tenants.tenant.suspended"
    TENANT_REACTIVATED = "tenants.tenant.reactivated"
    TENANT_PLAN_CHANGED = "tenants.tenant.plan_changed"
    PLAN_CREATED = "tenants.plan.created"
    PLAN_UPDATED = "tenants.plan.updated"
    PLAN_DELETED = "tenants.plan.deleted"
    # The tenant's oldest events are about to be pruned: the chain's new anchor (audit_chain).
    AUDIT_PRUNED = "tenants.audit.pruned"


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
            action=TenancyAction.TENANT_CREATED,
            target_type="tenant",
            target_id=tenant.id,
            changes=audit.created(
                {"name": tenant.name, "slug": tenant.slug, "plan": plan_code, "owner": owner.email}
            ),
            actor=actor,
        )
    return tenant


# A keyword left out leaves the field as it is; None is a value for some (the plan's retention).
_UNCHANGED: Any = object()
_RETENTION_FIELDS = ("audit_retention_days", "notification_retention_days")


@transaction.atomic
def tenant_update(
    *,
    tenant: Tenant,
    actor: Principal,
    name: str | None = None,
    settings: dict | None = None,
    require_mfa: bool | None = None,
    audit_retention_days: int | None = _UNCHANGED,
    notification_retention_days: int | None = _UNCHANGED,
) -> Tenant:
    """Change what a tenant may change about itself: its name, settings, whether its members
    must have a second factor (the owner's alone to change: it decides who may sign in), and how
    long its audit events and notifications are kept (kernel/retention.py: at most its plan's,
    None for the plan's; keeping audit events less long is the owner's alone too: it decides
    what evidence is kept).

    Slug, status and plan are the operators' (the admin); the API never writes them.
    """
    tenant = (
        Tenant.objects.select_for_update(of=("self",), no_key=True)
        .select_related("plan")
        .get(pk=tenant.pk)
    )
    # Against the locked row: an admin's request authenticated before the owner changed it must
    # not change it back.
    if require_mfa is not None and require_mfa != tenant.require_mfa:
        ensure_owner(
            actor=actor, detail="Only an owner can change whether a second factor is required."
        )
    retention = {
        field: value
        for field, value in zip(
            _RETENTION_FIELDS, (audit_retention_days, notification_retention_days), strict=True
        )
        if value is not _UNCHANGED
    }
    _check_retention(tenant, retention)
    fields = ("name", "settings", "require_mfa", *_RETENTION_FIELDS)
    before = {field: getattr(tenant, field) for field in fields}
    if "audit_retention_days" in retention:
        kept = tenant.audit_retention
        tenant.audit_retention_days = retention["audit_retention_days"]
        # Keeping less is the owner's; keeping more (up to the plan's) is anyone's who manages
        # the tenant: it loses nothing.
        if tenant.audit_retention < kept:
            ensure_owner(
                actor=actor, detail="Only an owner can keep the audit log for a shorter time."
            )
    if name is not None:
        tenant.name = name
    if settings is not None:
        tenant.settings = settings
    if require_mfa is not None:
        tenant.require_mfa = require_mfa
    for field, value in retention.items():
        setattr(tenant, field, value)
    tenant.save(update_fields=list(fields))
    changes = audit.diff(before, {field: getattr(tenant, field) for field in fields})
    if changes:
        audit.record(
            tenant_id=tenant.id,
            action=TenancyAction.TENANT_UPDATED,
            target_type="tenant",
            target_id=tenant.id,
            changes=changes,
        )
    access_changed(tenant.id)
    return tenant


def _check_retention(tenant: Tenant, retention: dict[str, int | None]) -> None:
    """A tenant keeps its data at most as long as its plan does: a longer choice is refused,
    naming the plan's limit (the input serializer has checked the minimum)."""
    errors = {}
    for field, days in retention.items():
        limit = getattr(tenant.plan, field)
        if days is not None and days > limit:
            errors[field] = [
                ErrorDetail(
                    f"At most {limit} days on the {tenant.plan.name} plan; null keeps the plan's.",
                    code="max_value",
                )
            ]
    if errors:
        raise InvalidInput(errors)


@transaction.atomic
def tenant_delete(*, tenant: Tenant, actor: Principal) -> None:
    """Soft-delete the tenant, then purge its data in the background.

    Authentication refuses every credential of a deleted tenant, so setting `deleted_at` ends
    every session at once; the purge can take its time.
    """
    ensure_owner(actor=actor, detail="Only an owner can delete the tenant.")
    deleted_at = timezone.now()
    if Tenant.objects.filter(pk=tenant.pk, deleted_at__isnull=True).update(deleted_at=deleted_at):
        # Purged with the tenant's other rows: it is there for as long as the tenant can be
        # restored by an operator.
        audit.record(
            tenant_id=tenant.pk,
            action=TenancyAction.TENANT_DELETED,
            target_type="tenant",
            target_id=tenant.pk,
            changes={"deleted_at": [None, deleted_at]},
        )
    access_changed(tenant.pk)
    tenant_id = str(tenant.pk)
    transaction.on_commit(lambda: tenant_purge_task.delay(tenant_id=tenant_id))


STATUS_ACTIONS = {
    Tenant.Status.SUSPENDED: TenancyAction.TENANT_SUSPENDED,
    Tenant.Status.ACTIVE: TenancyAction.TENANT_REACTIVATED,
}


def tenant_set_status(*, tenant_ids: Iterable[uuid.UUID], status: Tenant.Status) -> int:
    """Suspend or reactivate tenants (an operator's action). Returns how many changed.

    A suspended tenant's credentials get 403 tenant-suspended from the next request on.
    """
    with transaction.atomic(), operator_scope("an operator changing tenants' status"):
        tenants = Tenant.objects.filter(pk__in=list(tenant_ids), deleted_at__isnull=True).exclude(
            status=status
        )
        changed = list(tenants.select_for_update(no_key=True).values_list("pk", "status"))
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
            stored = (
                Tenant.objects.select_for_update(no_key=True)
                .select_related("plan")
                .get(pk=tenant.pk)
            )
            before = _operator_values(stored, fields)
        tenant.save()
        after = _operator_values(tenant, fields)
        if adding:
            _record_tenant_change(tenant, TenancyAction.TENANT_CREATED, audit.created(after))
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
        return TenancyAction.TENANT_PLAN_CHANGED
    return TenancyAction.TENANT_UPDATED


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
        _record_plan_change(plan.pk, TenancyAction.PLAN_CREATED, audit.created(_plan_values(plan)))
        return plan
    before = _plan_values(Plan.objects.select_for_update().get(pk=plan.pk))
    plan.save()
    changes = audit.diff(before, _plan_values(plan))
    if changes:
        _record_plan_change(plan.pk, TenancyAction.PLAN_UPDATED, changes)
        for tenant_id in plan.tenants.values_list("pk", flat=True):
            access_changed(tenant_id)
    return plan


@transaction.atomic
def plan_delete(*, plan: Plan) -> None:
    """Delete a plan no tenant is on (the foreign key protects the others)."""
    values = _plan_values(plan)
    plan_id = plan.pk
    plan.delete()
    _record_plan_change(plan_id, TenancyAction.PLAN_DELETED, audit.deleted(values))


def _record_plan_change(plan_id: int, action: str, changes: dict) -> None:
    audit.record_platform(action=action, target_type="plan", target_id=plan_id, changes=changes)
