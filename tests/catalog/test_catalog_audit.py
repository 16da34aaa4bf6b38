"""Every catalog write leaves its audit event, in the same transaction, with the diff."""

import pytest

from tests.catalog_helpers import CATEGORIES, PRODUCTS, product_body, product_url
from tests.factories import make_tenant
from tests.helpers import client_for, owner_of

pytestmark = pytest.mark.django_db


def events(client, action: str) -> list[dict]:
    response = client.get("/api/v1/audit-events/", {"action": action})
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_product_writes_are_audited_with_their_diff():
    tenant = make_tenant(name="Audited shop", plan_code="enterprise")
    owner = owner_of(tenant)
    client = client_for(owner, tenant)

    created = client.post(PRODUCTS, product_body(sku="AUD-1", price="10.00"), format="json")
    assert created.status_code == 201, created.content
    product_id = created.json()["id"]
    updated = client.patch(product_url(product_id), {"price": "12.50"}, format="json")
    assert updated.status_code == 200
    assert client.delete(product_url(product_id)).status_code == 204

    (create_event,) = events(client, "catalog.product.created")
    assert create_event["target_id"] == product_id
    assert create_event["changes"]["sku"] == [None, "AUD-1"]
    assert create_event["actor_id"] == str(owner.id)
    assert create_event["request_id"] == created["X-Request-ID"]
    (update_event,) = events(client, "catalog.product.updated")
    assert update_event["changes"] == {"price": ["10.00", "12.50"]}
    (delete_event,) = events(client, "catalog.product.deleted")
    assert delete_event["changes"]["sku"] == ["AUD-1", None]


def test_category_writes_are_audited_and_a_refused_write_leaves_none():
    tenant = make_tenant(name="Audited tree", plan_code="enterprise")
    client = client_for(owner_of(tenant), tenant)
    created = client.post(CATEGORIES, {"name": "Shoes"}, format="json")
    assert created.status_code == 201, created.content
    duplicate = client.post(CATEGORIES, {"name": "Shoes"}, format="json")
    assert duplicate.status_code == 409

    assert len(events(client, "catalog.category.created")) == 1
    renamed = client.patch(f"{CATEGORIES}{created.json()['id']}/", {"name": "Boots"}, format="json")
    assert renamed.status_code == 200
    (update_event,) = events(client, "catalog.category.updated")
    assert update_event["changes"] == {"name": ["Shoes", "Boots"]}


def test_an_import_is_audited_once():
    from django.core.files.uploadedfile import SimpleUploadedFile

    tenant = make_tenant(name="Audited import", plan_code="enterprise")
    client = client_for(owner_of(tenant), tenant)
    upload = SimpleUploadedFile(
        "products.csv", b"sku,name,price\nIMP-1,One,1.00\nIMP-2,Two,2.00\n", "text/csv"
    )
    response = client.post(f"{PRODUCTS}import/", {"file": upload}, format="multipart")
    assert response.status_code == 202, response.content

    (event,) = events(client, "catalog.import.started")
    assert event["target_id"] == response.json()["id"]
    assert event["changes"]["rows"] == [None, 2]
