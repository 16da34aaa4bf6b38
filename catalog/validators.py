"""Bounds on catalog values, shared by the API's serializers, the admin's forms and the models
(the generic ones are kernel/validators.py).

They raise Django's ValidationError, which model forms show next to the field and DRF turns into
a field error of the 400 problem. Limits are deliberately small: a product row is read on every
list page, so an unbounded JSON document or description would slow every reader down.
"""

from typing import Any

from django.core.exceptions import ValidationError

from catalog.currencies import CURRENCY_CODES
from kernel.validators import validate_json_object, validate_storable_text

SKU_MAX_LENGTH = 64
# Letters, digits and a few separators: what barcodes, ERPs and CSV files carry without quoting.
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]*\Z"
NAME_MAX_LENGTH = 255
DESCRIPTION_MAX_LENGTH = 10_000
CATEGORY_NAME_MAX_LENGTH = 200
CATEGORY_SLUG_MAX_LENGTH = 100
TAG_MAX_LENGTH = 50
TAGS_MAX_COUNT = 20
ATTRIBUTES_MAX_BYTES = 16_384
# An object inside an object ... this many levels deep at most (the top level counts as one).
ATTRIBUTES_MAX_DEPTH = 5
ATTRIBUTE_KEY_MAX_LENGTH = 100
PRICE_MAX_DIGITS = 12
PRICE_DECIMAL_PLACES = 2
STOCK_MAX = 2_147_483_647  # PostgreSQL integer


def validate_currency(value: str) -> None:
    if value not in CURRENCY_CODES:
        raise ValidationError(
            f'"{value}" is not an ISO 4217 currency code.', code="invalid_currency"
        )


def validate_tags(value: Any) -> None:
    if not isinstance(value, list):
        raise ValidationError("Tags must be a list of strings.", code="invalid")
    if len(value) > TAGS_MAX_COUNT:
        raise ValidationError(f"At most {TAGS_MAX_COUNT} tags.", code="max_length")
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            raise ValidationError("Each tag must be a non-empty string.", code="invalid")
        if len(tag) > TAG_MAX_LENGTH:
            raise ValidationError(
                f"Each tag has at most {TAG_MAX_LENGTH} characters.", code="max_length"
            )
        validate_storable_text(tag)


def normalize_tags(tags: list[str]) -> list[str]:
    """Trimmed, in the order given, each once."""
    return list(dict.fromkeys(tag.strip() for tag in tags))


def validate_attributes(value: Any) -> None:
    validate_json_object(
        value,
        what="Attributes",
        names="Attribute names",
        max_bytes=ATTRIBUTES_MAX_BYTES,
        max_depth=ATTRIBUTES_MAX_DEPTH,
        max_name_length=ATTRIBUTE_KEY_MAX_LENGTH,
    )
