"""Writes on a tenant's roles. Keyword-only arguments, one transaction each; the grant rules are
accounts/services/grants.py.
"""

from collections.abc import Sequence

from django.db import IntegrityError, transaction

from accounts.actions import AccountsAction
from accounts.services.grants import ensure_holds, role_permissions_with_implied
from kernel import audit
from kernel.principals import Principal, access_changed
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import (
    Role,
    Tenant,
)
from kernel.tenancy.selectors import (
    role_in_use,
)


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
    ensure_holds(actor=actor, codes=codes)
    _ensure_role_name_free(tenant=tenant, name=name)
    role = _save_role(
        Role(tenant=tenant, name=name, description=description, permissions=codes),
        force_insert=True,
    )
    audit.record(
        tenant_id=tenant.id,
        action=AccountsAction.ROLE_CREATED,
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
    ensure_holds(actor=actor, codes=role.permissions)
    before = _role_values(role)
    if permissions is not None:
        role.permissions = role_permissions_with_implied(permissions)
        ensure_holds(actor=actor, codes=role.permissions)
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
            action=AccountsAction.ROLE_UPDATED,
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
        action=AccountsAction.ROLE_DELETED,
        target_type="role",
        target_id=role.pk,
        changes=audit.deleted(_role_values(role)),
    )
    role.delete()
