"""Input and output shapes of categories and products.

Input serializers name only what a client may write, so that `tenant`, `tenant_id`, `id`,
`version`, `created_at` and anything else in a body are ignored. Strings must be strings (a
number where a name belongs is a 400, not silently "42"), storable by PostgreSQL, and bounded.
Output serializers are read-only and take `fields=` for sparse responses (`?fields=`).
"""

from collections.abc import Iterable
from typing import Any

from django.core.validators import RegexValidator
from django.utils.text import slugify
from rest_framework import serializers

from catalog import validators as v
from catalog.currencies import CURRENCY_CODES
from catalog.models import PRODUCT_WRITABLE_FIELDS, Category, Job, Product
from catalog.selectors import category_list
from kernel.fields import StrictBooleanField


class TextField(serializers.CharField):
    """A CharField that takes strings only, and only ones PostgreSQL can store."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.append(v.validate_storable_text)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class CurrencyField(TextField):
    """An ISO 4217 code the catalog takes (catalog/currencies.py), in any case; upper-cased."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data).upper()
        v.validate_currency(value)
        return value

    def schema_constraints(self) -> dict[str, Any]:
        # The codes, each letter in either case, as validation takes them.
        codes = "|".join(
            "".join(f"[{letter}{letter.lower()}]" for letter in code)
            for code in sorted(CURRENCY_CODES)
        )
        return {"pattern": f"^(?:{codes})$", "examples": ["EUR"]}


class PriceField(serializers.DecimalField):
    """A price: a decimal string (`"19.99"`) or a JSON number, at least 0; output as a string."""

    def schema_constraints(self) -> dict[str, Any]:
        # What validation takes: drf-spectacular's pattern lets "" and a minus sign through, and
        # its `type: string` leaves out the numbers the field takes too.
        whole, places = self.max_digits - self.decimal_places, self.decimal_places
        return {
            "type": ["string", "number"],
            "pattern": rf"^(?:\d{{1,{whole}}}(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}})$",
            "minimum": self.min_value,
            "exclusiveMaximum": 10**whole,
        }


class JSONObjectField(serializers.JSONField):
    def schema_constraints(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": True}


class CategoryField(serializers.PrimaryKeyRelatedField):
    """A category of the caller's tenant, by id. Another tenant's id simply does not exist."""

    default_error_messages = {
        "does_not_exist": 'Category "{pk_value}" does not exist.',
        "incorrect_type": "Expected a category id (a UUID), got {data_type}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("pk_field", serializers.UUIDField())
        super().__init__(**kwargs)

    def get_queryset(self):
        # Evaluated per request, under the caller's tenant: never at import time.
        return category_list()


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


class ProductInputSerializer(serializers.Serializer):
    """Create and PUT take every field (optional ones reset to their defaults); PATCH any."""

    sku = TextField(
        max_length=v.SKU_MAX_LENGTH,
        validators=[
            RegexValidator(
                v.SKU_PATTERN,
                "Letters, digits and . _ / - only, starting with a letter or digit.",
            )
        ],
    )
    name = TextField(max_length=v.NAME_MAX_LENGTH)
    description = TextField(
        max_length=v.DESCRIPTION_MAX_LENGTH,
        allow_blank=True,
        trim_whitespace=False,
        required=False,
        default="",
    )
    price = PriceField(
        max_digits=v.PRICE_MAX_DIGITS, decimal_places=v.PRICE_DECIMAL_PLACES, min_value=0
    )
    # Absent on create or PUT: the tenant's default currency (services.default_currency).
    currency = CurrencyField(
        min_length=3,
        max_length=3,
        required=False,
        help_text="An ISO 4217 code, in any case. Default: the tenant's currency.",
    )
    stock = serializers.IntegerField(min_value=0, max_value=v.STOCK_MAX, required=False, default=0)
    is_active = StrictBooleanField(required=False, default=True)
    category = CategoryField(allow_null=True, required=False, default=None)
    tags = serializers.ListField(
        child=TextField(max_length=v.TAG_MAX_LENGTH),
        max_length=v.TAGS_MAX_COUNT,
        required=False,
        default=list,
    )
    attributes = JSONObjectField(required=False, default=dict, validators=[v.validate_attributes])

    def validate_tags(self, value: list[str]) -> list[str]:
        return v.normalize_tags(value)


# --- jobs and bulk import ----------------------------------------------------------------------


class JobErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(read_only=True, help_text="The data row, from 1 (no header).")
    field = serializers.CharField(read_only=True, help_text="The field, when the error is one's.")
    message = serializers.CharField(read_only=True)


class JobSerializer(serializers.ModelSerializer):
    errors = JobErrorSerializer(many=True, read_only=True)
    errors_omitted = serializers.IntegerField(
        read_only=True, help_text="Errors beyond those listed (the list keeps the first 1,000)."
    )
    detail = serializers.CharField(
        read_only=True, help_text="Why the job itself failed; empty otherwise."
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "total",
            "processed",
            "succeeded",
            "failed",
            "errors",
            "errors_omitted",
            "detail",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class ProductImportSerializer(serializers.Serializer):
    """The multipart body of an import (documentation only: the view reads the file itself)."""

    file = serializers.FileField(
        help_text=(
            "A CSV file with a header row of product field names, or a JSON list of product "
            "objects (docs/catalog.md, Bulk import)."
        )
    )
