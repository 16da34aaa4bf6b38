"""Jobs: background work a client started and follows at /api/v1/jobs/{id}/.

Every feature runs its work through this one resource: the catalog's bulk import, the export of
a tenant's data, a person's export of their own (kernel/exports/). A feature registers its kinds
of job (`register_kind`), each with the permission that reading such a job needs, from its
`AppConfig.ready()`, as it registers its topics and audit actions.

The transitions every kind of job goes through, each in a transaction of
its own: pending → running → succeeded | failed. A job is `succeeded` when it went through all of
its input, even if some rows were refused (they are counted in `failed` and listed in `errors`);
`failed` means the job itself could not finish, and `detail` says why.
"""

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from django.db import transaction
from django.utils import timezone

from kernel.context import require_tenant_id, tenant_context
from kernel.events import publish
from kernel.models import Job, JobFile
from kernel.principals import Principal
from kernel.tenancy.models import Tenant

log = structlog.get_logger(__name__)


# --- kinds -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobKind:
    """A kind of job: who may read one.

    `read_permission`: the permission a member or key needs to see the tenant's jobs of this
    kind. `personal`: the job is its creator's alone (a person's export of their own data); no
    one else in the tenant sees it, whatever their permissions.
    """

    code: str
    read_permission: str | None = None
    personal: bool = False
    # What the API shows of a job's `result`, given the job and the request (an export signs
    # its download link there); the stored result as it is when None.
    shown_result: Callable[[Job, Any], Mapping[str, Any]] | None = None


_kinds: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> None:
    if kind.code in _kinds and _kinds[kind.code] != kind:
        raise ValueError(f"The job kind {kind.code!r} is registered twice, differently.")
    _kinds[kind.code] = kind


def kinds() -> list[JobKind]:
    return sorted(_kinds.values(), key=lambda kind: kind.code)


def readable_kinds(permissions: frozenset[str]) -> list[str]:
    """The codes of the shared (not personal) kinds whose jobs holders of `permissions` see."""
    return [
        kind.code
        for kind in kinds()
        if not kind.personal
        and (kind.read_permission is None or kind.read_permission in permissions)
    ]


def personal_kinds() -> list[str]:
    return [kind.code for kind in kinds() if kind.personal]


def kind_of(job: Job) -> JobKind:
    return _kinds.get(job.kind) or JobKind(job.kind)


# --- running -----------------------------------------------------------------------------------

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
def job_finish(
    *,
    job: Job,
    status: Job.Status,
    detail: str = "",
    topic: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> Job:
    """The job's final state, and what it made (`result`); its file is deleted and, with
    `topic`, an event published after commit with the job's id, status and counts."""
    job.status = status
    job.detail = detail
    job.finished_at = timezone.now()
    if result is not None:
        job.result = dict(result)
    Job.objects.filter(pk=job.pk).update(
        status=job.status,
        detail=job.detail,
        result=job.result,
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


def job_enqueue(*, job: Job, send: Callable[[str], Any], detail: str) -> None:
    """Queue the job's task once the job is committed: `send(job_id)` (a task's `delay`).

    A task runs in the tenant it is sent under. A commit callback may run after the scope it
    was registered in has ended (the outermost transaction of a command or a test), so the
    job's tenant is entered again there rather than relying on whichever is current. If the
    task cannot be queued (the broker is unreachable, most likely), the job would wait forever:
    it fails at once with `detail`.
    """
    tenant_id, job_id = require_tenant_id(), job.pk

    def enqueue() -> None:
        with tenant_context(tenant_id):
            try:
                send(str(job_id))
            except Exception:
                log.exception("job_not_queued", job_id=str(job_id), kind=job.kind)
                job_abandon(job_id=job_id, detail=detail)

    transaction.on_commit(enqueue)


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
