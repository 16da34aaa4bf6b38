"""One attempt at one webhook delivery, and what comes after it.

    attempt(delivery_id) → Outcome(status, retry_in)

1. A delivery that is gone (its endpoint was deleted) or finished is left alone.
2. The endpoint's circuit breaker is asked first (breaker.py). While it is open nothing is sent:
   the delivery waits, `retry_in` says until when, and its attempts are not used up.
3. The attempt is claimed on the row (attempts + 1) before anything is sent, so that an attempt
   cut short by a dying worker still counts, and two copies of the same task message cannot
   both send the same attempt.
4. The target is resolved and checked again (kernel/outbound.py) and the POST goes to the
   checked address, signed (signing.py), with connect and read timeouts, following no redirect.
   Only the status code of the answer is looked at; the body is never read.
5. 2xx: succeeded. Anything else (a 3xx included), a timeout or a refused target: failed, to be
   retried after an exponential backoff with full jitter, or dead after WEBHOOK_MAX_ATTEMPTS.

The caller (tasks.webhook_deliver_task) reschedules itself when `retry_in` is set.
"""

import datetime
import random
import time
from dataclasses import dataclass

import httpx
import structlog
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from kernel import outbound
from webhooks import breaker, selectors, signing
from webhooks.metrics import DELIVERY_ATTEMPTS
from webhooks.models import WebhookDelivery, WebhookEndpoint

log = structlog.get_logger(__name__)

USER_AGENT = "tenantapi-webhooks/1"
Status = WebhookDelivery.Status


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    # Seconds until the delivery should be attempted again; None when nothing is scheduled.
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Response:
    ok: bool
    status_code: int | None
    note: str


# --- the schedule ------------------------------------------------------------------------------


def backoff_ceiling(attempts: int) -> float:
    """The longest wait after the `attempts`-th failure: base * 2^(attempts-1), capped."""
    base = float(settings.WEBHOOK_RETRY_BASE_DELAY)
    return min(float(settings.WEBHOOK_RETRY_MAX_DELAY), base * 2 ** max(attempts - 1, 0))


def jitter_fraction() -> float:
    # Spreading retries over time, not security.
    return random.random()  # noqa: S311


def backoff_countdown(attempts: int) -> float:
    """Full jitter: anywhere between 0 and the ceiling, so that the retries of many deliveries
    that failed together (a receiver that was down) do not come back together."""
    return jitter_fraction() * backoff_ceiling(attempts)


def breaker_countdown(retry_at: datetime.datetime) -> float:
    """Until the breaker may let a probe through, plus a little jitter for the same reason."""
    remaining = max((retry_at - timezone.now()).total_seconds(), 0.0)
    return remaining + jitter_fraction() * 0.1 * float(settings.WEBHOOK_BREAKER_RESET_SECONDS)


# --- one attempt -------------------------------------------------------------------------------


def attempt(delivery_id: str, *, skip_breaker: bool = False) -> Outcome:
    delivery = selectors.webhook_delivery_for_attempt(delivery_id=delivery_id)
    if delivery is None:
        return Outcome(status="gone")
    if delivery.is_final:
        return Outcome(status=delivery.status)
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        _finish(delivery, Status.DEAD, Response(False, None, "The endpoint is disabled."))
        return Outcome(status=Status.DEAD)

    probe = skip_breaker
    if not skip_breaker:
        permit = breaker.permit(endpoint.pk)
        if not permit.allowed:
            retry_at = permit.retry_at or timezone.now() + breaker.reset_period()
            WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=retry_at)
            log.info(
                "webhook_delivery_waits_for_breaker",
                delivery_id=str(delivery.pk),
                endpoint_id=str(endpoint.pk),
            )
            return Outcome(status=delivery.status, retry_in=breaker_countdown(retry_at))
        probe = permit.probe

    if not _claim(delivery):
        # Another copy of this task got there first and owns this attempt and what follows.
        return Outcome(status=delivery.status)

    response = post(endpoint, delivery)
    if response.ok:
        breaker.record_success(endpoint.pk)
        _finish(delivery, Status.SUCCEEDED, response)
        outcome = Outcome(status=Status.SUCCEEDED)
    else:
        breaker.record_failure(endpoint.pk)
        if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            _finish(delivery, Status.DEAD, response)
            outcome = Outcome(status=Status.DEAD)
        else:
            countdown = backoff_countdown(delivery.attempts)
            _finish(delivery, Status.FAILED, response, next_attempt_in=countdown)
            outcome = Outcome(status=Status.FAILED, retry_in=countdown)
    log.info(
        "webhook_delivery_attempted",
        delivery_id=str(delivery.pk),
        endpoint_id=str(endpoint.pk),
        attempt=delivery.attempts,
        probe=probe,
        status_code=response.status_code,
        outcome=outcome.status,
        retry_in=outcome.retry_in,
    )
    return outcome


