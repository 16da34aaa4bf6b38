"""The transactional outbox of domain events (kernel.events)."""

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
