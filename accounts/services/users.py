"""Writes on accounts: sign-up, passwords, sessions, operators' changes to users and groups.
Keyword-only arguments, one transaction each.

Each write records its audit event in its own transaction (kernel/audit.py). An account is
global but the audit log is per tenant: an event about the account itself (a password changed
or reset) is recorded in every tenant the person belongs to, since each of them loses the
sessions it ended. An operator's change to an account is recorded in the platform's log, and in
those tenants too where it concerns them (`user_operator_save`, `user_delete`).

"""

import uuid

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.db import IntegrityError, transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.actions import AccountsAction
from accounts.sessions import issue_tokens
from accounts.tasks import send_email_task
from kernel import audit
from kernel.context import operator_scope, tenant_context
from kernel.principals import access_changed, revoke_session
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import Tenant
from kernel.tenancy.selectors import tenants_of_user
from kernel.tenants import tenant_create, tenant_slug_from_name

User = get_user_model()

# One answer whether the email has an account or the slug is taken: which emails have accounts
# is nobody's business. A slug taken stays a 409, as the API promises.
SIGNUP_CONFLICT = (
    "This email or tenant slug cannot be used: choose another slug, or sign in if you have an "
    "account."
)


def signup(
    *, email: str, password: str, name: str, tenant_name: str, tenant_slug: str | None = None
):
    """A new user who owns a new tenant, signed in to it."""
    email = User.objects.normalize_email(email)
    slug = tenant_slug or tenant_slug_from_name(tenant_name)
    with transaction.atomic():
        if User.objects.filter(email=email).exists() or Tenant.objects.filter(slug=slug).exists():
            raise Problem(ProblemType.CONFLICT, detail=SIGNUP_CONFLICT)
        try:
            with transaction.atomic():
                user = User.objects.create_user(email, password, name=name)
                tenant = tenant_create(
                    name=tenant_name, slug=slug, owner=user, actor=audit.Actor.user(user)
                )
        except IntegrityError as exc:  # lost a race for the same email or slug
            raise Problem(ProblemType.CONFLICT, detail=SIGNUP_CONFLICT) from exc
    return user, tenant, issue_tokens(user=user, tenant=tenant)


def _set_password(user, new_password: str, *, action: str) -> None:
    """Every token issued before is refused from now on: they carry a digest of the old hash,
    and the cached principals holding it are invalidated in each of the user's tenants."""
    password_validation.validate_password(new_password, user)
    user.set_password(new_password)
    user.save(update_fields=["password"])
    # The password is not a value the log keeps: the marker says only that it changed.
    record_account_change(user, action, changes={"password": [audit.REDACTED, audit.REDACTED]})


def record_account_change(user, action: str, *, changes: dict | None = None) -> list[Tenant]:
    """A change to the person's account (their password, their second factor) in the audit log
    of every tenant they belong to, and their cached principals there invalidated: it changes
    what their credentials may do everywhere. The tenants, for a caller with more to do."""
    # In one order, the tenants' ids: each event locks its tenant's audit chain head until the
    # transaction ends, and two transactions locking the same heads in another order deadlock.
    tenants = sorted(tenants_of_user(user_id=user.id), key=lambda tenant: tenant.id)
    for tenant in tenants:
        with tenant_context(tenant.id):
            audit.record(
                tenant_id=tenant.id,
                action=action,
                target_type="user",
                target_id=user.pk,
                changes=changes,
                actor=audit.Actor.user(user),
            )
        access_changed(tenant.id)
    return tenants


@transaction.atomic
def password_change(*, user, tenant, new_password: str) -> dict[str, str]:
    """Set a new password and sign in afresh to `tenant`."""
    _set_password(user, new_password, action=AccountsAction.USER_PASSWORD_CHANGED)
    return issue_tokens(user=user, tenant=tenant)


def password_reset_request(*, email: str) -> None:
    """Email a single-use reset link if the account exists; say nothing either way."""
    user = User.objects.filter(email=User.objects.normalize_email(email), is_active=True).first()
    if user is None:
        return
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    link = settings.PASSWORD_RESET_URL.format(uid=uid, token=token)
    transaction.on_commit(
        lambda: send_email_task.delay(
            to=user.email,
            subject="Reset your password",
            body=f"Use this link within {settings.PASSWORD_RESET_TIMEOUT // 60} minutes to "
            f"choose a new password:\n\n{link}\n\nIf you did not ask for it, ignore this email.",
        )
    )


