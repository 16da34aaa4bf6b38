"""Starting a bulk import job, in the request (catalog/imports/__init__.py)."""

import uuid

import structlog
from django.db import transaction

from catalog import jobs
from catalog.actions import CatalogAction
from catalog.imports.files import ImportSource
from catalog.imports.worker import catalog_import_task
from catalog.models import Job, JobFile
from kernel import audit
from kernel.context import require_tenant_id, tenant_context
from kernel.principals import Principal

# --- starting a job (in the request) ------------------------------------------------------------

log = structlog.get_logger(__name__)


@transaction.atomic
def import_start(*, actor: Principal | None, source: ImportSource) -> Job:
    """Store the job and its file; its task is queued once they are committed."""
    job = Job.objects.create(
        kind=Job.Kind.PRODUCTS_IMPORT, total=source.total, **jobs.job_creator(actor)
    )
    JobFile.objects.create(
        job=job, name=source.name[:255], format=source.format, content=source.content
    )
    # One event for the import, not one per row: the job keeps each row's outcome.
    audit.record(
        tenant_id=job.tenant_id,
        action=CatalogAction.IMPORT_STARTED,
        target_type="job",
        target_id=job.pk,
        changes=audit.created(
            {"file": source.name[:255], "format": source.format, "rows": source.total}
        ),
    )
    tenant_id = require_tenant_id()
    transaction.on_commit(lambda: _enqueue(tenant_id=tenant_id, job_id=job.pk))
    return job


def _enqueue(*, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    # The task runs in the tenant it is sent under. A commit callback may run after the scope
    # it was registered in has ended (the outermost transaction of a command or a test), so
    # enter the job's tenant here rather than rely on whichever is current.
    with tenant_context(tenant_id):
        try:
            catalog_import_task.delay(str(job_id))
        except Exception:
            # Most likely the broker is unreachable: the job would wait forever. Say so on it.
            log.exception("catalog_import_not_queued", job_id=str(job_id))
            jobs.job_abandon(
                job_id=job_id, detail="The import could not be started; upload the file again."
            )
