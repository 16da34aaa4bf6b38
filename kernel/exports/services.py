"""Export jobs: a tenant's whole data (`tenant_export`), a person's own (`personal_export`).

Started in a request (202 and the job), run by `data_export_task` in a worker:

1. the job is marked running; its `total` is the number of resources, `processed` counts those
   written, so a client sees progress;
2. each resource's rows are read under the scope they belong to (row-level security applies:
   the tenant in context, or, for a person, each tenant they belong to in turn) and spooled to
   disk (kernel/exports/archive.py): constant memory;
3. the archive is saved to the `exports` storage under a name no client chooses, and the job
   succeeds with `result`: the archive's name, size, SHA-256 and expiry.

The job's API view signs a download link over (tenant, job) with `django.core.signing` (the
`SECRET_KEY`): `/api/v1/exports/<token>/` serves the archive to whoever holds the link, without
the API credential, until `expires_at` (EXPORT_LINK_TTL_SECONDS after the export, 24 h by
default). A tampered link is a 404; an expired one a 410. The beat job
`export_archives_delete_task` deletes the archives past their expiry.
"""

import datetime
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import structlog
from celery import shared_task
from django.conf import settings
from django.core import signing
from django.core.files import File
from django.core.files.storage import storages
from django.db import DatabaseError, transaction
from django.urls import reverse
from django.utils import timezone

from kernel import audit, jobs, replicas
from kernel.context import operator_scope, require_tenant_id, tenant_context
from kernel.exports import registry
from kernel.exports.archive import Archive, ArchiveWriter
from kernel.models import Job
from kernel.permissions import Perm
from kernel.principals import Principal
from kernel.problems import Problem, ProblemType
from kernel.tenancy.models import Membership, Tenant

log = structlog.get_logger(__name__)


class ExportAction(StrEnum):
    """Data leaving us, in the tenant's audit log (registered from KernelConfig.ready())."""

    TENANT_EXPORTED = "tenants.tenant.exported"
    PERSONAL_DATA_EXPORTED = "tenants.member.data_exported"
    # In the platform log: an operator exported a person's data from the admin. Named as the
    # platform log's other events about a person (`accounts.user.*`), so that an operator's
    # search for what was done to someone finds it beside their erasure.
    USER_DATA_EXPORTED = "accounts.user.data_exported"


_LINK_SALT = "kernel.exports.download"
# Rows read per round trip of a resource's server-side cursor.
CHUNK_SIZE = 2000


def _shown_result(job: Job, request) -> dict[str, Any]:
    """What the API shows of a succeeded export: the signed link while the archive exists."""
    result = job.result
    shown = {key: result[key] for key in ("expires_at", "size", "sha256") if key in result}
    shown["download_url"] = download_url(job, request)
    return shown


TENANT_EXPORT = jobs.JobKind(
    "tenant_export", read_permission=Perm.TENANT_EXPORT, shown_result=_shown_result
)
PERSONAL_EXPORT = jobs.JobKind("personal_export", personal=True, shown_result=_shown_result)
EXPORT_KINDS = (TENANT_EXPORT.code, PERSONAL_EXPORT.code)


# --- starting (in the request) -----------------------------------------------------------------


@transaction.atomic
def tenant_export_start(*, actor: Principal) -> Job:
    """Start an export of the tenant in context's whole data; the job, pending."""
    tenant_id = require_tenant_id()
    job = Job.objects.create(
        kind=TENANT_EXPORT.code,
        total=len(registry.tenant_resources()),
        **jobs.job_creator(actor),
    )
    audit.record(
        tenant_id=tenant_id,
        action=ExportAction.TENANT_EXPORTED,
        target_type="tenant",
        target_id=tenant_id,
        changes=audit.created({"job": str(job.pk)}),
    )
    jobs.job_enqueue(
        job=job, send=data_export_task.delay, detail="The export could not be started; ask again."
    )
    return job


@transaction.atomic
def personal_export_start(*, actor: Principal) -> Job:
    """Start an export of the person's own data in every tenant they belong to; the job,
    pending, in the tenant of their sign-in and theirs alone (a personal kind)."""
    tenant_id = require_tenant_id()
    job = Job.objects.create(
        kind=PERSONAL_EXPORT.code,
        total=len(registry.personal_resources()),
        **jobs.job_creator(actor),
    )
    audit.record(
        tenant_id=tenant_id,
        action=ExportAction.PERSONAL_DATA_EXPORTED,
        target_type="user",
        target_id=actor.user.pk,
        changes=audit.created({"job": str(job.pk)}),
    )
    jobs.job_enqueue(
        job=job, send=data_export_task.delay, detail="The export could not be started; ask again."
    )
    return job


