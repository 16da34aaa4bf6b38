"""The kernel's background jobs: dispatching and relaying domain events, purging a deleted
tenant, pruning the audit log.

Task names are what queued messages carry: each keeps the name it had before the kernel was
reorganised (`core.tasks…`, `tenants.tasks…`), so that messages queued before a deploy still find
their task after it.
"""

import uuid

from celery import shared_task
from django.core.cache import caches
from django.db import transaction

from kernel import audit, audit_chain
from kernel.context import operator_scope
from kernel.events.outbox import event_dispatch_task, outbox_relay_task
from kernel.exports import services as exports
from kernel.exports.services import data_export_task
from kernel.tenancy.models import Tenant

# Defined beside the outbox they work on; named here so that the worker's autodiscovery of
# `kernel.tasks` registers them.
__all__ = [
    "audit_chain_verify_task",
    "audit_prune_task",
    "data_export_task",
    "event_dispatch_task",
    "export_archives_delete_task",
    "outbox_relay_task",
    "tenant_purge_task",
]


def tenant_purge(*, tenant_id: uuid.UUID | str) -> bool:
    """Delete a soft-deleted tenant and, through the cascade, every row it owns.

    Does nothing (and says so) when the tenant is gone already or was restored in the meantime.
    """
    with transaction.atomic(), operator_scope("purging a deleted tenant's data"):
        tenant = (
            Tenant.objects.select_for_update()
            .filter(pk=tenant_id, deleted_at__isnull=False)
            .first()
        )
        if tenant is None:
            return False
        # The audit log refuses deletes but this one (kernel/audit.py); the cascade then finds
        # nothing left in it.
        audit.purge_tenant_events(tenant_id=tenant.pk)
        # Its export archives are outside the database: deleted first, by the jobs that name
        # them (a storage error leaves the tenant for the task's retry, nothing half gone).
        exports.tenant_archives_delete(tenant_id=tenant.pk)
        tenant.delete()
    return True


@shared_task(
    name="tenants.tasks.tenant_purge_task",
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def tenant_purge_task(*, tenant_id: str) -> bool:
    """Delete a soft-deleted tenant's data; queued on commit by kernel.tenants.tenant_delete."""
    return tenant_purge(tenant_id=tenant_id)


@shared_task(name="tenants.tasks.audit_prune_task")
def audit_prune_task() -> int:
    """Delete each tenant's audit events older than its retention (its plan's, or less if it
    chose less: kernel/retention.py), and the platform's older than AUDIT_RETENTION_DAYS (beat,
    hourly).

    Enters the operator scope itself (kernel.audit.prune): the scope never travels in a task
    message.
    """
    return audit.prune()


@shared_task(name="tenants.tasks.audit_chain_verify_task")
def audit_chain_verify_task() -> int:
    """Verify each tenant's audit hash chain from where the last run left it (beat); a break is
    logged (`audit_chain_broken`) and counted (`tenantapi_audit_chain_breaks_total`).

    Where each chain was verified up to is remembered in the platform cache: losing it costs one
    walk of the whole chain, nothing more.
    """
    return audit_chain.verify_recent(cache=caches["platform"])


@shared_task(name="kernel.tasks.export_archives_delete_task")
def export_archives_delete_task() -> int:
    """Delete the export archives whose link has expired (beat, hourly)."""
    return exports.archives_delete_expired()