def password_reset_confirm(*, user, token: str, new_password: str) -> None:
    # The token is tied to the current password hash, so it works once: using it changes the hash.
    if not default_token_generator.check_token(user, token):
        raise Problem(ProblemType.VALIDATION_ERROR, detail="The reset link is invalid or expired.")
    with transaction.atomic():
        _set_password(user, new_password, action=AccountsAction.USER_PASSWORD_RESET)


@transaction.atomic
def logout(*, refresh, tenant_id: uuid.UUID, session_id: str, user_id: uuid.UUID) -> None:
    """End one session: its refresh token is blacklisted, its access tokens refused at once."""
    refresh.blacklist()
    revoke_session(tenant_id=tenant_id, session_id=session_id)
    user = User.objects.filter(pk=user_id).first()
    # A tenant purged since the token was issued has no log left to write to.
    if user is not None and Tenant.objects.filter(pk=tenant_id).exists():
        audit.record(
            tenant_id=tenant_id,
            action=AccountsAction.USER_LOGGED_OUT,
            target_type="user",
            target_id=user.pk,
            actor=audit.Actor.user(user),
        )


# --- operators' changes to users ------------------------------------------------------------
# A user belongs to no tenant: an operator's change is recorded in the platform's audit log.
# What a tenant would want to know about one of its members (deactivated or reactivated, a
# password set, the email or name changed, the account deleted) is recorded in each tenant the
# person belongs to as well, with the operator as the actor, and ends the sessions it should:
# those fields are part of every cached principal.

# The fields of a user each kind of change covers, so that each kind can be found by its action;
# `is_active` is a deactivation or a reactivation, by its new value.
_USER_ACTIONS = {
    "email": AccountsAction.USER_UPDATED,
    "name": AccountsAction.USER_UPDATED,
    "is_staff": AccountsAction.USER_PRIVILEGES_CHANGED,
    "is_superuser": AccountsAction.USER_PRIVILEGES_CHANGED,
    "groups": AccountsAction.USER_PRIVILEGES_CHANGED,
    "user_permissions": AccountsAction.USER_PRIVILEGES_CHANGED,
    "password": AccountsAction.USER_PASSWORD_SET,
}
# What the user's tenants see: the operators' own privileges are none of theirs.
_TENANT_FIELDS = frozenset({"email", "name", "is_active", "password"})


def _user_values(user, *, groups=None, user_permissions=None) -> dict:
    values = {field: getattr(user, field) for field in ("email", "name", "is_active")}
    values |= {"is_staff": user.is_staff, "is_superuser": user.is_superuser}
    if groups is not None:
        values["groups"] = sorted(group.name for group in groups)
    if user_permissions is not None:
        values["user_permissions"] = sorted(
            f"{permission.content_type.app_label}.{permission.codename}"
            for permission in user_permissions
        )
    return values


def _password_marker(user) -> str | None:
    # Never the hash: only whether there is a password one can sign in with.
    return audit.REDACTED if user.has_usable_password() else None


def _user_action(field: str, change: list) -> str:
    if field == "is_active":
        return AccountsAction.USER_REACTIVATED if change[1] else AccountsAction.USER_DEACTIVATED
    return _USER_ACTIONS[field]


@transaction.atomic
def user_operator_save(*, user, groups=None, user_permissions=None):
    """Save a user as an operator (the admin) or the system (`create_operator`) changed it.

    `groups` and `user_permissions`, when given, replace the user's. Records one platform event
    per kind of change (`accounts.user.created`; `updated`, `deactivated` or `reactivated`,
    `privileges_changed`, `password_set`); a save that changes nothing records nothing. The
    password is compared by its hash and recorded as a marker only.
    """
    adding = user._state.adding
    if adding:
        user.save()
        if groups is not None:
            user.groups.set(groups)
        if user_permissions is not None:
            user.user_permissions.set(user_permissions)
        values = _user_values(user, groups=groups, user_permissions=user_permissions)
        audit.record_platform(
            action=AccountsAction.USER_CREATED,
            target_type="user",
            target_id=user.pk,
            changes=audit.created(values) | {"password": [None, _password_marker(user)]},
        )
        return user

    stored = User.objects.select_for_update().get(pk=user.pk)
    before = _user_values(
        stored,
        groups=stored.groups.all() if groups is not None else None,
        user_permissions=(
            stored.user_permissions.select_related("content_type")
            if user_permissions is not None
            else None
        ),
    )
    user.save()
    if groups is not None:
        user.groups.set(groups)
    if user_permissions is not None:
        user.user_permissions.set(user_permissions)
    changes = audit.diff(
        before,
        _user_values(
            user,
            groups=groups,
            user_permissions=(
                user.user_permissions.select_related("content_type")
                if user_permissions is not None
                else None
            ),
        ),
    )
    if stored.password != user.password:
        changes["password"] = [_password_marker(stored), _password_marker(user)]

    grouped: dict[str, dict] = {}
    for field, change in changes.items():
        grouped.setdefault(_user_action(field, change), {})[field] = change
    for action, action_changes in grouped.items():
        audit.record_platform(
            action=action, target_type="user", target_id=user.pk, changes=action_changes
        )
    for_tenants = {
        action: {field: change for field, change in fields.items() if field in _TENANT_FIELDS}
        for action, fields in grouped.items()
    }
    _record_in_users_tenants(user, {a: c for a, c in for_tenants.items() if c})
    return user