def post(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> Response:
    """POST the delivery's body to the endpoint, signed; never follows a redirect."""
    try:
        target = outbound.resolve_target(
            endpoint.url, allow_private=selectors.private_targets_allowed()
        )
    except outbound.UnsafeTarget as exc:
        log.warning(
            "webhook_target_refused",
            delivery_id=str(delivery.pk),
            endpoint_id=str(endpoint.pk),
            reason=exc.detail,
        )
        return Response(False, None, _short(f"Target refused: {exc}"))
    body = delivery.payload.encode()
    headers = {
        # The name as the client wrote it, while the connection goes to the checked address.
        "host": target.host_header,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signing.signed_headers(
            secret=endpoint.secret,
            message_id=delivery.event_id,
            timestamp=int(time.time()),
            body=body,
        ),
    }
    timeout = httpx.Timeout(
        connect=settings.WEBHOOK_CONNECT_TIMEOUT,
        read=settings.WEBHOOK_READ_TIMEOUT,
        write=settings.WEBHOOK_READ_TIMEOUT,
        pool=settings.WEBHOOK_CONNECT_TIMEOUT,
    )
    # trust_env=False: an HTTP(S)_PROXY from the environment would resolve the name itself and
    # undo the address check.
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        note = "Connection failed."
        for address in target.addresses:
            request = client.build_request(
                "POST",
                target.url_for(address),
                content=body,
                headers=headers,
                # TLS: SNI and certificate verification for the name, not the address.
                extensions={"sni_hostname": target.host},
            )
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectTimeout:
                note = "Connection timed out."
                continue
            except httpx.ConnectError:
                note = "Connection failed."
                continue
            except httpx.TimeoutException:
                return Response(False, None, "Timed out waiting for the response.")
            except httpx.HTTPError as exc:
                return Response(False, None, f"HTTP error ({type(exc).__name__}).")
            # What the receiver wrote is not ours to keep, or to trust: only the status counts.
            response.close()
            return _judge(response.status_code)
    return Response(False, None, note)


def _judge(status_code: int) -> Response:
    if 200 <= status_code < 300:
        return Response(True, status_code, "")
    if 300 <= status_code < 400:
        return Response(False, status_code, f"Redirect not followed (HTTP {status_code}).")
    return Response(False, status_code, f"HTTP {status_code}.")


# --- the row -----------------------------------------------------------------------------------


def _claim(delivery: WebhookDelivery) -> bool:
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk,
        attempts=delivery.attempts,
        status__in=[Status.PENDING, Status.FAILED],
    ).update(attempts=delivery.attempts + 1, last_attempt_at=now)
    if claimed:
        delivery.attempts += 1
        delivery.last_attempt_at = now
    return bool(claimed)


def _finish(
    delivery: WebhookDelivery,
    status: str,
    response: Response,
    *,
    next_attempt_in: float | None = None,
) -> None:
    now = timezone.now()
    changes = {
        "status": status,
        "last_status_code": response.status_code,
        "last_error": _short(response.note),
        "next_attempt_at": (
            now + datetime.timedelta(seconds=next_attempt_in)
            if next_attempt_in is not None
            else None
        ),
    }
    if status == Status.SUCCEEDED:
        changes["delivered_at"] = now
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
    for name, value in changes.items():
        setattr(delivery, name, value)
    DELIVERY_ATTEMPTS.labels(outcome=status).inc()


def _short(note: str) -> str:
    limit = WebhookDelivery._meta.get_field("last_error").max_length
    return note if len(note) <= limit else note[: limit - 1] + "…"


# The name queued messages carry (and the webhooks queue's router reads): as it was when the task
# lived in webhooks/tasks.py.
@shared_task(
    name="notifications.webhooks.tasks.webhook_deliver_task",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def webhook_deliver_task(self, *, delivery_id: str, skip_breaker: bool = False) -> str:
    """One attempt at a delivery; reschedules itself while the delivery has attempts left.

    Acknowledged only once it has run: a worker that dies in the middle of a POST leaves the
    message to be delivered to another worker, which sends it again under the same webhook-id.
    The attempts are counted on the delivery row, not by Celery (`max_retries=None`), because
    waiting for an open circuit breaker is not an attempt.
    """
    outcome = attempt(delivery_id, skip_breaker=skip_breaker)
    # Inline (eager) runs, the embedded default without a broker, would retry at once with no
    # countdown and, against an open breaker, without end: they make one attempt, and the
    # delivery shows what happened.
    if outcome.retry_in is not None and not self.request.is_eager:
        raise self.retry(countdown=outcome.retry_in, kwargs={"delivery_id": delivery_id})
    return outcome.status
