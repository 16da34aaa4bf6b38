"""Bounds on values that clients choose, shared by the apps: text PostgreSQL can store, and JSON
objects small and shallow enough to be stored, cached and read on every request.

They raise Django's ValidationError, which model forms show next to the field and DRF turns into
a field error of the 400 problem.
"""

import json
from typing import Any

from django.core.exceptions import ValidationError


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


def validate_json_object(
    value: Any, *, what: str, names: str, max_bytes: int, max_depth: int, max_name_length: int
) -> None:
    """A JSON object at most `max_depth` levels deep (the top level counts as one), at most
    `max_bytes` as compact JSON, its names at most `max_name_length` characters. `what` and
    `names` name the value and its keys in the messages ("Attributes", "Attribute names")."""
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object.", code="invalid")
    _check_json_value(value, 1, what, names, max_depth, max_name_length)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise ValidationError(
            f"{what} take at most {max_bytes} bytes as JSON; these take {size}.",
            code="max_length",
        )


def _check_json_value(
    value: Any, depth: int, what: str, names: str, max_depth: int, max_name_length: int
) -> None:
    # Iterative: a document nested deeper than Python's recursion limit is refused, not a 500.
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list) and level > max_depth:
            raise ValidationError(f"{what} nest at most {max_depth} levels deep.", code="max_depth")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):  # only reachable from Python, JSON keys are strings
                    raise ValidationError(f"{names} must be strings.", code="invalid")
                if len(key) > max_name_length:
                    raise ValidationError(
                        f"{names} have at most {max_name_length} characters.", code="max_length"
                    )
                validate_storable_text(key)
                stack.append((child, level + 1))
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
        elif isinstance(item, str):
            validate_storable_text(item)
        elif isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
            # Python's JSON parser accepts NaN and Infinity; JSON and PostgreSQL do not.
            raise ValidationError("Numbers must be finite.", code="invalid")
        elif not isinstance(item, int | float | bool) and item is not None:
            raise ValidationError(f"{what} must be plain JSON values.", code="invalid")
