"""Input and output shapes of categories and products.

Input serializers name only what a client may write, so that `tenant`, `tenant_id`, `id`,
`version`, `created_at` and anything else in a body are ignored. Strings must be strings (a
number where a name belongs is a 400, not silently "42"), storable by PostgreSQL, and bounded.
Output serializers are read-only and take `fields=` for sparse responses (`?fields=`).
"""

import datetime
import functools
from collections.abc import Iterable
from typing import Any

from django.utils.functional import cached_property
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


class PlainAttributesMixin:
    """A read-only serializer's rows, each field read with one `getattr` and written with its
    own `to_representation`: the same output as DRF's `Serializer.to_representation`, without
    its per-row, per-field generality (dotted sources, callables, `SkipField`, `PKOnlyObject`),
    which a page of 25 products paid for 375 times and which no field here uses. A field whose
    source is not a plain attribute sends the whole row through DRF's own path.
    tests/catalog/test_representation.py proves both paths give the same output."""

    @cached_property
    def _plain_readers(self) -> list[tuple[str, str, Any]] | None:
        readers = []
        for field in self._readable_fields:
            if len(field.source_attrs) != 1 or field.source == "*":
                return None
            readers.append((field.field_name, field.source_attrs[0], field.to_representation))
        return readers

    def to_representation(self, instance: Any) -> dict[str, Any]:
        readers = self._plain_readers
        if readers is None:
            return super().to_representation(instance)
        # A model instance, or a row of `.values()`, keyed by the same attribute names.
        if type(instance) is dict:
            read = instance.__getitem__
        else:
            read = functools.partial(getattr, instance)
        row = {}
        for name, attribute, represent in readers:
            value = read(attribute)
            row[name] = None if value is None else represent(value)
        return row


def list_rows(
    serializer_class: type[serializers.Serializer],
    instances: Iterable[Any],
    fields: tuple[str, ...] | None,
) -> list[dict[str, Any]]:
    """A page's rows. The serializer of a class and field selection is made once per process:
    DRF builds a ModelSerializer's fields anew for each instance (introspecting the model,
    deep-copying the declared ones), a tenth of a cold list's CPU, for an object that holds no
    state of the request once built."""
    writer = _row_writer(serializer_class, fields)
    return [writer.to_representation(instance) for instance in instances]


def one_row(
    serializer_class: type[serializers.Serializer],
    instance: Any,
    fields: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A detail's body, by the serializer `list_rows` keeps."""
    return _row_writer(serializer_class, fields).to_representation(instance)


@functools.lru_cache(maxsize=64)  # a client's ?fields= choices: bounded
def _row_writer(
    serializer_class: type[serializers.Serializer], fields: tuple[str, ...] | None
) -> serializers.Serializer:
    return serializer_class(fields=fields)


class UTCDateTimeField(serializers.DateTimeField):
    """RFC 3339 in UTC, as the API's conventions say, whatever TIME_ZONE says; and no lookup of
    the current time zone for each value written."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=datetime.UTC, read_only=True, **kwargs)


# --- categories --------------------------------------------------------------------------------


class CategorySerializer(PlainAttributesMixin, SparseFieldsMixin, serializers.ModelSerializer):
    parent = serializers.UUIDField(source="parent_id", allow_null=True, read_only=True)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

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


class ProductSerializer(PlainAttributesMixin, SparseFieldsMixin, serializers.ModelSerializer):
    category = serializers.UUIDField(source="category_id", allow_null=True, read_only=True)
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    attributes = serializers.DictField(read_only=True)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

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
