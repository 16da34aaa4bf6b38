"""W3C Trace Context without an exporter (kernel/tracing.py), and what spans may carry out
(kernel/telemetry.py). The exporting processes are tested in tests/system/test_tracing.py."""

import re
import uuid

import pytest
from django.db import transaction
from django.utils import timezone
from opentelemetry.trace import format_trace_id, get_current_span

from kernel.events import Event, subscribe, unsubscribe
from kernel.events.outbox import outbox_event_store, outbox_relay
from kernel.models import OutboxEvent
from kernel.telemetry import clean_attribute, configured
from kernel.tracing import enter_trace, leave_trace, trace_carrier
from tests.fixtures.logs import captured_logs
from tests.helpers import outcome

TRACE_RESPONSE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def parsed(response) -> tuple[str, str, int]:
    match = TRACE_RESPONSE.fullmatch(response["traceresponse"])
    assert match, response["traceresponse"]
    return match.group(1), match.group(2), int(match.group(3), 16)


@pytest.mark.django_db
def test_every_answer_names_its_trace_and_continues_a_valid_traceparent(client):
    caller_trace, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with captured_logs() as logs:
        continued = client.get(
            "/healthz",
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01", "X-Request-ID": "a"},
        )
        invalid = client.get(
            "/healthz", headers={"traceparent": f"01-{caller_trace}-zz-01", "X-Request-ID": "b"}
        )
        missing = client.get("/api/v1/no-such-thing/", headers={"X-Request-ID": "c"})

    trace_id, span_id, flags = parsed(continued)
    assert trace_id == caller_trace
    assert span_id != caller_span
    assert flags & 1 == 0  # nothing was recorded here
    assert invalid.status_code == 200
    assert parsed(invalid)[0] != caller_trace
    assert missing.status_code == 404
    assert parsed(missing)[0] not in {caller_trace, parsed(invalid)[0]}
    for request_id, response in (("a", continued), ("b", invalid), ("c", missing)):
        (line,) = logs.find(request_id=request_id, event="request")
        assert (line["trace_id"], line["span_id"]) == parsed(response)[:2]


def test_the_trace_context_of_a_request_is_carried_as_w3c_fields():
    caller_trace = uuid.uuid4().hex
    assert trace_carrier() == {}
    token = enter_trace({"traceparent": f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-01"})
    try:
        carrier = trace_carrier()
    finally:
        leave_trace(token)
    assert carrier["traceparent"].startswith(f"00-{caller_trace}-")


@pytest.mark.django_db(transaction=True)
def test_the_outbox_row_keeps_the_trace_and_the_relay_sends_in_it(tenant, settings):
    """A published event stores its request's trace; the relay, sending it later, runs its
    handlers in that trace, not in the relay's own."""
    settings.OUTBOX_RELAY_DELAY_SECONDS = 0
    caller_trace = uuid.uuid4().hex
    seen: list[str] = []

    def handler(event) -> None:
        seen.append(format_trace_id(get_current_span().get_span_context().trace_id))

    event = Event(
        id=uuid.uuid4().hex,
        topic="catalog.product.updated",
        data={"id": "x"},
        tenant_id=str(tenant.id),
        actor={"user_id": None, "api_key_id": None},
        request_id=None,
        occurred_at=timezone.now().isoformat(),
    )
    token = enter_trace({"traceparent": f"00-{caller_trace}-{uuid.uuid4().hex[:16]}-01"})
    try:
        # Stored as publish() stores it; its fast-path send never made, as when the broker
        # refused it.
        with transaction.atomic():
            outbox_event_store(event)
    finally:
        leave_trace(token)
    with outcome():
        row = OutboxEvent.objects.get(pk=uuid.UUID(event.id))
    assert row.trace_context["traceparent"].startswith(f"00-{caller_trace}-")

    subscribe("catalog.product.updated", handler)
    try:
        assert outbox_relay() == 1
    finally:
        unsubscribe("catalog.product.updated", handler)
    assert seen == [caller_trace]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "http.url",
            "http://127.0.0.1/ws/v1/notifications/?token=abc",
            "http://127.0.0.1/ws/v1/notifications/",
        ),
        ("url.full", "https://user:pw@hooks.example/in?sig=1", "https://hooks.example/in"),
        ("http.target", "/accept-invitation?token=abc", "/accept-invitation"),
        ("exception.message", "Bearer abc.def.ghi refused", "Bearer [REDACTED] refused"),
        ("exception.message", "no user ann@example.com", "no user [REDACTED]"),
        ("db.statement", "SELECT 1 WHERE id = %s", "SELECT 1 WHERE id = %s"),
        ("http.status_code", 200, 200),
    ],
)
def test_what_leaves_in_a_span_is_cleaned(key, value, expected):
    assert clean_attribute(key, value) == expected


def test_tracing_is_configured_by_the_standard_variables_only():
    assert not configured({})
    assert configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not configured({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not configured({**endpoint, "OTEL_TRACES_EXPORTER": "none"})