@transaction.atomic
def personal_export_start_for(*, user, operator) -> Job:
    """An operator starts the export of a person's own data (the admin's action, answering a
    request the person made to us rather than through the API); the job, pending.

    The job belongs to the person (`created_by_user_id`), so that it is theirs too at
    /api/v1/jobs/, and lives in the tenant of their oldest membership of a live tenant: a job
    has a tenant, and that one is the person's for longest. Recorded there, as the person's own
    export is, and in the platform log, both with the operator as the actor. A person who
    belongs to no live tenant is refused (409): there would be no tenant to keep the job in.
    """
    with operator_scope("finding the tenant a person's export is kept in"):
        tenant_id = (
            Membership.objects.filter(user_id=user.pk, tenant__deleted_at__isnull=True)
            .order_by("created_at", "id")
            .values_list("tenant_id", flat=True)
            .first()
        )
    if tenant_id is None:
        raise Problem(
            ProblemType.CONFLICT,
            detail="The person belongs to no tenant: an export is kept in one of theirs.",
        )
    actor = audit.Actor.operator(operator)
    with tenant_context(tenant_id):
        job = Job.objects.create(
            tenant_id=tenant_id,
            kind=PERSONAL_EXPORT.code,
            total=len(registry.personal_resources()),
            created_by_user_id=user.pk,
        )
        audit.record(
            tenant_id=tenant_id,
            action=ExportAction.PERSONAL_DATA_EXPORTED,
            target_type="user",
            target_id=user.pk,
            changes=audit.created({"job": str(job.pk)}),
            actor=actor,
        )
        audit.record_platform(
            action=ExportAction.USER_DATA_EXPORTED,
            target_type="user",
            target_id=user.pk,
            changes=audit.created({"job": str(job.pk), "tenant": str(tenant_id)}),
            actor=actor,
        )
        jobs.job_enqueue(
            job=job,
            send=data_export_task.delay,
            detail="The export could not be started; ask again.",
        )
    return job


# --- running (in the worker) -------------------------------------------------------------------


@shared_task(name="kernel.tasks.data_export_task")
def data_export_task(job_id: str) -> str | None:
    """Run an export job in the tenant it was sent under; its final status."""
    job = jobs.job_begin(job_id=uuid.UUID(job_id))
    if job is None:
        return None
    writer = ArchiveWriter()
    try:
        archive = _archive_from_a_replica(job, writer)
        if archive is None:
            writer.close()
            writer = ArchiveWriter()
            archive = _build(job, writer)
        result = _store(job, archive)
    except Exception:
        log.exception("export_failed", job_id=job_id, kind=job.kind)
        jobs.job_finish(
            job=Job.objects.get(pk=job.pk),
            status=Job.Status.FAILED,
            detail="The export failed; ask for a new one.",
        )
        raise
    finally:
        writer.close()
    jobs.job_finish(job=job, status=Job.Status.SUCCEEDED, result=result)
    return job.status


def _build(job: Job, writer: ArchiveWriter) -> Archive:
    if job.kind == TENANT_EXPORT.code:
        return _tenant_archive(job, writer)
    return _personal_archive(job, writer)


def _archive_from_a_replica(job: Job, writer: ArchiveWriter) -> Archive | None:
    """The archive read from a healthy replica (kernel/replicas.py), if there is one; None when
    there is none, or when it failed mid-way: the caller then reads the primary, from the start."""
    with replicas.reads_from_replica() as alias:
        if alias is None:
            return None
        try:
            return _build(job, writer)
        except DatabaseError as error:
            replicas.mark_down(alias)
            log.warning("export_replica_failed", alias=alias, error=type(error).__name__)
    job.processed = job.succeeded = 0
    jobs.job_progress(job=job)
    return None


def _advance(job: Job, rows: int) -> None:
    job.processed += 1
    job.succeeded += rows
    jobs.job_progress(job=job)


def _tenant_archive(job: Job, writer: ArchiveWriter) -> Archive:
    tenant = Tenant.objects.get(pk=job.tenant_id)
    for resource in registry.tenant_resources():
        # A transaction on the database the rows are read from: its server-side cursor lives in it.
        with transaction.atomic(using=replicas.read_alias()):
            rows = writer.add(resource.name, resource.rows())
        _advance(job, rows)
    return writer.finish(
        {
            "kind": "tenant",
            "tenant": {"id": str(tenant.pk), "name": tenant.name, "slug": tenant.slug},
        }
    )


def _personal_archive(job: Job, writer: ArchiveWriter) -> Archive:
    user_id = job.created_by_user_id
    with operator_scope("listing the tenants of a person exporting their own data"):
        tenants = list(
            Membership.objects.filter(user_id=user_id)
            .order_by("created_at")
            .values_list("tenant_id", "tenant__name", "tenant__slug")
        )
    for resource in registry.personal_resources():
        rows = 0
        if not resource.per_tenant:
            with transaction.atomic(using=replicas.read_alias()):
                rows += writer.add(resource.name, resource.rows(user_id))
        else:
            for tenant_id, _name, _slug in tenants:
                with tenant_context(tenant_id), transaction.atomic(using=replicas.read_alias()):
                    rows += writer.add(resource.name, resource.rows(user_id), tenant_id=tenant_id)
        _advance(job, rows)
    return writer.finish(
        {
            "kind": "personal",
            "user_id": str(user_id),
            "tenants": [
                {"id": str(tenant_id), "name": name, "slug": slug}
                for tenant_id, name, slug in tenants
            ],
        }
    )


