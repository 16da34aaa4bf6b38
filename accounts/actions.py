"""The audit actions of the accounts feature (kernel/audit.py), registered from
AccountsConfig.ready(). The values are what the audit log stores: they never change. A tenant's
roles, members and invitations keep the `tenants.` prefix they were recorded under."""

from enum import StrEnum


class AccountsAction(StrEnum):
    """What people, groups, API keys, roles, members and invitations go through."""

    USER_CREATED = "accounts.user.created"
    USER_UPDATED = "accounts.user.updated"
    USER_DEACTIVATED = "accounts.user.deactivated"
    USER_REACTIVATED = "accounts.user.reactivated"
    USER_DELETED = "accounts.user.deleted"
    # The person asked for their erasure, or an operator did: deactivated at once...
    USER_ERASURE_REQUESTED = "accounts.user.erasure_requested"
    # ...and erased by the job (accounts/erasure.py).
    USER_ERASED = "accounts.user.erased"
    USER_LOGGED_OUT = "accounts.user.logged_out"
    USER_PASSWORD_CHANGED = "accounts.user.password_changed"  # noqa: S105  (an action, not a secret)
    USER_PASSWORD_RESET = "accounts.user.password_reset"  # noqa: S105  (an action, not a secret)
    USER_PASSWORD_SET = "accounts.user.password_set"  # noqa: S105  (an action, not a secret)
    USER_PRIVILEGES_CHANGED = "accounts.user.privileges_changed"
    USER_MFA_ENABLED = "accounts.user.mfa_enabled"
    USER_MFA_DISABLED = "accounts.user.mfa_disabled"
    USER_RECOVERY_CODES_REGENERATED = "accounts.user.recovery_codes_regenerated"
    USER_RECOVERY_CODE_USED = "accounts.user.recovery_code_used"
    SSO_CONFIGURED = "accounts.sso.configured"
    SSO_UPDATED = "accounts.sso.updated"
    SSO_REMOVED = "accounts.sso.removed"
    SSO_MEMBER_PROVISIONED = "accounts.sso.member_provisioned"
    SSO_BREAK_GLASS_SIGN_IN = "accounts.sso.break_glass_sign_in"
    GROUP_CREATED = "accounts.group.created"
    GROUP_UPDATED = "accounts.group.updated"
    GROUP_DELETED = "accounts.group.deleted"
    API_KEY_CREATED = "accounts.api_key.created"
    API_KEY_REVOKED = "accounts.api_key.revoked"
    ROLE_CREATED = "tenants.role.created"
    ROLE_UPDATED = "tenants.role.updated"
    ROLE_DELETED = "tenants.role.deleted"
    MEMBER_ROLES_CHANGED = "tenants.member.roles_changed"
    MEMBER_REMOVED = "tenants.member.removed"
    INVITATION_CREATED = "tenants.invitation.created"
    INVITATION_REVOKED = "tenants.invitation.revoked"
    INVITATION_ACCEPTED = "tenants.invitation.accepted"
