"""OWASP API3:2023, broken object property level authorization.

Mass assignment: every create and update endpoint is sent, beside a valid body, every property a
client must never set (the tenant, ids, versions, built-in flags, staff flags, timestamps, hashes,
secrets, statuses, plans…) with an attacker's values; none of them reaches the stored row.

Excessive data exposure: every GET route of every tenant view (found by the URL walk of
tests/kernel/test_isolation_matrix.py, over a tenant holding one object of every model), every
create response, and the people's own endpoints are walked key by key: no key named like a password,
a hash, a secret, a token hash, a key hash or the internal `seq` appears, except the one-time secret
in the 201 of its creation (`key` of an API key, `secret` of a webhook endpoint).

The source review's case of this category (docs/security.md, finding 6): catalog data read
through notifications and webhook deliveries by holders of `notifications.read` or
`webhooks.manage` alone, in tests/notifications/test_notifications.py and
tests/notifications/test_webhooks_api.py.
"""

import datetime
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.models import ApiKey
from catalog.models import Category, Product
from kernel.permissions import Perm
from kernel.tenancy.models import AuditEvent, Invitation, Membership, Role, Tenant
from notifications.models import NotificationPreference
from tests.attacks.support import Tenancy, make_notification, role_id, tenancy
from tests.catalog_helpers import make_category, make_product, product_body
from tests.factories import DEFAULT_PASSWORD, make_member
from tests.helpers import API, ME, outcome
from tests.kernel import test_isolation_matrix as matrix
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db

FORGED_ID = "00000000-0000-4000-8000-00000000dead"
FORGED_TIME = "2000-01-01T00:00:00Z"
PUBLIC_WEBHOOK_URL = "https://93.184.215.14/hooks"
FORBIDDEN_KEY = re.compile(r"password|hash|secret|salt|^seq$|^pwd$", re.IGNORECASE)
# The one exception: an audit event's place in its tenant's hash chain (docs/audit.md). Public by
# design, so that a tenant can check its log with them; digests of the events, of no secret.
AUDIT_CHAIN_KEYS = frozenset({".hash", ".prev_hash", ".results[].hash", ".results[].prev_hash"})


def forged(other: Tenancy) -> dict[str, Any]:
    """Every property a client must not set, with values that would show if one were taken."""
    return {
        "tenant": str(other.tenant.id),
        "tenant_id": str(other.tenant.id),
        "id": FORGED_ID,
        "pk": FORGED_ID,
        "seq": 1,
        "version": 999,
        "is_builtin": True,
        "is_staff": True,
        "is_superuser": True,
        "created_at": FORGED_TIME,
        "updated_at": FORGED_TIME,
        "deleted_at": FORGED_TIME,
        "revoked_at": FORGED_TIME,
        "accepted_at": FORGED_TIME,
        "last_used_at": FORGED_TIME,
        "user": str(other.owner.pk),
        "user_id": str(other.owner.pk),
        "created_by": str(other.owner.pk),
        "invited_by": str(other.owner.pk),
        "slug": "hijacked",
        "status": "suspended",
        "plan": "free",
        "prefix": "AAAAAAAAAAAA",
        "key_hash": "0" * 64,
        "token_hash": "0" * 64,
        "secret": "whsec_AAAA",
        "circuit_state": "open",
    }


def assert_nothing_forged_stored(model, pk, *, own: Tenancy, other: Tenancy, written=()) -> None:
    """The stored row carries none of `forged()`'s values (fields the body may write aside)."""
    evil = forged(other)
    with outcome():
        row = model.objects.filter(pk=pk).values().first()
    assert row is not None
    if "tenant_id" in row:
        assert row["tenant_id"] == own.tenant.id
    assert str(row.get("id")) != FORGED_ID
    for name, value in row.items():
        key = name.removesuffix("_id") if name.endswith("_id") else name
        if key in written or (key not in evil and name not in evil):
            continue
        if isinstance(value, datetime.datetime):
            assert value.year != 2000, name
        else:
            assert str(value) not in {str(evil.get(name)), str(evil.get(key))}, name


