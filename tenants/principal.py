"""Who is calling, in which tenant, with which permissions: resolved once per request."""

from dataclasses import dataclass, field
from typing import Any

from tenants.models import Membership, Tenant


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: Tenant
    permissions: frozenset[str]
    user: Any = None
    membership: Membership | None = None
    # Names of the member's roles (owner, admin, …): what "only an owner may" rules read.
    roles: frozenset[str] = frozenset()
    # Set when the caller is a machine (API key) rather than a person.
    api_key: Any = None
    # The validated access token's claims, for people.
    claims: dict = field(default_factory=dict)

    def has_permission(self, code: str) -> bool:
        return code in self.permissions