@transaction.atomic
def user_delete(*, user) -> None:
    """Delete a user (an operator, in the admin), their memberships with them.

    Recorded in the platform's log and in each tenant the person belonged to, which loses a
    member and that member's sessions.
    """
    values = _user_values(user)
    user_id = user.pk
    # Their tenants before the memberships go with the user.
    tenants = tenants_of_user(user_id=user_id)
    with operator_scope("an operator deleting a user and their memberships"):
        user.delete()
    audit.record_platform(
        action=AccountsAction.USER_DELETED,
        target_type="user",
        target_id=user_id,
        changes=audit.deleted(values),
    )
    tenant_values = {field: values[field] for field in ("email", "name")}
    for tenant in tenants:
        _record_in_tenant(
            tenant.id, user_id, {AccountsAction.USER_DELETED: audit.deleted(tenant_values)}
        )


def _record_in_users_tenants(user, events: dict[str, dict]) -> None:
    if not events:
        return
    # In the tenants' ids' order, as record_account_change and for the same reason.
    for tenant in sorted(tenants_of_user(user_id=user.pk), key=lambda tenant: tenant.id):
        _record_in_tenant(tenant.id, user.pk, events)


def _record_in_tenant(tenant_id: uuid.UUID, user_id: uuid.UUID, events: dict[str, dict]) -> None:
    """The events in the tenant's log, and the tenant's cached principals invalidated: a
    deactivated member, or one whose password an operator set, is refused from the next request,
    their open sockets closed."""
    with tenant_context(tenant_id):
        for action, changes in events.items():
            audit.record(
                tenant_id=tenant_id,
                action=action,
                target_type="user",
                target_id=user_id,
                changes=changes,
            )
    access_changed(tenant_id)


# --- operators' changes to groups -----------------------------------------------------------
# A group grants its permissions to every staff member in it: a change to one can raise what
# operators may do in the admin, so it is recorded in the platform's log like a user's.


def _group_values(group, *, permissions) -> dict:
    return {
        "name": group.name,
        "permissions": sorted(
            f"{permission.content_type.app_label}.{permission.codename}"
            for permission in permissions
        ),
    }


def _group_permissions(group):
    return group.permissions.select_related("content_type")


@transaction.atomic
def group_operator_save(*, group, permissions=None):
    """Save a group as an operator changed it in the admin.

    `permissions`, when given, replace the group's. Records `accounts.group.created`, or
    `accounts.group.updated` with the diff of the name and the permissions (`app_label.codename`);
    a save that changes nothing records nothing.
    """
    if group._state.adding:
        group.save()
        if permissions is not None:
            group.permissions.set(permissions)
        audit.record_platform(
            action=AccountsAction.GROUP_CREATED,
            target_type="group",
            target_id=group.pk,
            changes=audit.created(_group_values(group, permissions=_group_permissions(group))),
        )
        return group

    stored = Group.objects.select_for_update().get(pk=group.pk)
    before = _group_values(stored, permissions=_group_permissions(stored))
    group.save()
    if permissions is not None:
        group.permissions.set(permissions)
    changes = audit.diff(before, _group_values(group, permissions=_group_permissions(group)))
    if changes:
        audit.record_platform(
            action=AccountsAction.GROUP_UPDATED,
            target_type="group",
            target_id=group.pk,
            changes=changes,
        )
    return group


@transaction.atomic
def group_delete(*, group) -> None:
    """Delete a group (an operator, in the admin): its members lose its permissions. Records
    `accounts.group.deleted` with its name and permissions."""
    values = _group_values(group, permissions=_group_permissions(group))
    group_id = group.pk
    group.delete()
    audit.record_platform(
        action=AccountsAction.GROUP_DELETED,
        target_type="group",
        target_id=group_id,
        changes=audit.deleted(values),
    )
