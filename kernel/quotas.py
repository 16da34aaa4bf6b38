"""Plan quotas: how many members, API keys, products and OAuth apps a tenant may have.

One function for every quota, called by the service that creates the thing, inside its
transaction, just before the INSERT:

    enforce_quota(tenant=tenant, resource=Resource.API_KEYS, count=lambda: api_key_count(...))

It locks the tenant's row (SELECT … FOR UPDATE) before counting, so that creates of one
resource in one tenant queue up behind each other: of two concurrent creates for the last slot,
the second counts only after the first has committed, and is refused. Under READ COMMITTED the
count, a statement of its own after the lock, sees that commit. The limit is read in the same
locking statement, from the database: a plan edited a moment ago applies at once.

Past the quota: 403 `quota-exceeded`, with `limit` (and `resource`) in the problem body.
"""

import uuid
from collections.abc import Callable
from enum import StrEnum

from django.db import transaction

from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import Tenant


class Resource(StrEnum):
    MEMBERS = "members"
    API_KEYS = "api_keys"
    PRODUCTS = "products"
    INVITATIONS_PER_DAY = "invitations_per_day"
    OAUTH_APPS = "oauth_apps"


# The Plan field that holds each resource's quota, and how a sentence names the resource.
_PLAN_FIELDS: dict[Resource, str] = {
    Resource.MEMBERS: "max_members",
    Resource.API_KEYS: "max_api_keys",
    Resource.PRODUCTS: "max_products",
    Resource.INVITATIONS_PER_DAY: "max_invitations_per_day",
    Resource.OAUTH_APPS: "max_oauth_apps",
}
_NOUNS: dict[Resource, str] = {
    Resource.MEMBERS: "members",
    Resource.API_KEYS: "API keys",
    Resource.PRODUCTS: "products",
    Resource.INVITATIONS_PER_DAY: "invitations a day",
    Resource.OAUTH_APPS: "OAuth apps",
}


def enforce_quota(
    *,
    tenant: Tenant | uuid.UUID,
    resource: Resource | str,
    count: Callable[[], int],
    adding: int = 1,
) -> int:
    """Refuse (403 quota-exceeded) creating `adding` more of `resource` past the plan's quota.

    `count()` returns how many the tenant has now; it runs after the tenant's row is locked.
    Returns how many more fit after these. Must run inside the transaction that then creates
    them: the lock holds until it ends.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "enforce_quota() must run inside the transaction that creates the resource: "
            "its lock is what keeps two creates from taking the last slot."
        )
    resource = Resource(resource)
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    # FOR NO KEY UPDATE: it serialises quota checks as FOR UPDATE would, but leaves alone the
    # key-share locks that inserting a row referencing the tenant takes (an audit event, written
    # under its chain head's lock): FOR UPDATE would make those wait, and a writer holding the
    # head while its insert waits on us, as we wait on the head, is a deadlock.
    limit = (
        Tenant.objects.select_for_update(of=("self",), no_key=True)
        .filter(pk=tenant_id)
        .values_list(f"plan__{_PLAN_FIELDS[resource]}", flat=True)
        .get()
    )
    used = count()
    if used + adding > limit:
        noun = _NOUNS[resource]
        raise Problem(
            ProblemType.QUOTA_EXCEEDED,
            detail=f"The plan allows {limit} {noun}; the tenant has {used}.",
            extra={"resource": resource.value, "limit": limit},
        )
    return limit - used - adding
