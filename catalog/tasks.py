"""Background jobs of the catalog: thin, they call into catalog's modules."""

import uuid

from celery import shared_task

from catalog import imports


@shared_task
def catalog_import_task(job_id: str) -> str | None:
    """Run a bulk import job (catalog/imports.py) in the tenant it was queued under."""
    return imports.import_run(job_id=uuid.UUID(job_id))
