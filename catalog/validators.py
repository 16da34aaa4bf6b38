"""Bounds on catalog values, shared by the API's serializers, the admin's forms and the models.

They raise Django's ValidationError, which model forms show next to the field and DRF turns into
a field error of the 400 problem. Limits are deliberately small: a product row is read on every
list page, so an unbounded JSON document or description would slow every reader down.
"""

import json
from typing import Any

from django.core.exceptions import ValidationError

from catalog.currencies import CURRENCY_CODES

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


def validate_storable_text(value: str) -> None:
    """Text PostgreSQL can store: no NUL character and no lone UTF-16 surrogate.

    JSON allows both ("\\u0000", "\\ud800"), and PostgreSQL refuses both, with an error that
    would otherwise surface as a 500 instead of a field error.
    """
    if "\x00" in value:
        raise ValidationError("Null characters are not allowed.", code="null_characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError("Text must be valid Unicode.", code="invalid_unicode") from exc


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
    if not isinstance(value, dict):
        raise ValidationError("Attributes must be a JSON object.", code="invalid")
    _check_json_value(value, depth=1)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > ATTRIBUTES_MAX_BYTES:
        raise ValidationError(
            f"Attributes take at most {ATTRIBUTES_MAX_BYTES} bytes as JSON; these take {size}.",
            code="max_length",
        )


def _check_json_value(value: Any, *, depth: int) -> None:
    if isinstance(value, dict | list) and depth > ATTRIBUTES_MAX_DEPTH:
        raise ValidationError(
            f"Attributes nest at most {ATTRIBUTES_MAX_DEPTH} levels deep.", code="max_depth"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):  # only reachable from Python, JSON keys are strings
                raise ValidationError("Attribute names must be strings.", code="invalid")
            if len(key) > ATTRIBUTE_KEY_MAX_LENGTH:
                raise ValidationError(
                    f"Attribute names have at most {ATTRIBUTE_KEY_MAX_LENGTH} characters.",
                    code="max_length",
                )
            validate_storable_text(key)
            _check_json_value(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json_value(item, depth=depth + 1)
    elif isinstance(value, str):
        validate_storable_text(value)
    elif isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        # Python's JSON parser accepts NaN and Infinity; JSON and PostgreSQL do not.
        raise ValidationError("Numbers must be finite.", code="invalid")
    elif not isinstance(value, int | float | bool) and value is not None:
        raise ValidationError("Attributes must be plain JSON values.", code="invalid")
