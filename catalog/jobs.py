"""Jobs: background work a client started (a bulk import) and follows at /api/v1/jobs/{id}/.

The transitions every kind of job goes through, each in a transaction of
its own: pending → running → succeeded | failed. A job is `succeeded` when it went through all of
its input, even if some rows were refused (they are counted in `failed` and listed in `errors`);
`failed` means the job itself could not finish, and `detail` says why.
"""

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog.models import Job, JobFile
from kernel.events import publish
from kernel.principals import Principal
from kernel.tenancy.models import Tenant

# A job whose task keeps being redelivered (its worker dies on it, say of memory) stops being
# retried after this many starts, and fails instead of taking down worker after worker.
MAX_ATTEMPTS = 3


def job_begin(*, job_id: uuid.UUID) -> Job | None:
    """Mark the job running and return it; None when there is nothing (left) to do.

    A task delivered a second time finds its job finished (nothing to do), or still `running`
    because the worker that had it died: it then starts over from the first row, with its
    counts reset (upserts by SKU make re-applying the rows already written harmless), unless it
    has been started MAX_ATTEMPTS times already.
    """
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in Job.FINISHED:
            return None
        if job.attempts >= MAX_ATTEMPTS:
            job_finish(
                job=job,
                status=Job.Status.FAILED,
                detail=f"The job was interrupted {job.attempts} times and was given up.",
            )
            return None
        now = timezone.now()
        job.status = Job.Status.RUNNING
        job.attempts += 1
        job.started_at = now
        job.processed = job.succeeded = job.failed = job.errors_omitted = 0
        job.errors = []
        job.save(
            update_fields=[
                "status",
                "attempts",
                "started_at",
                "processed",
                "succeeded",
                "failed",
                "errors",
                "errors_omitted",
            ]
        )
        return job


def job_progress(*, job: Job) -> None:
    """Store the job's counts and errors as they are now; call it in the transaction whose writes
    they count, so that they commit (or roll back) together."""
    Job.objects.filter(pk=job.pk).update(
        processed=job.processed,
        succeeded=job.succeeded,
        failed=job.failed,
        errors=job.errors,
        errors_omitted=job.errors_omitted,
    )


@transaction.atomic
def job_finish(*, job: Job, status: Job.Status, detail: str = "", topic: str | None = None) -> Job:
    """The job's final state; its file is deleted and, with `topic`, an event published after
    commit with the job's id, status and counts."""
    job.status = status
    job.detail = detail
    job.finished_at = timezone.now()
    Job.objects.filter(pk=job.pk).update(
        status=job.status,
        detail=job.detail,
        finished_at=job.finished_at,
        processed=job.processed,
        succeeded=job.succeeded,
        failed=job.failed,
        errors=job.errors,
        errors_omitted=job.errors_omitted,
    )
    JobFile.objects.filter(job_id=job.pk).delete()
    if topic is not None:
        publish(topic=topic, data=job_event_data(job), actor=job_actor(job))
    return job


def job_abandon(*, job_id: uuid.UUID, detail: str) -> None:
    """Fail a job that never started (its task could not be queued); a no-op once it has."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, status=Job.Status.PENDING).first()
        if job is not None:
            job_finish(job=job, status=Job.Status.FAILED, detail=detail)


def job_event_data(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "total": job.total,
        "processed": job.processed,
        "succeeded": job.succeeded,
        "failed": job.failed,
    }


def job_creator(actor: Principal | None) -> Mapping[str, uuid.UUID | None]:
    """The `created_by_*` fields for a job started by `actor` (None: a command or the system)."""
    user = getattr(actor, "user", None)
    api_key = getattr(actor, "api_key", None)
    return {
        "created_by_user_id": getattr(user, "pk", None),
        "created_by_api_key_id": getattr(api_key, "pk", None),
    }


class _Ref:
    """Stands for a user or an API key known only by its id: all an event's actor needs."""

    def __init__(self, pk: uuid.UUID) -> None:
        self.pk = pk


def job_actor(job: Job) -> Principal | None:
    """Who started the job, in the form `kernel.events.publish()` names actors, so that the event
    of its end is theirs (and, for instance, is not notified back to them)."""
    if job.created_by_user_id is None and job.created_by_api_key_id is None:
        return None
    return Principal(
        tenant=Tenant(pk=job.tenant_id),
        permissions=frozenset(),
        user=_Ref(job.created_by_user_id) if job.created_by_user_id else None,
        api_key=_Ref(job.created_by_api_key_id) if job.created_by_api_key_id else None,
    )
