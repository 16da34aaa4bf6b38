"""How long each tenant's data is kept: the plan sets it, the tenant may keep less.

A plan carries `audit_retention_days` and `notification_retention_days`: the most a tenant on
it keeps, and what it keeps unless it chose less. A tenant may choose less
(`PATCH /api/v1/tenant/`, kernel/tenants.py), never more; its choice is bounded by its plan's
at every run, so that an operator moving a tenant to a smaller plan shortens its retention from
the next prune on, with nothing else to do. The effective value is
`min(tenant's or plan's, plan's)` (`Tenant.audit_retention`, and the SQL below).

The prune jobs walk the tenants in batches of `RETENTION_BATCH_SIZE`, in id order, one query per
batch giving each tenant's cut-off: never all the tenants at once, and never a query per tenant
to learn it.
"""

import datetime
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import F, Q
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from kernel.tenancy.models import Tenant

AUDIT = "audit"
NOTIFICATION = "notification"
KINDS = (AUDIT, NOTIFICATION)
# Tenants per batch: one query reads their cut-offs, one deletes what is past them.
RETENTION_BATCH_SIZE = 500


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """A batch of tenants, each with the time before which its data of one kind goes."""

    by_tenant: dict[uuid.UUID, datetime.datetime]

    def q(self, *, tenant_field: str = "tenant_id", time_field: str = "created_at") -> Q:
        """The rows past their tenant's cut-off: one condition per distinct cut-off (tenants of
        the same retention share one), so that the statement stays short however many tenants
        the batch holds."""
        grouped: dict[datetime.datetime, list[uuid.UUID]] = {}
        for tenant_id, cutoff in self.by_tenant.items():
            grouped.setdefault(cutoff, []).append(tenant_id)
        condition = Q(pk__in=[])
        for cutoff, tenant_ids in grouped.items():
            condition |= Q(**{f"{tenant_field}__in": tenant_ids, f"{time_field}__lt": cutoff})
        return condition


def effective_days(kind: str):
    """The effective retention of `kind` as a query expression on Tenant."""
    if kind not in KINDS:
        raise ValueError(f"Unknown retention {kind!r}.")
    plan_days = F(f"plan__{kind}_retention_days")
    return Least(Coalesce(F(f"{kind}_retention_days"), plan_days), plan_days)


def cutoff_batches(
    kind: str, *, now: datetime.datetime | None = None, batch_size: int = RETENTION_BATCH_SIZE
) -> Iterator[Cutoffs]:
    """Every tenant's cut-off for `kind`, `batch_size` tenants at a time.

    Deleted tenants included: their data goes with them when they are purged, and until then
    it ages like anyone's. Tenant rows belong to no tenant: no scope is needed to read them.
    """
    now = now or timezone.now()
    last: uuid.UUID | None = None
    while True:
        tenants = Tenant.objects.order_by("pk")
        if last is not None:
            tenants = tenants.filter(pk__gt=last)
        rows = list(
            tenants.annotate(days=effective_days(kind)).values_list("pk", "days")[:batch_size]
        )
        if not rows:
            return
        yield Cutoffs({pk: now - datetime.timedelta(days=days) for pk, days in rows})
        if len(rows) < batch_size:
            return
        last = rows[-1][0]
