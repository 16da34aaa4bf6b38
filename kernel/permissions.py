"""Permission codes and the built-in roles made of them.

Codes are data (the Permission table); this module is the single place that names them in code.
"""

from enum import StrEnum

from kernel.problems import Problem, ProblemType


class Perm(StrEnum):
    TENANT_MANAGE = "tenant.manage"
    TENANT_EXPORT = "tenant.export"
    MEMBERS_READ = "members.read"
    MEMBERS_MANAGE = "members.manage"
    ROLES_MANAGE = "roles.manage"
    APIKEYS_MANAGE = "apikeys.manage"
    AUDIT_READ = "audit.read"
    CATALOG_READ = "catalog.read"
    CATALOG_WRITE = "catalog.write"
    CATALOG_IMPORT = "catalog.import"
    NOTIFICATIONS_READ = "notifications.read"
    WEBHOOKS_MANAGE = "webhooks.manage"
    OAUTH_APPS_MANAGE = "oauth_apps.manage"


PERMISSION_DESCRIPTIONS: dict[Perm, str] = {
    Perm.TENANT_MANAGE: "Change the tenant's settings.",
    Perm.TENANT_EXPORT: "Export all of the tenant's data as an archive.",
    Perm.MEMBERS_READ: "See the tenant's members and invitations.",
    Perm.MEMBERS_MANAGE: "Invite, change and remove members.",
    Perm.ROLES_MANAGE: "Define the tenant's own roles.",
    Perm.APIKEYS_MANAGE: "Create, list and revoke API keys.",
    Perm.AUDIT_READ: "Read the audit log.",
    Perm.CATALOG_READ: "Read products and categories.",
    Perm.CATALOG_WRITE: "Create, change and delete products and categories.",
    Perm.CATALOG_IMPORT: "Import products in bulk.",
    Perm.NOTIFICATIONS_READ: "Receive and read notifications.",
    Perm.WEBHOOKS_MANAGE: "Manage webhook endpoints.",
    Perm.OAUTH_APPS_MANAGE: "Register and manage the tenant's third-party (OAuth) apps.",
}

OWNER = "owner"
ADMIN = "admin"
EDITOR = "editor"
VIEWER = "viewer"

# Owner holds every permission and, as the only role that can, may delete the tenant and transfer
# ownership; those two rights belong to the role itself, not to a permission code.
BUILTIN_ROLES: dict[str, tuple[str, frozenset[Perm]]] = {
    OWNER: ("Everything, including deleting the tenant.", frozenset(Perm)),
    ADMIN: ("Everything but deleting the tenant and transferring ownership.", frozenset(Perm)),
    EDITOR: (
        "Work on the catalog; receive notifications.",
        frozenset(
            {
                Perm.CATALOG_READ,
                Perm.CATALOG_WRITE,
                Perm.CATALOG_IMPORT,
                Perm.NOTIFICATIONS_READ,
                Perm.MEMBERS_READ,
            }
        ),
    ),
    VIEWER: (
        "Read only.",
        frozenset({Perm.CATALOG_READ, Perm.NOTIFICATIONS_READ, Perm.MEMBERS_READ}),
    ),
}


def ensure_owner(*, actor, detail: str) -> None:
    """Refuse (403) unless `actor`, a principal, holds the owner role: the rights that belong to
    the role rather than to a permission code (deleting the tenant, granting ownership)."""
    # Role names are unique per tenant, so "owner" among them is the built-in owner role.
    if OWNER not in actor.roles:
        raise Problem(ProblemType.PERMISSION_DENIED, detail=detail)
