"""Webhook delivery attempts on /metrics by outcome, so that dead letters rising across the
platform is an alert (deploy/prometheus/rules/alerts.yml, TenantapiWebhookDeadLettersRising)."""

import datetime
import re
import uuid

import pytest

from kernel.context import tenant_context
from kernel.events.bus import Event
from tests.factories import make_tenant
from tests.fixtures.webhook_receiver import WebhookReceiver
from webhooks import delivery, services

ATTEMPTS = "tenantapi_webhook_delivery_attempts_total"


def attempts_by_outcome(client) -> dict[str, float]:
    text = client.get("/metrics").content.decode()
    pattern = rf'^{ATTEMPTS}\{{outcome="(\w+)"\}} (\S+)$'
    return {outcome: float(value) for outcome, value in re.findall(pattern, text, re.MULTILINE)}


def an_event(tenant) -> Event:
    return Event(
        id=uuid.uuid4().hex,
        topic="catalog.product.updated",
        data={"id": str(uuid.uuid4()), "changed": ["price"]},
        tenant_id=str(tenant.id),
        actor={"user_id": None, "api_key_id": None},
        request_id=None,
        occurred_at=datetime.datetime.now(tz=datetime.UTC).isoformat(),
    )


@pytest.mark.django_db
def test_each_attempt_is_counted_by_outcome_dead_letters_included(client, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    tenant = make_tenant()
    before = attempts_by_outcome(client)
    with WebhookReceiver() as receiver, tenant_context(tenant.id):
        # Given two endpoints that get a delivery of the same event, one of them since disabled
        accepting = services.webhook_endpoint_create(url=f"{receiver.url}/a", topics=["*"])
        disabled = services.webhook_endpoint_create(url=f"{receiver.url}/b", topics=["*"])
        rows = services.webhook_deliveries_create_for_event(event=an_event(tenant))
        services.webhook_endpoint_update(endpoint=disabled, is_active=False)

        # When both are attempted
        outcomes = {str(row.endpoint_id): delivery.attempt(str(row.pk)).status for row in rows}

    # Then one attempt is counted as succeeded and one as dead
    assert outcomes == {str(accepting.pk): "succeeded", str(disabled.pk): "dead"}
    after = attempts_by_outcome(client)
    assert after["succeeded"] == before.get("succeeded", 0) + 1
    assert after["dead"] == before.get("dead", 0) + 1
