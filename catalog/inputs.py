"""What a client may write of a product, and the rules each field is held to: the API's create,
PUT and PATCH (catalog/api/serializers.py) and the bulk import (catalog/imports/) take products
through the same `ProductInputSerializer`, so both accept and refuse exactly the same values.

Strings must be strings (a number where a name belongs is a 400, not silently "42"), storable by
PostgreSQL, and bounded.
"""

from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

from catalog import validators as v
from catalog.currencies import CURRENCY_CODES
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
