"""A circuit breaker per webhook endpoint, kept on the endpoint's row.

    closed ──(WEBHOOK_BREAKER_FAILURE_THRESHOLD consecutive failures)──▶ open
    open ──(WEBHOOK_BREAKER_RESET_SECONDS pass)──▶ half-open: one attempt may probe
    probe succeeds ──▶ closed            probe fails ──▶ open again, for another reset period

While it is open no request goes to the endpoint: its deliveries wait, rescheduled for when it
may close, and waiting does not use up their attempts. Every worker reads the same row, and the
move from half-open to probing is one conditional UPDATE, so exactly one worker probes at a
time. The database rather than Redis: the state is then as durable as the deliveries it
governs, shown in the API (`circuit_state`), and needs no extra dependency.
"""

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Case, F, Value, When
from django.utils import timezone

from webhooks.models import WebhookEndpoint


@dataclass(frozen=True, slots=True)
class Permit:
    """May a request go to the endpoint now? If not, when to ask again."""

    allowed: bool
    probe: bool = False
    retry_at: datetime.datetime | None = None


def reset_period() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.WEBHOOK_BREAKER_RESET_SECONDS)


def permit(endpoint_id) -> Permit:
    """Ask before each attempt; when it says no, send nothing and wait until `retry_at`."""
    open_until = (
        WebhookEndpoint.objects.filter(pk=endpoint_id)
        .values_list("circuit_open_until", flat=True)
        .first()
    )
    if open_until is None:
        return Permit(allowed=True)
    now = timezone.now()
    if open_until > now:
        return Permit(allowed=False, retry_at=open_until)
    # Half-open. Claim the probe by moving the reset time on: of the workers that saw the same
    # `open_until`, one updates the row and probes; the others wait for the probe's outcome.
    claimed = WebhookEndpoint.objects.filter(pk=endpoint_id, circuit_open_until=open_until).update(
        circuit_open_until=now + reset_period()
    )
    if claimed:
        return Permit(allowed=True, probe=True)
    return Permit(allowed=False, retry_at=now + reset_period())


def record_success(endpoint_id) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        consecutive_failures=0, circuit_open_until=None
    )


def record_failure(endpoint_id) -> None:
    """One more consecutive failure; opens (or re-opens, after a probe) at the threshold."""
    threshold = settings.WEBHOOK_BREAKER_FAILURE_THRESHOLD
    # One statement: concurrent failures each count, and the one that reaches the threshold
    # opens the circuit without a read-modify-write race.
    WebhookEndpoint.objects.filter(pk=endpoint_id).update(
        consecutive_failures=F("consecutive_failures") + 1,
        circuit_open_until=Case(
            When(
                consecutive_failures__gte=threshold - 1,
                then=Value(timezone.now() + reset_period()),
            ),
            default=F("circuit_open_until"),
        ),
    )


def reset(endpoint_id) -> None:
    """Close the circuit: the endpoint was given a new URL or switched back on."""
    record_success(endpoint_id)
