"""Serializer fields shared by the apps' APIs."""

from typing import Any

from rest_framework import serializers


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean, and nothing else.

    DRF's `BooleanField` also takes `1`, `0`, `"yes"`, `"off"` and the like: a body the document
    (`type: boolean`) says is invalid would be accepted, and a client sending `"false"` from a
    form-encoded habit gets what it meant only by luck. This one answers any of them with the
    field's usual `invalid` error.
    """

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)
