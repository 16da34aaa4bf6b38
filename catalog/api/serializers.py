"""Input and output shapes of categories and products.

Input serializers name only what a client may write, so that `tenant`, `tenant_id`, `id`,
`version`, `created_at` and anything else in a body are ignored. Strings must be strings (a
number where a name belongs is a 400, not silently "42"), storable by PostgreSQL, and bounded.
Output serializers are read-only and take `fields=` for sparse responses (`?fields=`).
"""

from collections.abc import Iterable
from typing import Any

from django.utils.text import slugify
from rest_framework import serializers

from catalog import validators as v
from catalog.inputs import (  # noqa: F401  (the API's input shapes)
    CategoryField,
    CurrencyField,
    JSONObjectField,
    PriceField,
    ProductInputSerializer,
    TextField,
)
from catalog.models import PRODUCT_WRITABLE_FIELDS, Category, Product


class SparseFieldsMixin:
    """`fields=[...]` keeps only those fields, in the serializer's own order."""

    def __init__(self, *args: Any, fields: Iterable[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if fields is not None:
            keep = set(fields)
            for name in list(self.fields):
                if name not in keep:
                    self.fields.pop(name)


# --- categories --------------------------------------------------------------------------------


class CategorySerializer(SparseFieldsMixin, serializers.ModelSerializer):
    parent = serializers.UUIDField(source="parent_id", allow_null=True, read_only=True)

    class Meta:
        model = Category
        fields = ["id", "name", "slug", "parent", "created_at", "updated_at"]
        read_only_fields = fields


class CategoryInputSerializer(serializers.Serializer):
    name = TextField(max_length=v.CATEGORY_NAME_MAX_LENGTH)
    slug = serializers.SlugField(
        max_length=v.CATEGORY_SLUG_MAX_LENGTH, required=False, trim_whitespace=False
    )
    parent = CategoryField(allow_null=True, required=False, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A slug derived from the name when none is given, on create and PUT alike; PATCH keeps
        # the slug it has unless a new one is sent.
        if "slug" not in attrs and not self.partial:
            slug = slugify(attrs["name"])[: v.CATEGORY_SLUG_MAX_LENGTH].strip("-")
            if not slug:
                raise serializers.ValidationError(
                    {"slug": ["No slug can be derived from this name: give one."]}
                )
            attrs["slug"] = slug
        return attrs


# --- products ----------------------------------------------------------------------------------


class RelatedProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "sku", "name", "price", "currency"]
        read_only_fields = fields


class ProductSerializer(SparseFieldsMixin, serializers.ModelSerializer):
    category = serializers.UUIDField(source="category_id", allow_null=True, read_only=True)
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    attributes = serializers.DictField(read_only=True)

    class Meta:
        model = Product
        fields = ["id", *PRODUCT_WRITABLE_FIELDS, "version", "created_at", "updated_at"]
        read_only_fields = fields


class ProductDetailSerializer(ProductSerializer):
    """The product with `related`: set `product.related_items` before serializing."""

    related = RelatedProductSerializer(source="related_items", many=True, read_only=True)

    class Meta(ProductSerializer.Meta):
        fields = [*ProductSerializer.Meta.fields, "related"]
        read_only_fields = fields


PRODUCT_FIELDS = tuple(ProductSerializer.Meta.fields)
PRODUCT_DETAIL_FIELDS = tuple(ProductDetailSerializer.Meta.fields)
CATEGORY_FIELDS = tuple(CategorySerializer.Meta.fields)


class ProductImportSerializer(serializers.Serializer):
    """The multipart body of an import (documentation only: the view reads the file itself)."""

    file = serializers.FileField(
        help_text=(
            "A CSV file with a header row of product field names, or a JSON list of product "
            "objects (docs/catalog.md, Bulk import)."
        )
    )
