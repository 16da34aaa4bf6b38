"""Background jobs of the tenants app: thin, they call services."""

from celery import shared_task

from tenants import audit, services


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def tenant_purge_task(*, tenant_id: str) -> bool:
    """Delete a soft-deleted tenant's data; queued on commit by services.tenant_delete."""
    return services.tenant_purge(tenant_id=tenant_id)


@shared_task
def audit_prune_task() -> int:
    """Delete the audit events older than AUDIT_RETENTION_DAYS, every tenant's and the
    platform's (beat, hourly).

    Enters the operator scope itself (tenants.audit.prune): the scope never travels in a task
    message.
    """
    return audit.prune()
