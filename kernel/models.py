"""The kernel's own tables: the transactional outbox of domain events (kernel.events), and the
jobs every feature starts and clients follow (kernel/jobs.py)."""

import uuid

from django.db import models

from kernel.tenancy.models import TenantOwnedModel


class OutboxEvent(TenantOwnedModel):
    """A published event whose handlers have not all run yet.

    Written by `kernel.events.publish()` in the transaction of the change it announces, so that it
    exists exactly when the change committed; deleted by `event_dispatch_task` once every handler
    ran. A row still here at `next_attempt_at` is sent again by the relay (`outbox_relay`, a beat
    job), both in kernel/events/outbox.py. Tenant-owned: row-level security keeps one tenant's
    pending events from another's, and the relay reads across tenants in the operator scope.
    """

    # The event's own id, so that the task finds its row without another column or index.
    id = models.UUIDField(primary_key=True, editable=False)
    topic = models.CharField(max_length=100)
    # Event.as_message(): what the task is sent, again, by the relay.
    message = models.JSONField()
    created_at = models.DateTimeField()
    # When the relay may send it (again): the fast path has had its chance until then.
    next_attempt_at = models.DateTimeField()
    # How many times the relay sent it.
    attempts = models.PositiveIntegerField(default=0)
    # The W3C trace context (`traceparent`, `tracestate`) of the request that published it: a
    # send by the relay, minutes later, still belongs to that request's trace (kernel/tracing.py).
    trace_context = models.JSONField(default=dict, blank=True)

    class Meta(TenantOwnedModel.Meta):
        ordering = ["next_attempt_at"]
        # The relay's one query: every tenant's rows due by now, oldest first.
        indexes = [models.Index(fields=["next_attempt_at"], name="outbox_event_due")]

    def __str__(self) -> str:
        return f"{self.topic} {self.id}"


class Job(TenantOwnedModel):
    """Background work a client started and follows at /api/v1/jobs/{id}/: a bulk import, an
    export of the tenant's data, a person's export of their own (kernel/jobs.py).

    Counts and errors are updated after each batch, in the batch's own transaction, so that what
    a reader sees always matches what is written. `created_by_*` hold plain ids rather than
    foreign keys: the job's history outlives the person or key that started it. The kinds are
    registered by the features that run them (`kernel.jobs.register_kind`), so `kind` is
    plain text here.

    The table keeps the name it had when the catalog's import was the only kind of job.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=50)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # [{"row": <1-based data row>, "field"?: ..., "message": ...}], the first ones only; how many
    # more there were is in errors_omitted.
    errors = models.JSONField(default=list, blank=True)
    errors_omitted = models.PositiveIntegerField(default=0)
    # Why the job itself failed (not a row: those are in `errors`); empty otherwise.
    detail = models.TextField(blank=True, default="")
    # What a succeeded job made, in the terms of its kind (an export: its archive); {} otherwise.
    result = models.JSONField(default=dict, blank=True)
    # Runs started: a task redelivered after a worker died starts over, up to a limit.
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by_user_id = models.UUIDField(null=True, blank=True)
    created_by_api_key_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        db_table = "catalog_job"
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["tenant", "created_at", "id"], name="job_created_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"


class JobFile(TenantOwnedModel):
    """The file a job works on, in a table of its own so that reading a job never loads it.

    Kept in the database rather than on a disk: every worker can read it, and it survives
    container restarts. Deleted when the job finishes.
    """

    job = models.OneToOneField(Job, on_delete=models.CASCADE, primary_key=True, related_name="+")
    name = models.CharField(max_length=255, blank=True, default="")
    format = models.CharField(max_length=10)
    content = models.BinaryField()

    class Meta(TenantOwnedModel.Meta):
        db_table = "catalog_jobfile"

    def __str__(self) -> str:
        return f"{self.name or 'file'} of job {self.job_id}"
