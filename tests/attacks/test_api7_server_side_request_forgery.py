"""OWASP API7:2023, server side request forgery, through webhook targets.

The full table of refused targets (schemes, credentials in URLs, loopback, private, link-local,
metadata, multicast, reserved, IPv6 and IPv4-mapped forms, integer and hex spellings of addresses)
is in tests/notifications/test_webhooks_api.py, on create and PATCH; DNS answers that change between
the check and the delivery are in tests/notifications/test_webhooks_delivery.py. This module adds
the attacks those leave out: the same representative targets through PUT and through an API key;
the IPv6 ranges that Python still counts as global (deprecated site-local `fec0::/10`,
documentation `3fff::/20`, a finding of the source review, docs/security.md); a private target
that reached the database anyway (an operator's edit, an old row) refused at delivery time without
a connection; and a receiver redirecting to the metadata address, which is never followed.
"""

import pytest
from rest_framework.test import APIClient

from kernel.context import tenant_context
from kernel.permissions import Perm
from tests.attacks.support import Tenancy, tenancy
from tests.fixtures.webhook_receiver import Answer, WebhookReceiver
from tests.helpers import API, error_fields, outcome
from tests.notifications.test_webhooks_api import PUBLIC_URL, event_for
from tests.notifications.test_webhooks_delivery import attempt
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("public_webhook_targets_only")]

WEBHOOKS = f"{API}/webhooks/"
# One of each family of tests/notifications/test_webhooks_api.py's REFUSED_URLS.
REPRESENTATIVE = [
    "http://93.184.215.14/hooks",
    "https://user:password@93.184.215.14/",
    "https://127.0.0.1:8443/hooks",
    "https://localhost/",
    "https://10.1.2.3/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[fd00:ec2::254]/",
    "https://0x7f000001/",
]


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Hooks")


def stored_url(endpoint_id) -> str:
    with outcome():
        return WebhookEndpoint.objects.get(pk=endpoint_id).url


@pytest.mark.parametrize(
    "url",
    [
        "https://[fec0::1]/hooks",
        "https://[feff:ffff::1]/",
        "https://[3fff::1]/hooks",
        "https://[3fff:fff:ffff::1]/",
        "https://[::ffff:0:0]/",
    ],
)
def test_site_local_and_documentation_ipv6_targets_are_refused(own, url):
    response = own.client.post(WEBHOOKS, {"url": url, "topics": ["*"]}, format="json")

    assert response.status_code == 400, response.content
    assert error_fields(response) == {"url"}
    assert own.client.get(WEBHOOKS).json()["results"] == []


@pytest.mark.parametrize("url", REPRESENTATIVE)
def test_a_put_cannot_point_an_endpoint_inward(own, url):
    created = own.client.post(WEBHOOKS, {"url": PUBLIC_URL, "topics": ["*"]}, format="json")
    endpoint_id = created.json()["id"]

    response = own.client.put(
        f"{WEBHOOKS}{endpoint_id}/", {"url": url, "topics": ["*"]}, format="json"
    )

    assert error_fields(response) == {"url"}
    assert stored_url(endpoint_id) == PUBLIC_URL


@pytest.mark.parametrize("url", REPRESENTATIVE)
def test_an_api_key_cannot_create_an_inward_endpoint(own, url):
    # The key may read what its endpoints would send (catalog events, the audit log): only the
    # URL is wrong.
    permissions = [Perm.WEBHOOKS_MANAGE, Perm.CATALOG_READ, Perm.AUDIT_READ]
    key = own.client.post(
        f"{API}/api-keys/", {"name": "ci", "permissions": permissions}, format="json"
    ).json()["key"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")

    response = client.post(WEBHOOKS, {"url": url, "topics": ["*"]}, format="json")

    assert error_fields(response) == {"url"}


def test_a_stored_inward_target_is_refused_at_delivery_time(own):
    # Given an endpoint whose stored URL became the metadata address (past the API's check)
    with tenant_context(own.tenant.id):
        endpoint = services.webhook_endpoint_create(url=PUBLIC_URL, topics=["*"])
        (delivery,) = services.webhook_deliveries_create_for_event(event=event_for(own.tenant))
    with outcome():
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            url="https://169.254.169.254/latest/meta-data/"
        )

    # When the delivery is attempted
    result = attempt(own.tenant, delivery)

    # Then nothing is sent: the attempt fails on the target, with no status from anyone
    assert result.status == WebhookDelivery.Status.FAILED
    with outcome():
        row = WebhookDelivery.objects.get(pk=delivery.pk)
    assert row.last_status_code is None
    assert row.last_error.startswith("Target refused")


def test_a_redirect_to_the_metadata_address_is_not_followed(own, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True  # the receiver itself is on loopback
    with WebhookReceiver() as receiver:
        receiver.respond(
            lambda request: Answer(302, {"location": "http://169.254.169.254/latest/meta-data/"})
        )
        with tenant_context(own.tenant.id):
            services.webhook_endpoint_create(url=f"{receiver.url}/hook", topics=["*"])
            (delivery,) = services.webhook_deliveries_create_for_event(event=event_for(own.tenant))

        result = attempt(own.tenant, delivery)

        assert result.status == WebhookDelivery.Status.FAILED
        assert [request.path for request in receiver.requests] == ["/hook"]
