"""The catalog's output serializers write each row through a plain-attribute fast path
(PlainAttributesMixin): it must give exactly what DRF's own `Serializer.to_representation` gives,
for every field and every sparse selection, and the API's pages must be those rows."""

import itertools
from decimal import Decimal

import pytest
from django.test import override_settings
from rest_framework import serializers

from catalog.api.filters import model_fields_for
from catalog.api.serializers import (
    CategorySerializer,
    ProductDetailSerializer,
    ProductSerializer,
)
from catalog.models import Category, Product
from kernel.context import tenant_context
from tests.catalog_helpers import editor_client, make_category, make_product
from tests.factories import make_tenant
from tests.helpers import API

pytestmark = pytest.mark.django_db


def drf_path(serializer: serializers.Serializer, instance) -> dict:
    """What DRF itself makes of the row, past the mixin."""
    return serializers.Serializer.to_representation(serializer, instance)


@pytest.fixture
def catalog():
    tenant = make_tenant(name="Representation")
    parent = make_category(tenant, name="Électroménager")
    child = make_category(tenant, name="Kettles / 電気ケトル", parent=parent)
    made = [
        make_product(tenant, category=child, tags=["new", "eco"], attributes={"color": "red"}),
        make_product(tenant, price="0.10", stock=0, is_active=False, description=""),
        make_product(
            tenant,
            name="Théière « Ōkubo » 🫖",
            price=Decimal("99999.99"),
            tags=[],
            attributes={"nested": {"a": [1, 2.5, None]}, "empty": {}},
        ),
    ]
    with tenant_context(tenant.id):
        products = list(Product.objects.filter(pk__in=[p.pk for p in made]).order_by("sku"))
        categories = list(Category.objects.filter(tenant=tenant).order_by("name"))
    for product in products:
        product.related_items = [p for p in products if p.pk != product.pk]
    return tenant, products, categories


def selections(names: tuple[str, ...]):
    """Every field alone, every pair, and all of them."""
    yield None
    yield from ((name,) for name in names)
    yield from itertools.combinations(names, 2)


@pytest.mark.parametrize("time_zone", ["UTC", "Asia/Kolkata"])
def test_the_fast_path_writes_every_field_as_drf_does(catalog, time_zone):
    _, products, categories = catalog
    with override_settings(TIME_ZONE=time_zone):
        for serializer_class, rows in (
            (ProductSerializer, products),
            (ProductDetailSerializer, products),
            (CategorySerializer, categories),
        ):
            names = tuple(serializer_class.Meta.fields)
            for fields in selections(names):
                serializer = serializer_class(fields=fields)
                for row in rows:
                    assert serializer.to_representation(row) == drf_path(serializer, row), (
                        serializer_class.__name__,
                        fields,
                    )


def test_a_row_of_values_is_written_as_its_model_is(catalog):
    # The list reads `.values()` rows (no model built): each must give what DRF gives its model.
    tenant, products, _ = catalog
    names = tuple(ProductSerializer.Meta.fields)
    with tenant_context(tenant.id):
        for fields in selections(names):
            columns = model_fields_for(fields or names, ordering="-created_at")
            rows = {
                row["id"]: row
                for row in Product.objects.filter(pk__in=[p.pk for p in products]).values(*columns)
            }
            serializer = ProductSerializer(fields=fields)
            for product in products:
                assert serializer.to_representation(rows[product.pk]) == drf_path(
                    serializer, product
                ), fields


def test_a_field_that_is_not_a_plain_attribute_takes_drfs_own_path(catalog):
    tenant, products, _ = catalog

    class WithCategoryName(ProductSerializer):
        category_name = serializers.CharField(source="category.name", read_only=True)

        class Meta(ProductSerializer.Meta):
            fields = [*ProductSerializer.Meta.fields, "category_name"]
            read_only_fields = fields

    serializer = WithCategoryName()
    assert serializer._plain_readers is None
    with_category = next(p for p in products if p.category_id is not None)
    with tenant_context(tenant.id):
        row = serializer.to_representation(with_category)
    assert row["category_name"] == "Kettles / 電気ケトル"


def test_the_api_pages_are_drfs_rows(catalog):
    tenant, products, _ = catalog
    client = editor_client(tenant)

    page = client.get(f"{API}/products/?ordering=sku").json()["results"]
    detail = client.get(f"{API}/products/{products[0].pk}/").json()

    slow = ProductSerializer()
    assert page == [drf_path(slow, p) for p in products]
    assert {k: v for k, v in detail.items() if k != "related"} == drf_path(slow, products[0])


def test_times_are_written_in_utc_whatever_the_time_zone_setting(catalog, settings):
    tenant, products, _ = catalog
    settings.TIME_ZONE = "Asia/Kolkata"
    client = editor_client(tenant)

    row = client.get(f"{API}/products/{products[0].pk}/").json()

    assert row["created_at"].endswith("Z")
    assert row["updated_at"].endswith("Z")