@pytest.fixture
def own() -> Tenancy:
    return tenancy("Own")


@pytest.fixture
def other() -> Tenancy:
    return tenancy("Other")


def _post(own: Tenancy, other: Tenancy, url: str, body: dict) -> dict:
    response = own.client.post(f"{API}/{url}", {**forged(other), **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def _write(own: Tenancy, other: Tenancy, method: str, url: str, body: dict) -> dict:
    response = getattr(own.client, method)(f"{API}/{url}", {**forged(other), **body}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


# --- mass assignment ----------------------------------------------------------------------------


def test_products_take_no_forged_property(own, other):
    created = _post(own, other, "products/", product_body())
    product = make_product(own.tenant)
    put = _write(own, other, "put", f"products/{product.pk}/", product_body())
    patched = _write(own, other, "patch", f"products/{product.pk}/", {"name": "Renamed"})

    assert_nothing_forged_stored(Product, created["id"], own=own, other=other)
    assert_nothing_forged_stored(Product, product.pk, own=own, other=other)
    assert [created["version"], put["version"], patched["version"]] == [1, 2, 3]


def test_categories_take_no_forged_property(own, other):
    # The slug is a category's own to choose, so each body names one.
    created = _post(own, other, "categories/", {"name": "Shoes", "slug": "shoes"})
    category = make_category(own.tenant)
    _write(own, other, "put", f"categories/{category.pk}/", {"name": "Boots", "slug": "boots"})
    _write(own, other, "patch", f"categories/{category.pk}/", {"name": "Sandals", "slug": "s"})

    assert_nothing_forged_stored(Category, created["id"], own=own, other=other)
    assert_nothing_forged_stored(Category, category.pk, own=own, other=other)


def test_roles_take_no_forged_property(own, other):
    body = {"name": "auditor", "permissions": [Perm.AUDIT_READ]}
    created = _post(own, other, "roles/", body)
    _write(own, other, "put", f"roles/{created['id']}/", {**body, "name": "auditors"})
    _write(own, other, "patch", f"roles/{created['id']}/", {"name": "auditing"})

    assert_nothing_forged_stored(Role, created["id"], own=own, other=other)
    with outcome():
        assert Role.objects.get(pk=created["id"]).is_builtin is False


def test_members_take_no_forged_property(own, other):
    member = make_member(own.tenant, roles=("editor",))

    _write(own, other, "patch", f"members/{member.pk}/", {"roles": [role_id(own.tenant, "viewer")]})

    assert_nothing_forged_stored(Membership, member.pk, own=own, other=other)
    with outcome():
        assert Membership.objects.get(pk=member.pk).user_id == member.user_id


def test_invitations_take_no_forged_property(own, other):
    body = {"email": "new@example.com", "roles": [role_id(own.tenant, "viewer")]}
    created = _post(own, other, "invitations/", body)

    assert_nothing_forged_stored(Invitation, created["id"], own=own, other=other)
    assert created["status"] == "pending"


def test_api_keys_take_no_forged_property(own, other):
    created = _post(own, other, "api-keys/", {"name": "ci", "permissions": [Perm.CATALOG_READ]})

    assert_nothing_forged_stored(ApiKey, created["id"], own=own, other=other)
    assert created["prefix"] != "AAAAAAAAAAAA"


def test_webhooks_take_no_forged_property(own, other):
    body = {"url": PUBLIC_WEBHOOK_URL, "topics": ["*"]}
    created = _post(own, other, "webhooks/", body)
    _write(own, other, "put", f"webhooks/{created['id']}/", body)
    _write(own, other, "patch", f"webhooks/{created['id']}/", {"topics": ["catalog.*"]})

    assert_nothing_forged_stored(WebhookEndpoint, created["id"], own=own, other=other)
    assert created["secret"] != "whsec_AAAA"


def test_the_tenant_takes_no_forged_property(own, other):
    with outcome():
        before = Tenant.objects.filter(pk=own.tenant.pk).values().get()

    _write(own, other, "patch", "tenant/", {"name": "Renamed"})

    with outcome():
        after = Tenant.objects.filter(pk=own.tenant.pk).values().get()
    assert after["name"] == "Renamed"
    assert {k: v for k, v in after.items() if k not in ("name", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("name", "updated_at")
    }


def test_notification_preferences_are_the_callers_own(own, other):
    _write(own, other, "put", "notification-preferences/", {"topics": ["catalog.*"]})

    with outcome():
        (preference,) = NotificationPreference.objects.filter(tenant=own.tenant)
    assert preference.user_id == own.owner.pk
    with outcome():
        assert not NotificationPreference.objects.filter(user=other.owner).exists()


def test_signup_grants_no_staff_rights(other):
    body = {
        **forged(other),
        "email": f"{uuid.uuid4().hex[:10]}@example.com",
        "password": DEFAULT_PASSWORD,
        "tenant_name": f"Newco {uuid.uuid4().hex[:6]}",
    }

    response = APIClient().post(f"{API}/auth/signup/", body, format="json")

    assert response.status_code == 201, response.content
    user = get_user_model().objects.get(email=body["email"])
    assert (user.is_staff, user.is_superuser) == (False, False)
    assert response.json()["tenant"]["id"] != str(other.tenant.id)
    assert response.json()["tenant"]["slug"] != "hijacked"


# --- excessive data exposure -------------------------------------------------------------------


def keys_of(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield f"{path}.{key}"
            yield from keys_of(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item, f"{path}[]")


def exposed(body: Any, *, allowed: frozenset[str] = frozenset()) -> list[str]:
    return [
        path
        for path in keys_of(body)
        if FORBIDDEN_KEY.search(path.rsplit(".", 1)[-1]) and path not in allowed
    ]


GET_ROUTES = [route for route in matrix.ROUTES if route.method == "get"]


@pytest.mark.parametrize("route", GET_ROUTES, ids=lambda route: route.id)
def test_no_read_exposes_a_hash_secret_or_internal_field(route, own):
    # Given a tenant with one object of every kind the route reads (and so in its lists)
    world = matrix.Tenancy(own.tenant, own.owner, own.client)
    if route.parameters:
        url = matrix.objects_for(route, world)[0]
    else:
        url = route.template
        for model in {getattr(route.view, "model", None)} - {None}:
            matrix.FACTORIES[model](world, None)
    make_notification(own.tenant, own.owner)

    response = own.client.get(url)

    assert response.status_code == 200, response.content
    if response["Content-Type"].startswith("application/json"):
        chained = getattr(route.view, "model", None) is AuditEvent
        assert exposed(response.json(), allowed=AUDIT_CHAIN_KEYS if chained else frozenset()) == []


def test_create_responses_show_only_their_one_time_secret(own):
    key = own.client.post(
        f"{API}/api-keys/", {"name": "ci", "permissions": [Perm.CATALOG_READ]}, format="json"
    )
    hook = own.client.post(
        f"{API}/webhooks/", {"url": PUBLIC_WEBHOOK_URL, "topics": ["*"]}, format="json"
    )
    role = own.client.post(
        f"{API}/roles/", {"name": "r", "permissions": [Perm.AUDIT_READ]}, format="json"
    )
    invitation = own.client.post(
        f"{API}/invitations/",
        {"email": "x@example.com", "roles": [role_id(own.tenant, "viewer")]},
        format="json",
    )

    assert "key" in key.json()
    assert exposed(key.json()) == []
    assert exposed(hook.json(), allowed=frozenset({".secret"})) == []
    assert exposed(role.json()) == []
    assert exposed(invitation.json()) == []
    assert "token" not in invitation.json()


def test_the_peoples_own_endpoints_expose_no_hash_or_password(own):
    tokens = APIClient().post(
        f"{API}/auth/signup/",
        {
            "email": f"{uuid.uuid4().hex[:10]}@example.com",
            "password": DEFAULT_PASSWORD,
            "tenant_name": "Exposure",
        },
        format="json",
    )

    me = own.client.get(ME)

    assert exposed(tokens.json()) == []
    assert exposed(me.json()) == []
    assert DEFAULT_PASSWORD not in tokens.content.decode() + me.content.decode()
