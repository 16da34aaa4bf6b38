"""Shared steps of the catalog tests: URLs, clients per role, and data made through the services."""

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from catalog import services
from catalog.models import Category, Product
from kernel import events
from kernel.context import tenant_context
from tests.factories import make_member, make_role
from tests.helpers import client_for, member_with_role, outcome

PRODUCTS = "/api/v1/products/"
CATEGORIES = "/api/v1/categories/"
# A request whose only queries are authentication's: the baseline a cached read is held to.
NO_OP = "/api/v1/tenant/"

_seq = itertools.count(1)

PRODUCT_FIELDS = {
    "id",
    "sku",
    "name",
    "description",
    "price",
    "currency",
    "stock",
    "is_active",
    "category",
    "tags",
    "attributes",
    "version",
    "created_at",
    "updated_at",
}


def product_url(product_id) -> str:
    return f"{PRODUCTS}{product_id}/"


def category_url(category_id) -> str:
    return f"{CATEGORIES}{category_id}/"


def editor_client(tenant) -> APIClient:
    return client_for(member_with_role(tenant, "editor"), tenant)


def viewer_client(tenant) -> APIClient:
    return client_for(member_with_role(tenant, "viewer"), tenant)


def client_without_catalog_read(tenant) -> APIClient:
    """A member whose only role grants members.read: signed in, but no catalog at all."""
    role = make_role(tenant, permissions=["members.read"])
    membership = make_member(tenant, roles=(role.name,))
    return client_for(membership.user, tenant)


def product_body(**overrides: Any) -> dict[str, Any]:
    n = next(_seq)
    return {"sku": f"SKU-{n}", "name": f"Product {n}", "price": "10.00", "stock": 10, **overrides}


def make_category(tenant, *, name: str | None = None, parent: Category | None = None) -> Category:
    n = next(_seq)
    name = name or f"Category {n}"
    with tenant_context(tenant.id):
        return services.category_create(
            tenant=tenant,
            actor=None,
            data={"name": name, "slug": f"category-{n}", "parent": parent},
        )


def make_product(tenant, **overrides: Any) -> Product:
    """A product made through the service (so caches are invalidated as by any write)."""
    data = product_body(**overrides)
    data["price"] = Decimal(str(data["price"]))
    with tenant_context(tenant.id):
        return services.product_create(tenant=tenant, actor=None, data=data)


def stored_product(product_id) -> Product | None:
    with outcome():
        return Product.objects.filter(pk=product_id).first()


def product_count(tenant) -> int:
    with outcome():
        return Product.objects.filter(tenant=tenant).count()


def count_queries(client: APIClient, url: str, **headers: Any) -> tuple[int, Any]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, **headers)
    return len(queries), response


def baseline_queries(client: APIClient) -> int:
    """What a request costs that does nothing but authenticate (and, in a test, the savepoint
    pair of the request's transaction): the floor any request is measured against.

    Measured on the second call, once authentication's own cache is warm.
    """
    client.get(NO_OP)
    queries, response = count_queries(client, NO_OP)
    assert response.status_code == 200
    return queries


@contextmanager
def published_events(pattern: str = "catalog.*") -> Iterator[list[events.Event]]:
    """Collect the events the code under test publishes and that reach their handlers."""
    received: list[events.Event] = []
    handler = received.append
    events.subscribe(pattern, handler)
    try:
        yield received
    finally:
        events.unsubscribe(pattern, handler)
