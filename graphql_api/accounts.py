"""The caller, their tenant and its members over GraphQL: the fields of REST's `GET /auth/me/`,
`GET /tenant/` and `GET /members/` (camelCase), read through the same selectors, refused to the
same callers.

A page of members costs a fixed number of queries whatever its size: the page with each member's
user joined to it, and every member's roles in one more query (`with_member_details`).
"""

import datetime
import uuid

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from graphql_api.context import principal_of
from graphql_api.relay import DEFAULT_PAGE_SIZE, Connection, connection
from kernel.permissions import Perm
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import Membership as MembershipModel
from kernel.tenancy.models import Tenant as TenantModel
from kernel.tenancy.selectors import member_list, tenants_of_user

# As REST's IsPerson says it (kernel/api/base.py): `me` is a person's own.
NOT_A_PERSON = (
    "This endpoint is for people signed in themselves: an API key or a third-party app "
    "cannot use it."
)

# --- types -------------------------------------------------------------------------------------


@strawberry.type(description="A person, as they see themselves (`me.user`).")
class User:
    id: uuid.UUID
    email: str
    name: str
    date_joined: datetime.datetime


@strawberry.type(description="A tenant in brief: the caller's, or another one they belong to.")
class TenantSummary:
    id: uuid.UUID
    name: str
    slug: str
    status: str
    created_at: datetime.datetime

    @strawberry.field(description="The code of the tenant's plan (`free`, `pro`, …).")
    def plan(self, root: strawberry.Parent[TenantModel]) -> str:
        return root.plan.code


@strawberry.type(description="The caller's tenant, with its settings.")
class Tenant(TenantSummary):
    settings: JSON
    require_mfa: bool = strawberry.field(
        description="Whether members who sign in with a password must have a second factor."
    )

    @strawberry.field(
        description="Days audit events are kept: the tenant's choice, at most the plan's."
    )
    def audit_retention_days(self, root: strawberry.Parent[TenantModel]) -> int:
        return root.audit_retention

    @strawberry.field(
        description="Days notifications are kept: the tenant's choice, at most the plan's."
    )
    def notification_retention_days(self, root: strawberry.Parent[TenantModel]) -> int:
        return root.notification_retention

    @strawberry.field(description="The most the plan keeps audit events, and its default.")
    def plan_audit_retention_days(self, root: strawberry.Parent[TenantModel]) -> int:
        return root.plan.audit_retention_days

    @strawberry.field(description="The most the plan keeps notifications, and its default.")
    def plan_notification_retention_days(self, root: strawberry.Parent[TenantModel]) -> int:
        return root.plan.notification_retention_days


@strawberry.type(description="Who is signed in, where, and what they may do.")
class Me:
    principal: strawberry.Private[Principal]

    @strawberry.field(description="The person signed in.")
    def user(self) -> User:
        return self.principal.user

    @strawberry.field(description="The tenant this credential acts in.")
    def tenant(self) -> TenantSummary:
        return self.principal.tenant

    @strawberry.field(description="The names of the person's roles in this tenant, sorted.")
    def roles(self) -> list[str]:
        return sorted(self.principal.roles)

    @strawberry.field(description="The permission codes the person holds here, sorted.")
    def permissions(self) -> list[str]:
        return sorted(self.principal.permissions)

    @strawberry.field(
        description="The other live tenants the person belongs to, by name (one more query)."
    )
    def tenants(self) -> list[TenantSummary]:
        current = self.principal.tenant.id
        return [
            tenant
            for tenant in tenants_of_user(user_id=self.principal.user.id)
            if tenant.id != current
        ]


@strawberry.type(description="A member's person, as the other members see them.")
class MemberUser:
    id: uuid.UUID
    email: str
    name: str


@strawberry.type(description="A role, by id and name.")
class RoleSummary:
    id: uuid.UUID
    name: str


@strawberry.type(description="A member of the tenant.")
class Member:
    id: uuid.UUID
    user: MemberUser
    created_at: datetime.datetime

    @strawberry.field(description="The member's roles, by name.")
    def roles(self, root: strawberry.Parent[MembershipModel]) -> list[RoleSummary]:
        # Prefetched for the whole page by the selector.
        return list(root.roles.all())


# --- queries -----------------------------------------------------------------------------------


@strawberry.type
class AccountsQuery:
    @strawberry.field(
        description="The person signed in, as REST's GET /auth/me/. An API key or a "
        "third-party app gets FORBIDDEN: it is nobody's account."
    )
    def me(self, info: Info) -> Me | None:
        principal = principal_of(info)
        if principal.user is None or principal.app is not None:
            raise Problem(ProblemType.PERMISSION_DENIED, detail=NOT_A_PERSON)
        return Me(principal=principal)

    @strawberry.field(description="The caller's tenant, as REST's GET /tenant/.")
    def tenant(self, info: Info) -> Tenant | None:
        return principal_of(info).tenant

    @strawberry.field(
        description="The tenant's members, oldest first (as REST's list). Needs members.read."
    )
    def members(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Member]:
        principal = principal_of(info, Perm.MEMBERS_READ)
        return connection(member_list(tenant=principal.tenant), first=first, after=after)


__all__ = ["AccountsQuery"]