def _store(job: Job, archive: Archive) -> dict[str, Any]:
    name = storages["exports"].save(f"{job.tenant_id}/{job.pk}.tar.gz", File(archive.file))
    expires_at = timezone.now() + datetime.timedelta(seconds=settings.EXPORT_LINK_TTL_SECONDS)
    return {
        "archive": name,
        "expires_at": expires_at.isoformat(),
        "size": archive.size,
        "sha256": archive.sha256,
        "files": archive.manifest["files"],
    }


# --- the link ----------------------------------------------------------------------------------


def download_token(job: Job) -> str:
    return signing.dumps({"t": str(job.tenant_id), "j": str(job.pk)}, salt=_LINK_SALT)


def download_url(job: Job, request=None) -> str | None:
    """A succeeded export's signed link, absolute when `request` is given; None for any other
    job, and once its archive has been deleted."""
    if job.kind not in EXPORT_KINDS or job.status != Job.Status.SUCCEEDED:
        return None
    if not job.result.get("archive"):
        return None
    path = reverse("export-download", kwargs={"version": "v1", "token": download_token(job)})
    return request.build_absolute_uri(path) if request else path


class LinkRefused(Exception):
    """The link is not one of ours (404), or its archive has expired (410: `expired`)."""

    def __init__(self, *, expired: bool = False) -> None:
        super().__init__("expired" if expired else "unknown")
        self.expired = expired


def archive_for_link(token: str) -> tuple[Job, Any]:
    """The export job a download link names, and its archive opened for reading.

    Raises LinkRefused for a link that was not signed by us (tampered, truncated, for another
    purpose) or names no export, and for one whose archive has expired.
    """
    try:
        claims = signing.loads(token, salt=_LINK_SALT)
        tenant_id, job_id = uuid.UUID(claims["t"]), uuid.UUID(claims["j"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as error:
        raise LinkRefused() from error
    with tenant_context(tenant_id):
        job = Job.objects.filter(
            pk=job_id, kind__in=EXPORT_KINDS, status=Job.Status.SUCCEEDED
        ).first()
    if job is None:
        raise LinkRefused()
    expires_at = datetime.datetime.fromisoformat(job.result["expires_at"])
    if not job.result.get("archive") or expires_at <= timezone.now():
        raise LinkRefused(expired=True)
    try:
        return job, storages["exports"].open(job.result["archive"], "rb")
    except FileNotFoundError as error:
        raise LinkRefused(expired=True) from error


def download_filename(job: Job) -> str:
    stamp = job.finished_at.strftime("%Y%m%dT%H%M%SZ") if job.finished_at else "export"
    prefix = "tenant" if job.kind == TENANT_EXPORT.code else "personal"
    return f"{prefix}-export-{stamp}.tar.gz"


# --- expiry (beat) -----------------------------------------------------------------------------


def archives_delete_expired(*, now: datetime.datetime | None = None) -> int:
    """Delete the archives of every tenant whose link has expired; how many were deleted."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=settings.EXPORT_LINK_TTL_SECONDS)
    deleted = 0
    with operator_scope("deleting expired export archives"):
        expired = list(
            Job.objects.filter(
                kind__in=EXPORT_KINDS, status=Job.Status.SUCCEEDED, finished_at__lte=cutoff
            )
            .exclude(result__archive=None)
            .filter(result__has_key="archive")
            .values_list("pk", "result")
        )
        for job_id, result in expired:
            archive_delete(job_id=job_id, result=result)
            deleted += 1
    return deleted


def archive_delete(*, job_id: uuid.UUID, result: Mapping[str, Any]) -> None:
    """Delete a job's archive, and say so on the job (its link then answers 410)."""
    storages["exports"].delete(result["archive"])
    Job.objects.filter(pk=job_id).update(result={**result, "archive": None})
    log.info("export_archive_deleted", job_id=str(job_id))


def tenant_archives_delete(*, tenant_id: uuid.UUID) -> None:
    """Delete every archive of a tenant whose data is being purged (kernel/tasks.py)."""
    archives = (
        Job.objects.filter(tenant_id=tenant_id, kind__in=EXPORT_KINDS)
        .filter(result__has_key="archive")
        .exclude(result__archive=None)
        .values_list("pk", "result")
    )
    for job_id, result in archives:
        archive_delete(job_id=job_id, result=result)
