"""Starting a bulk import job, in the request (catalog/imports/__init__.py)."""

from django.db import transaction

from catalog.actions import CatalogAction
from catalog.imports.files import ImportSource
from catalog.imports.worker import catalog_import_task
from catalog.jobs import PRODUCTS_IMPORT
from kernel import audit, jobs
from kernel.models import Job, JobFile
from kernel.principals import Principal


@transaction.atomic
def import_start(*, actor: Principal | None, source: ImportSource) -> Job:
    """Store the job and its file; its task is queued once they are committed."""
    job = Job.objects.create(
        kind=PRODUCTS_IMPORT.code, total=source.total, **jobs.job_creator(actor)
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
    jobs.job_enqueue(
        job=job,
        send=catalog_import_task.delay,
        detail="The import could not be started; upload the file again.",
    )
    return job
